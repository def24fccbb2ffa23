package podreload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/podreload/internal/fakekube"
	corev1 "k8s.io/api/core/v1"
)

// nginxPod is a pod whose nginx container is a real nginx of the test's own:
// the pod's `nginx -t` and `nginx -s reload` run against it.
func nginxPod(name string, n *testpeers.NginxPeer) fakekube.Pod {
	return fakekube.Pod{Name: name, Exec: fakekube.Command(n.Binary, n.Args()...)}
}

// execReloader builds a Reloader the way main does, from the fake API
// server's kubeconfig.
func execReloader(t *testing.T, srv *fakekube.Server, cfg Config) *Reloader {
	t.Helper()
	cfg.Mode = ModeExec
	cfg.DeploymentName = "web"
	cfg.Kubeconfig = srv.Kubeconfig
	cfg.Namespace = srv.Namespace
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustNotRun(t *testing.T, pod string) fakekube.ExecFunc {
	return func(context.Context, []string, io.Writer, io.Writer) error {
		t.Errorf("exec ran in %s, which should have been skipped", pod)
		return nil
	}
}

func TestExecReloadsNginxOnEveryReadyPod(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc     string
		spdyOnly bool
	}{
		{desc: "websocket through the api server's translator"},
		{desc: "spdy fallback when the server refuses websocket", spdyOnly: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			testExecReloadsEveryReadyPod(t, tc.spdyOnly)
		})
	}
}

func testExecReloadsEveryReadyPod(t *testing.T, spdyOnly bool) {
	nginxes := []*testpeers.NginxPeer{
		testpeers.Nginx(t, testpeers.NginxOptions{}),
		testpeers.Nginx(t, testpeers.NginxOptions{}),
		testpeers.Nginx(t, testpeers.NginxOptions{}),
	}
	srv := fakekube.Start(t, fakekube.Options{
		Namespace:  "shop",
		Deployment: newDeployment("shop", "web"),
		Pods: []fakekube.Pod{
			nginxPod("web-0", nginxes[0]),
			nginxPod("web-1", nginxes[1]),
			nginxPod("web-2", nginxes[2]),
			{Name: "web-3", Phase: corev1.PodPending, Exec: mustNotRun(t, "web-3")},
			{Name: "web-4", NotReady: true, Exec: mustNotRun(t, "web-4")},
			{Name: "web-5", Terminating: true, Exec: mustNotRun(t, "web-5")},
		},
		OtherPods: []fakekube.Pod{{Name: "worker-0", Exec: mustNotRun(t, "worker-0")}},
		SPDYOnly:  spdyOnly,
	})
	before := make([][]int, len(nginxes))
	for i, n := range nginxes {
		before[i] = runningWorkers(t, n)
	}

	r := execReloader(t, srv, Config{PodName: "web-1"})
	res, err := r.Reload(context.Background())
	if err != nil {
		t.Fatalf("Reload: %v\n%+v", err, res)
	}

	// Every nginx really reloaded: a new generation of workers replaced the old.
	for i, n := range nginxes {
		n.WaitWorkersReplaced(t, before[i])
	}
	wantOutcomes := map[string]Outcome{
		"web-0": OutcomeReloaded, "web-1": OutcomeReloaded, "web-2": OutcomeReloaded,
		"web-3": OutcomeSkipped, "web-4": OutcomeSkipped, "web-5": OutcomeSkipped,
	}
	if len(res.Pods) != len(wantOutcomes) {
		t.Fatalf("result has %d pods, want %d: %+v", len(res.Pods), len(wantOutcomes), res.Pods)
	}
	for _, p := range res.Pods {
		if p.Outcome != wantOutcomes[p.Pod] {
			t.Errorf("%s: outcome %s (%s), want %s", p.Pod, p.Outcome, p.Detail, wantOutcomes[p.Pod])
		}
		if p.Outcome == OutcomeReloaded && (p.Attempts != 1 || p.Detail != "") {
			t.Errorf("%s: attempts %d, detail %q", p.Pod, p.Attempts, p.Detail)
		}
		if p.Self != (p.Pod == "web-1") {
			t.Errorf("%s: self = %v", p.Pod, p.Self)
		}
	}
	if !slices.IsSortedFunc(res.Pods, func(a, b PodResult) int { return strings.Compare(a.Pod, b.Pod) }) {
		t.Error("results are not sorted by pod")
	}

	// What reached the pods: nginx -t then nginx -s reload, in the proxy
	// container, over WebSocket, or over SPDY when the server refused it.
	wantProtocol := "websocket"
	if spdyOnly {
		wantProtocol = "spdy"
	}
	perPod := map[string][]string{}
	for _, e := range srv.Execs() {
		if e.Container != "proxy" || e.Protocol != wantProtocol {
			t.Errorf("exec %+v: want container proxy over %s", e, wantProtocol)
		}
		perPod[e.Pod] = append(perPod[e.Pod], strings.Join(e.Command, " "))
	}
	for _, name := range []string{"web-0", "web-1", "web-2"} {
		if want := []string{"nginx -t", "nginx -s reload"}; !slices.Equal(perPod[name], want) {
			t.Errorf("%s ran %q, want %q", name, perPod[name], want)
		}
	}
	reqs := srv.ExecRequests()
	switch {
	case !spdyOnly && (reqs["GET"] != 6 || reqs["POST"] != 0):
		t.Errorf("exec requests by method = %v, want 6 GET (WebSocket) and no POST", reqs)
	case spdyOnly && (reqs["GET"] < 1 || reqs["GET"] > 3 || reqs["POST"] != 6):
		// WebSocket was tried first, and once refused, later execs of
		// the same reload went straight to SPDY.
		t.Errorf("exec requests by method = %v, want 1-3 GET (WebSocket) and 6 POST (SPDY)", reqs)
	}
}

