package podreload

import (
	"context"
	"fmt"
	"testing"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/podreload/internal/fakekube"
)

// BenchmarkFanout measures one Reload in exec mode across 1, 10 and 50 pods.
// Every exec goes through the fake API server over the real streaming
// protocol (WebSocket refused, SPDY fallback, as against a kubelet without
// v5). With pod=nginx each simulated pod has its own real nginx, and its
// `nginx -t` and `nginx -s reload` run on it: all those nginx processes share
// this machine's CPUs, unlike real replicas on separate nodes. With
// pod=instant the command returns at once, which isolates certmgr's own
// fan-out cost (API calls, streams). bench/podreload/run.sh prints the table.
func BenchmarkFanout(b *testing.B) {
	for _, pod := range []string{"nginx", "instant"} {
		for _, concurrency := range []int{10, 50} {
			for _, pods := range []int{1, 10, 50} {
				b.Run(fmt.Sprintf("pod=%s/concurrency=%d/pods=%d", pod, concurrency, pods), func(b *testing.B) {
					benchFanout(b, pod == "nginx", concurrency, pods)
				})
			}
		}
	}
}

func benchFanout(b *testing.B, realNginx bool, concurrency, n int) {
	pods := make([]fakekube.Pod, n)
	for i := range pods {
		pods[i] = fakekube.Pod{Name: fmt.Sprintf("web-%02d", i)} // nil Exec: exit 0 at once
		if realNginx {
			ng := testpeers.Nginx(b, testpeers.NginxOptions{})
			pods[i].Exec = fakekube.Command(ng.Binary, ng.Args()...)
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
	for b.Loop() {
		res, err := r.Reload(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if got := res.Count(OutcomeReloaded); got != n {
			b.Fatalf("%d of %d pods reloaded", got, n)
		}
	}
}
