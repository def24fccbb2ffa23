package worker_test

import (
	"context"
	"fmt"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
)

// pythonControl runs app.control.<call> with real Python Celery.
func pythonControl(t *testing.T, brokerURL, call string) {
	t.Helper()
	code := fmt.Sprintf("from celery import Celery\napp = Celery(broker=%q)\napp.control.%s\n", brokerURL, call)
	out, err := exec.Command(testpeers.Python, "-c", code).CombinedOutput()
	if err != nil {
		t.Fatalf("python app.control.%s: %v\n%s", call, err, out)
	}
}

// waitPing waits until the worker answers `celery inspect ping`: it is
// subscribed to the pidbox, so broadcasts reach it.
func waitPing(t *testing.T, s *setup) {
	t.Helper()
	code := fmt.Sprintf("from celery import Celery\nimport sys\nr = Celery(broker=%q).control.inspect(timeout=0.5).ping() or {}\nsys.exit(0 if %q in r else 1)\n", s.redis.URL, s.cfg.Hostname)
	testpeers.Until(t, 10*time.Second, "worker answers ping", func() bool {
		return exec.Command(testpeers.Python, "-c", code).Run() == nil
	})
}

// A revoke reaches the workers that are up; one started later, or this one
// restarted, still honours it: the ids are kept in Redis, with a bounded TTL.
func TestRevokeOutlivesRestartAndReachesNewReplicas(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.cfg.RevokeExpires = time.Hour
	var ran atomic.Int32
	s.mux.HandleFunc("tenant.tasks.revocable", func(ctx context.Context, task *worker.Task) error {
		ran.Add(1)
		return nil
	})
	first, err := worker.NewServer(s.cfg, s.mux)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The broadcast only reaches subscribed workers: wait for the first.
	waitPing(t, s)
	pythonControl(t, s.redis.URL, `revoke(["rv-1", "rv-2"])`)
	testpeers.Until(t, 10*time.Second, "revoked ids stored", func() bool {
		n, _ := redis.Int(s.redis.Do(t, "ZCARD", "certmgr.revoked"), nil)
		return n == 2
	})
	if ttl, _ := redis.Int64(s.redis.Do(t, "PTTL", "certmgr.revoked"), nil); ttl <= 0 || ttl > time.Hour.Milliseconds() {
		t.Errorf("revoked ids kept for %d ms, want a TTL of at most RevokeExpires (1h)", ttl)
	}
	if err := first.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A replica that never saw the broadcast.
	s.cfg.Hostname += "-replica"
	s.start(t)
	for _, id := range []string{"rv-1", "rv-2"} {
		s.redis.Do(t, "LPUSH", "certmgr", fixtureWith(t, "p2_send_task__db0__certmgr__0.json", func(env map[string]any) {
			h := env["headers"].(map[string]any)
			h["task"], h["id"] = "tenant.tasks.revocable", id
		}))
		_, cerr := s.celery.Get(t, id, 15*time.Second)
		if cerr == nil || cerr.State != "REVOKED" || cerr.Message != "revoked" {
			t.Fatalf("%s: got %+v, want REVOKED 'revoked'", id, cerr)
		}
	}
	if n := ran.Load(); n != 0 {
		t.Errorf("a revoked task ran %d times", n)
	}
}

// control.shutdown() makes Run return after a graceful stop, without a
// reply (as Celery's worker, which raises WorkerShutdown).
func TestRemoteShutdownStopsRun(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	srv, err := worker.NewServer(s.cfg, s.mux)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	waitPing(t, s)
	pythonControl(t, s.redis.URL, fmt.Sprintf("shutdown(destination=[%q])", s.cfg.Hostname))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after control.shutdown()")
	}
}

