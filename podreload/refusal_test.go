package podreload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/podreload/internal/fakekube"
)

// The Role without `get pods/exec`: the WebSocket exec (a GET) is refused with
// 403, and the SPDY fallback (a POST, `create pods/exec`) reloads every pod.
// get pods/exec is optional; create is what matters.
func TestExecWithoutGetPodsExecFallsBackToSPDY(t *testing.T) {
	t.Parallel()
	n := testpeers.Nginx(t, testpeers.NginxOptions{})
	before := runningWorkers(t, n)
	srv := fakekube.Start(t, fakekube.Options{
		Deployment: newDeployment("certmgr", "web"),
		Pods:       []fakekube.Pod{nginxPod("web-0", n)},
	})
	srv.Forbid("get", "pods/exec")
	res, err := execReloader(t, srv, Config{}).Reload(context.Background())
	if err != nil {
		t.Fatalf("Reload without get pods/exec: %v (%+v)", err, res)
	}
	n.WaitWorkersReplaced(t, before)
	for _, e := range srv.Execs() {
		if e.Protocol != "spdy" {
			t.Errorf("exec %+v reached the pod over %s; the WebSocket GET should have been refused", e, e.Protocol)
		}
	}
	if reqs := srv.ExecRequests(); reqs["POST"] != 2 {
		t.Errorf("exec requests = %v; want the two commands over SPDY", reqs)
	}
}

// One pod whose WebSocket upgrade fails with a 400 (not a 403) goes on over
// SPDY; the other pods of the same reload keep using WebSocket.
func TestExecUpgradeFailureAffectsOnlyItsPod(t *testing.T) {
	t.Parallel()
	// The other pods' nginx -t waits until the odd pod's first command ran
	// (after its refused upgrade): a reload-wide switch to SPDY would then
	// show on their second command.
	oddRan := make(chan struct{})
	var once sync.Once
	odd := func(context.Context, []string, io.Writer, io.Writer) error {
		once.Do(func() { close(oddRan) })
		return nil
	}
	other := func(ctx context.Context, cmd []string, _, _ io.Writer) error {
		select {
		case <-oddRan:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	srv := fakekube.Start(t, fakekube.Options{
		Deployment: newDeployment("certmgr", "web"),
		Pods: []fakekube.Pod{
			{Name: "web-a-odd", RefuseWebSocket: true, Exec: odd},
			{Name: "web-b", Exec: other}, {Name: "web-c", Exec: other}, {Name: "web-d", Exec: other},
		},
	})
	res, err := execReloader(t, srv, Config{}).Reload(context.Background())
	if err != nil {
		t.Fatalf("Reload: %v (%+v)", err, res)
	}
	for _, e := range srv.Execs() {
		want := "websocket"
		if e.Pod == "web-a-odd" {
			want = "spdy"
		}
		if e.Protocol != want {
			t.Errorf("%s %q over %s, want %s", e.Pod, e.Command, e.Protocol, want)
		}
	}
}

// Deterministic failures are not retried: nginx -t refusing the configuration
// and a container the API server does not know (400) fail after one attempt,
// while the reload budget would allow three.
func TestExecDeterministicFailuresAreNotRetried(t *testing.T) {
	t.Parallel()
	srv := fakekube.Start(t, fakekube.Options{
		Deployment: newDeployment("certmgr", "web"),
		Pods: []fakekube.Pod{{Name: "web-0", Exec: func(_ context.Context, cmd []string, _, stderr io.Writer) error {
			if slices.Contains(cmd, "-t") {
				fmt.Fprintln(stderr, `nginx: [emerg] unknown directive "bogus"`)
				return &fakekube.ExitError{Code: 1}
			}
			return nil
		}}},
	})
	for _, tc := range []struct {
		desc, container, detail string
	}{
		{"nginx -t refuses the configuration", "proxy", `unknown directive "bogus"`},
		{"unknown container", "nosuch", "container nosuch is not valid"},
	} {
		res, err := execReloader(t, srv, Config{Container: tc.container, Retries: 2, RetryDelay: time.Millisecond}).
			Reload(context.Background())
		if err == nil || len(res.Pods) != 1 {
			t.Fatalf("%s: Reload = %+v, %v; want a failure", tc.desc, res, err)
		}
		p := res.Pods[0]
		if p.Outcome != OutcomeFailed || p.Attempts != 1 || !strings.Contains(p.Detail, tc.detail) {
			t.Errorf("%s: %s after %d attempts (%s); want failed after 1 with %q", tc.desc, p.Outcome, p.Attempts, p.Detail, tc.detail)
		}
	}
}

// An API server that accepts connections and never answers: the reload ends
// at APITimeout in exec mode (listing the pods) and in rollout mode (reading
// the Deployment), with an error that says so, instead of hanging the task.
func TestAPIServerThatNeverAnswers(t *testing.T) {
	t.Parallel()
	srv := fakekube.Start(t, fakekube.Options{Deployment: newDeployment("certmgr", "web"), NeverAnswer: true})
	const limit = 500 * time.Millisecond
	for _, mode := range []Mode{ModeExec, ModeRollout} {
		r, err := New(Config{Mode: mode, DeploymentName: "web", Kubeconfig: srv.Kubeconfig, Namespace: srv.Namespace, APITimeout: limit})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = r.Reload(context.Background())
		took := time.Since(start)
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not answer within 500ms") {
			t.Errorf("%s: Reload = %v; want the API timeout named", mode, err)
		}
		if took > 5*time.Second {
			t.Errorf("%s: Reload took %s with a %s API timeout", mode, took, limit)
		}
	}
	if srv.Stalled() < 2 {
		t.Errorf("the server saw %d requests; the test did not reach it", srv.Stalled())
	}
}