func TestExecOutcomesForSlowFailingFlakyAndHangingPods(t *testing.T) {
	t.Parallel()
	okNginx := testpeers.Nginx(t, testpeers.NginxOptions{})
	slowNginx := testpeers.Nginx(t, testpeers.NginxOptions{})
	flakyNginx := testpeers.Nginx(t, testpeers.NginxOptions{})
	brokenNginx := testpeers.Nginx(t, testpeers.NginxOptions{})
	// Running, but its configuration on disk no longer passes nginx -t.
	if err := os.WriteFile(filepath.Join(brokenNginx.ConfDir, "custom-domains.conf"), []byte("server { listen 8443 ssl; bogus_directive on; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	slow := fakekube.Command(slowNginx.Binary, slowNginx.Args()...)
	var flakyCalls atomic.Int32
	flaky := fakekube.Command(flakyNginx.Binary, flakyNginx.Args()...)
	hung := make(chan struct{}, 1)
	srv := fakekube.Start(t, fakekube.Options{
		Deployment: newDeployment("certmgr", "web"),
		Pods: []fakekube.Pod{
			nginxPod("web-ok", okNginx),
			nginxPod("web-broken", brokenNginx),
			{Name: "web-slow", Exec: func(ctx context.Context, cmd []string, out, errw io.Writer) error {
				// A busy pod: each command takes a second before nginx runs.
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
					return ctx.Err()
				}
				return slow(ctx, cmd, out, errw)
			}},
			{Name: "web-flaky", Exec: func(ctx context.Context, cmd []string, out, errw io.Writer) error {
				// The first reload races a restarting master; nginx -t passes.
				if slices.Contains(cmd, "reload") && flakyCalls.Add(1) == 1 {
					fmt.Fprintln(errw, `nginx: [alert] kill(31, 1) failed (3: No such process)`)
					return &fakekube.ExitError{Code: 1}
				}
				return flaky(ctx, cmd, out, errw)
			}},
			{Name: "web-hung", Exec: func(ctx context.Context, _ []string, _, _ io.Writer) error {
				select {
				case hung <- struct{}{}:
				default:
				}
				<-ctx.Done() // a pod whose runtime never answers
				return ctx.Err()
			}},
		},
	})
	before := map[*testpeers.NginxPeer][]int{}
	for _, n := range []*testpeers.NginxPeer{okNginx, slowNginx, flakyNginx, brokenNginx} {
		before[n] = runningWorkers(t, n)
	}

	const podTimeout = 4 * time.Second
	r := execReloader(t, srv, Config{PodTimeout: podTimeout, Retries: 2, RetryDelay: 50 * time.Millisecond})
	start := time.Now()
	res, err := r.Reload(context.Background())
	elapsed := time.Since(start)

	// Pods run in parallel, each within its timeout: the whole fan-out is
	// bounded by one pod timeout plus scheduling slack, not a sum.
	if elapsed > podTimeout+3*time.Second {
		t.Errorf("reload took %s, want about the pod timeout %s", elapsed, podTimeout)
	}
	var inc *IncompleteError
	if !errors.As(err, &inc) {
		t.Fatalf("err = %v, want *IncompleteError", err)
	}
	for _, part := range []string{"2 of 5 pods", "web-broken failed", "web-hung timed_out"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q lacks %q", err, part)
		}
	}

	got := map[string]PodResult{}
	for _, p := range res.Pods {
		got[p.Pod] = p
	}
	check := func(pod string, outcome Outcome, attempts int, detail ...string) {
		t.Helper()
		p, ok := got[pod]
		if !ok {
			t.Errorf("%s missing from the result", pod)
			return
		}
		if p.Outcome != outcome || p.Attempts != attempts {
			t.Errorf("%s: %s after %d attempts (%s); want %s after %d", pod, p.Outcome, p.Attempts, p.Detail, outcome, attempts)
		}
		for _, d := range detail {
			if !strings.Contains(p.Detail, d) {
				t.Errorf("%s: detail %q lacks %q", pod, p.Detail, d)
			}
		}
	}
	check("web-ok", OutcomeReloaded, 1)
	check("web-slow", OutcomeReloaded, 1)
	check("web-flaky", OutcomeReloaded, 2)
	// nginx's own stderr reaches the operator, after one attempt: nginx -t
	// refusing the configuration on disk is not retried.
	check("web-broken", OutcomeFailed, 1, "nginx -t: exit status 1", `unknown directive "bogus_directive"`)
	check("web-hung", OutcomeTimedOut, 1, "per-pod timeout of 4s", "running nginx -t")
	if d := got["web-hung"].Duration; d < podTimeout || d > podTimeout+2*time.Second {
		t.Errorf("web-hung took %s, want about %s", d, podTimeout)
	}
	select {
	case <-hung:
	default:
		t.Error("the hanging pod's command never started")
	}

	for _, n := range []*testpeers.NginxPeer{okNginx, slowNginx, flakyNginx} {
		n.WaitWorkersReplaced(t, before[n])
	}
	// nginx -t failed on the broken pod, so it was never told to reload and
	// keeps serving with its old workers.
	if now := brokenNginx.WorkerPIDs(t); !slices.Equal(now, before[brokenNginx]) {
		t.Errorf("broken pod's workers changed from %v to %v: it was reloaded", before[brokenNginx], now)
	}
	for _, e := range srv.Execs() {
		if e.Pod == "web-broken" && slices.Contains(e.Command, "reload") {
			t.Errorf("nginx -s reload ran on web-broken after nginx -t failed")
		}
	}
}