// control.enable_events / disable_events turn task events on and off on a
// worker started without them (-E), as on a Python worker.
func TestEnableDisableEventsAtRunTime(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.mux.HandleFunc("tenant.tasks.evented", func(context.Context, *worker.Task) error { return nil })
	events := subscribeEvents(t, s)
	s.start(t)
	// One producer: a task with events off, one after enable_events, one
	// after disable_events; each waited for, so its events (sent before its
	// result is stored) are out before the next command. A last
	// control.heartbeat (freq=5, the periodic ones say 2) marks the end.
	code := fmt.Sprintf(`
import sys, time
from celery import Celery
app = Celery(broker=%[1]q, backend=%[1]q)
node = %[2]q
deadline = time.time() + 30
while node not in (app.control.inspect(timeout=0.5).ping() or {}):
    if time.time() > deadline:
        sys.exit("worker never answered ping")
def run():
    r = app.send_task("tenant.tasks.evented", queue="certmgr")
    r.get(timeout=30)
    print(r.id)
run()
app.control.enable_events(destination=[node], reply=True, timeout=5)
run()
app.control.disable_events(destination=[node], reply=True, timeout=5)
run()
app.control.heartbeat(destination=[node], reply=True, timeout=5)
`, s.redis.URL, s.cfg.Hostname)
	out, err := exec.Command(testpeers.Python, "-c", code).CombinedOutput()
	if err != nil {
		t.Fatalf("producer: %v\n%s", err, out)
	}
	var ids [3]string
	if n, _ := fmt.Sscan(string(out), &ids[0], &ids[1], &ids[2]); n != 3 {
		t.Fatalf("producer printed %q", out)
	}
	evented := map[string]bool{}
	for done := false; !done; {
		select {
		case e := <-events:
			if id, ok := e["uuid"].(string); ok {
				evented[id] = true
			}
			done = e["type"] == "worker-heartbeat" && e["freq"] == float64(5) && e["hostname"] == s.cfg.Hostname
		case <-time.After(15 * time.Second):
			t.Fatal("no heartbeat after control.heartbeat()")
		}
	}
	if want := [3]bool{false, true, false}; [3]bool{evented[ids[0]], evented[ids[1]], evented[ids[2]]} != want {
		t.Errorf("task events sent (before enable, after enable, after disable) = %v, want %v",
			[3]bool{evented[ids[0]], evented[ids[1]], evented[ids[2]]}, want)
	}
}

// pool_grow and pool_shrink change how many tasks run at once, as
// `inspect stats` reports it.
func TestPoolGrowShrink(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.cfg.Concurrency = 2
	s.start(t)
	concurrency := func() int {
		code := fmt.Sprintf("from celery import Celery\nr = Celery(broker=%q).control.inspect(destination=[%q], timeout=2).stats() or {}\nprint(r.get(%q, {}).get('pool', {}).get('max-concurrency', -1))\n",
			s.redis.URL, s.cfg.Hostname, s.cfg.Hostname)
		out, err := exec.Command(testpeers.Python, "-c", code).CombinedOutput()
		if err != nil {
			t.Fatalf("inspect stats: %v\n%s", err, out)
		}
		var n int
		_, _ = fmt.Sscan(string(out), &n)
		return n
	}
	testpeers.Until(t, 10*time.Second, "stats answered", func() bool { return concurrency() == 2 })
	pythonControl(t, s.redis.URL, fmt.Sprintf("pool_grow(3, destination=[%q])", s.cfg.Hostname))
	testpeers.Until(t, 10*time.Second, "pool grown to 5", func() bool { return concurrency() == 5 })
	pythonControl(t, s.redis.URL, fmt.Sprintf("pool_shrink(10, destination=[%q])", s.cfg.Hostname))
	testpeers.Until(t, 10*time.Second, "pool shrunk to 1, never 0", func() bool { return concurrency() == 1 })
	id := s.celery.Send(t, testpeers.SendOptions{Task: worker.PingTask})
	if _, cerr := s.celery.Get(t, id, 30*time.Second); cerr != nil {
		t.Fatalf("the shrunk pool runs nothing: %v", cerr)
	}
}
