package podreload

import (
	"context"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/podreload/internal/fakekube"
)

// BenchmarkFanout measures one Reload in exec mode across 1, 10 and 50 pods.
// Every exec goes through the fake API server over the real protocol
// (WebSocket v5, translated to SPDY towards the "kubelet" by kube-apiserver's
// own translator), all in this process. What each simulated pod does:
//
//   - nginx: it has its own real nginx, and `nginx -t` and `nginx -s reload`
//     run on it. All those nginx processes share this machine's CPUs, unlike
//     replicas on separate nodes.
//   - instant: the command exits 0 at once: certmgr's own fan-out cost plus
//     the fake API server's.
//   - remote: the command answers after 100ms without using CPU, like a
//     container runtime on another node.
//
// bench/podreload/run.sh prints the table.
func BenchmarkFanout(b *testing.B) {
	for _, pod := range []string{"nginx", "instant", "remote"} {
		for _, concurrency := range []int{10, 50} {
			for _, pods := range []int{1, 10, 50} {
				b.Run(fmt.Sprintf("pod=%s/concurrency=%d/pods=%d", pod, concurrency, pods), func(b *testing.B) {
					benchFanout(b, pod, concurrency, pods)
				})
			}
		}
	}
}

func benchFanout(b *testing.B, kind string, concurrency, n int) {
	pods := make([]fakekube.Pod, n)
	for i := range pods {
		pods[i] = fakekube.Pod{Name: fmt.Sprintf("web-%02d", i)} // nil Exec: exit 0 at once
		switch kind {
		case "nginx":
			ng := testpeers.Nginx(b, testpeers.NginxOptions{})
			pods[i].Exec = fakekube.Command(ng.Binary, ng.Args()...)
		case "remote":
			pods[i].Exec = func(ctx context.Context, _ []string, _, _ io.Writer) error {
				select {
				case <-time.After(100 * time.Millisecond):
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
	}
	srv := fakekube.Start(b, fakekube.Options{Deployment: newDeployment("certmgr", "web"), Pods: pods})
	r, err := New(Config{
		Mode: ModeExec, DeploymentName: "web", Kubeconfig: srv.Kubeconfig, Namespace: srv.Namespace,
		Concurrency: concurrency,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	cpu0 := processCPU(b)
	for b.Loop() {
		res, err := r.Reload(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if got := res.Count(OutcomeReloaded); got != n {
			b.Fatalf("%d of %d pods reloaded", got, n)
		}
	}
	// CPU of this process (certmgr's client and the fake cluster), not of nginx.
	b.ReportMetric(float64((processCPU(b)-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