func TestExecForbiddenNamesTheMissingPermission(t *testing.T) {
	t.Parallel()
	for _, spdyOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("spdyOnly=%v", spdyOnly), func(t *testing.T) {
			t.Parallel()
			testExecForbidden(t, spdyOnly)
		})
	}
}

func testExecForbidden(t *testing.T, spdyOnly bool) {
	srv := fakekube.Start(t, fakekube.Options{
		SPDYOnly:   spdyOnly,
		Namespace:  "shop",
		Deployment: newDeployment("shop", "web"),
		Pods: []fakekube.Pod{
			{Name: "web-0", Exec: mustNotRun(t, "web-0")},
			{Name: "web-1", Exec: mustNotRun(t, "web-1")},
		},
	})
	srv.Forbid("create", "pods/exec")

	r := execReloader(t, srv, Config{RetryDelay: time.Millisecond})
	res, err := r.Reload(context.Background())
	var pe *PermissionError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want *PermissionError", err)
	}
	if pe.Verb != "create" || pe.Resource != "pods/exec" || pe.Namespace != "shop" || pe.Manifest != ManifestExecRBAC {
		t.Errorf("PermissionError = %+v", pe)
	}
	for _, part := range []string{`may not create pods/exec in namespace "shop"`, "apply deploy/components/reload-exec/rbac.yaml", `system:serviceaccount:shop:certmgr`} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("message %q lacks %q", err, part)
		}
	}
	for _, p := range res.Pods {
		// A missing permission is not retried: it will not appear by itself.
		if p.Outcome != OutcomeFailed || p.Attempts != 1 || !strings.Contains(p.Detail, "may not create pods/exec") {
			t.Errorf("%+v", p)
		}
	}
}

func TestExecForbiddenListNamesListPods(t *testing.T) {
	t.Parallel()
	srv := fakekube.Start(t, fakekube.Options{
		Deployment: newDeployment("certmgr", "web"),
		Pods:       []fakekube.Pod{{Name: "web-0"}},
	})
	srv.Forbid("list", "pods")
	_, err := execReloader(t, srv, Config{}).Reload(context.Background())
	var pe *PermissionError
	if !errors.As(err, &pe) || pe.Verb != "list" || pe.Resource != "pods" || pe.Namespace != "certmgr" {
		t.Fatalf("err = %v, want a list-pods PermissionError", err)
	}
}

func TestExecKeepsToTheConcurrencyBound(t *testing.T) {
	t.Parallel()
	var inflight, peak atomic.Int32
	busy := func(ctx context.Context, _ []string, _, _ io.Writer) error {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		// A pod whose runtime takes a while to answer.
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
		return nil
	}
	var pods []fakekube.Pod
	for i := range 6 {
		pods = append(pods, fakekube.Pod{Name: fmt.Sprintf("web-%d", i), Exec: busy})
	}
	srv := fakekube.Start(t, fakekube.Options{Deployment: newDeployment("certmgr", "web"), Pods: pods})
	res, err := execReloader(t, srv, Config{Concurrency: 2}).Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := res.Count(OutcomeReloaded); n != 6 {
		t.Errorf("%d pods reloaded, want 6", n)
	}
	if p := peak.Load(); p != 2 {
		t.Errorf("at most %d pods were busy at once, want exactly the bound 2", p)
	}
}

// runningWorkers waits until nginx has forked its workers and returns them: a
// freshly started master has none for a moment.
func runningWorkers(t *testing.T, n *testpeers.NginxPeer) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if pids := n.WorkerPIDs(t); len(pids) > 0 {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx started no worker within 10s")
		}
		<-tick.C
	}
}
