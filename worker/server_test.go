package worker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
	"github.com/midsummer/certmgr/worker/internal/celery"
)

type setup struct {
	redis  *testpeers.RedisPeer
	celery *testpeers.CeleryClient
	mux    *worker.ServeMux
	cfg    worker.Config
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	r := testpeers.Redis(t)
	mux := worker.NewServeMux()
	worker.RegisterBuiltins(mux)
	return &setup{
		redis:  r,
		celery: testpeers.Celery(t, r.URL),
		mux:    mux,
		cfg: worker.Config{
			BrokerURL:         r.URL,
			Hostname:          "certmgr@" + strings.ReplaceAll(t.Name(), "/", "_"),
			VisibilityTimeout: time.Hour,
			PollInterval:      100 * time.Millisecond,
			ShutdownGrace:     5 * time.Second,
			Logger:            zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
		},
	}
}

func (s *setup) start(t *testing.T) *worker.Server {
	t.Helper()
	srv, err := worker.NewServer(s.cfg, s.mux)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	return srv
}

func (s *setup) llen(t *testing.T, key string) int {
	n, _ := redis.Int(s.redis.Do(t, "LLEN", key), nil)
	return n
}

func (s *setup) hlen(t *testing.T, key string) int {
	n, _ := redis.Int(s.redis.Do(t, "HLEN", key), nil)
	return n
}

func TestPythonGetsGoResults(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.mux.HandleFunc("tenant.tasks.echo", func(ctx context.Context, task *worker.Task) error {
		var id int
		if err := task.Arg(0, &id); err != nil {
			return err
		}
		var force bool
		if _, err := task.Kwarg("force", &force); err != nil {
			return err
		}
		task.SetResult(map[string]any{"id": id, "force": force, "retries": task.Retries})
		return nil
	})
	s.start(t)
	for _, protocol := range []int{1, 2} {
		t.Run(fmt.Sprintf("protocol %d", protocol), func(t *testing.T) {
			id := s.celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.echo", Args: []any{42}, Kwargs: map[string]any{"force": true}, Protocol: protocol})
			res, cerr := s.celery.Get(t, id, 30*time.Second)
			if cerr != nil {
				t.Fatal(cerr)
			}
			if string(res) != `{"id": 42, "force": true, "retries": 0}` && !jsonEqual(res, `{"id":42,"force":true,"retries":0}`) {
				t.Errorf("result = %s", res)
			}
		})
	}
	id := s.celery.Send(t, testpeers.SendOptions{Task: worker.PingTask})
	res, cerr := s.celery.Get(t, id, 30*time.Second)
	if cerr != nil || !jsonEqual(res, `"pong"`) {
		t.Errorf("certmgr.ping = %s, %v", res, cerr)
	}
}

func jsonEqual(a json.RawMessage, b string) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

type dnsNotVerified struct{ domain string }

func (e *dnsNotVerified) Error() string   { return e.domain + " has no CNAME to custom.example.cloud" }
func (e *dnsNotVerified) ExcType() string { return "DNSNotVerified" }

func TestFailuresCarryExcType(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.mux.HandleFunc("tenant.tasks.verify", func(ctx context.Context, task *worker.Task) error {
		return fmt.Errorf("verify shop.example.com: %w", &dnsNotVerified{domain: "shop.example.com"})
	})
	s.mux.HandleFunc("tenant.tasks.panics", func(ctx context.Context, task *worker.Task) error {
		var m map[string]int
		//lint:ignore SA5000 the handler panics on purpose
		m["boom"]++ // nil map write
		return nil
	})
	s.mux.HandleFunc("tenant.tasks.bad_arg", func(ctx context.Context, task *worker.Task) error {
		var id int
		return task.Arg(0, &id)
	})
	s.start(t)
	tests := []struct {
		desc, task, excType, raised, msg string
	}{
		{desc: "typed error", task: "tenant.tasks.verify", excType: "DNSNotVerified", raised: "DNSNotVerified", msg: "shop.example.com has no CNAME"},
		{desc: "unknown task", task: "tenant.tasks.nope", excType: "NotRegistered", raised: "NotRegistered", msg: "tenant.tasks.nope"},
		{desc: "panic", task: "tenant.tasks.panics", excType: "PanicError", raised: "PanicError", msg: "assignment to entry in nil map"},
		{desc: "missing argument", task: "tenant.tasks.bad_arg", excType: "TypeError", raised: "TypeError", msg: "takes argument 1"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			id := s.celery.Send(t, testpeers.SendOptions{Task: tt.task})
			_, cerr := s.celery.Get(t, id, 30*time.Second)
			if cerr == nil {
				t.Fatal("no failure")
			}
			if cerr.State != "FAILURE" || cerr.ExcType != tt.excType || cerr.Raised != tt.raised || !strings.Contains(cerr.Message, tt.msg) {
				t.Errorf("got %+v", cerr)
			}
		})
	}
	testpeers.Until(t, 5*time.Second, "all acknowledged", func() bool { return s.hlen(t, "unacked") == 0 })
}

func TestRetryIsSeenAsRetryThenSuccess(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	var calls atomic.Int32
	s.mux.HandleFunc("tenant.tasks.flaky", func(ctx context.Context, task *worker.Task) error {
		if calls.Add(1) == 1 {
			return fmt.Errorf("%w: acme rate limited", worker.RetryAfter(300*time.Millisecond))
		}
		task.SetResult(task.Retries)
		return nil
	})
	s.start(t)

	// What AsyncResult listens to: the PUBLISHes on celery-task-meta-<id>.
	conn, err := redis.Dial("tcp", s.redis.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	psc := redis.PubSubConn{Conn: conn}
	if err := psc.PSubscribe(celery.ResultKeyPrefix + "*"); err != nil {
		t.Fatal(err)
	}
	states := make(chan celery.ResultMeta, 100)
	go func() {
		for {
			switch v := psc.Receive().(type) {
			case redis.Message:
				var m celery.ResultMeta
				_ = json.Unmarshal(v.Data, &m)
				states <- m
			case error:
				close(states)
				return
			}
		}
	}()
	id := s.celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.flaky"})
	res, cerr := s.celery.Get(t, id, 30*time.Second)
	if cerr != nil || string(res) != "1" {
		t.Fatalf("result = %s, %v", res, cerr)
	}
	var seen []string
	for len(seen) < 2 {
		// Pub/sub spans databases: other tests' results arrive here too.
		if m := <-states; m.TaskID == id {
			seen = append(seen, string(m.Status))
		}
	}
	if seen[0] != "RETRY" || seen[1] != "SUCCESS" {
		t.Errorf("states published = %v, want [RETRY SUCCESS]", seen)
	}
}

func TestMaxRetriesThenFailure(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.cfg.MaxRetries = 2
	var calls atomic.Int32
	s.mux.HandleFunc("tenant.tasks.always_later", func(ctx context.Context, task *worker.Task) error {
		calls.Add(1)
		return fmt.Errorf("%w: %w", worker.RetryAfter(10*time.Millisecond), worker.Fail("RateLimited", errors.New("too many certificates")))
	})
	s.start(t)
	id := s.celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.always_later"})
	_, cerr := s.celery.Get(t, id, 30*time.Second)
	if cerr == nil || cerr.State != "FAILURE" || cerr.ExcType != "RateLimited" {
		t.Fatalf("got %+v", cerr)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("ran %d times, want 3 (first run + 2 retries)", n)
	}
}

func TestCountdownHeldThenRun(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	ran := make(chan time.Time, 1)
	s.mux.HandleFunc("tenant.tasks.later", func(ctx context.Context, task *worker.Task) error {
		ran <- time.Now()
		return nil
	})
	s.start(t)
	sent := time.Now()
	id := s.celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.later", Countdown: 2})
	// While waiting for its eta the message is held in unacked, not lost.
	testpeers.Until(t, 10*time.Second, "message held in unacked", func() bool { return s.hlen(t, "unacked") == 1 })
	if _, cerr := s.celery.Get(t, id, 30*time.Second); cerr != nil {
		t.Fatal(cerr)
	}
	if at := <-ran; at.Sub(sent) < 1900*time.Millisecond {
		t.Errorf("ran %s after sending, before its countdown of 2s", at.Sub(sent))
	}
	testpeers.Until(t, 5*time.Second, "acknowledged", func() bool { return s.hlen(t, "unacked") == 0 })
}

func TestExpiredTaskIsRevoked(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	var ran atomic.Bool
	s.mux.HandleFunc("tenant.tasks.stale", func(ctx context.Context, task *worker.Task) error {
		ran.Store(true)
		return nil
	})
	id := s.celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.stale", Expires: 0.2})
	time.Sleep(300 * time.Millisecond) // let it expire before any worker runs; a wall-clock fact, not a race
	s.start(t)
	_, cerr := s.celery.Get(t, id, 30*time.Second)
	if cerr == nil || cerr.State != "REVOKED" {
		t.Fatalf("got %+v, want REVOKED", cerr)
	}
	if ran.Load() {
		t.Error("an expired task ran")
	}
}

func TestPriorityZeroServedFirst(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.cfg.Concurrency = 1
	var mu sync.Mutex
	var order []string
	s.mux.HandleFunc("tenant.tasks.order", func(ctx context.Context, task *worker.Task) error {
		var name string
		_ = task.Arg(0, &name)
		mu.Lock()
		order = append(order, name)
		mu.Unlock()
		return nil
	})
	nine, zero := 9, 0
	s.celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.order", Args: []any{"low"}, Priority: &nine})
	last := s.celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.order", Args: []any{"high"}, Priority: &zero})
	if s.llen(t, "certmgr\x06\x169") != 1 {
		t.Fatal("priority 9 message not on its kombu list")
	}
	s.start(t)
	s.celery.Get(t, last, 30*time.Second)
	testpeers.Until(t, 10*time.Second, "both ran", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 2 })
	if order[0] != "high" {
		t.Errorf("order = %v", order)
	}
}

func TestTimeLimitBecomesDeadline(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	locked := make(chan bool, 4)
	s.mux.HandleFunc("tenant.tasks.slow", func(ctx context.Context, task *worker.Task) error {
		locked <- true
		defer func() { locked <- false }() // the handler's locks are released before the result
		select {
		case <-ctx.Done():
			// A handler that would retry on any error: the limit still wins.
			return fmt.Errorf("%w: %w", worker.RetryAfter(time.Millisecond), ctx.Err())
		case <-time.After(20 * time.Second):
			return nil
		}
	})
	s.start(t)
	tests := []struct {
		id        string
		timelimit []any // [hard, soft] as Celery sends them
		excType   string
		message   string
	}{
		{id: "time-limit-hard", timelimit: []any{0.3, nil}, excType: "TimeLimitExceeded", message: "TimeLimitExceeded(0.3,)"},
		{id: "time-limit-soft", timelimit: []any{nil, 0.3}, excType: "SoftTimeLimitExceeded", message: "SoftTimeLimitExceeded()"},
	}
	for _, tt := range tests {
		raw := fixtureWith(t, "p2_send_task__db0__certmgr__0.json", func(env map[string]any) {
			h := env["headers"].(map[string]any)
			h["task"] = "tenant.tasks.slow"
			h["id"] = tt.id
			h["timelimit"] = tt.timelimit
		})
		s.redis.Do(t, "LPUSH", "certmgr", raw)
		_, cerr := s.celery.Get(t, tt.id, 15*time.Second)
		if cerr == nil || cerr.State != "FAILURE" || cerr.ExcType != tt.excType || cerr.Message != tt.message {
			t.Fatalf("%s: got %+v, want FAILURE %s %q", tt.id, cerr, tt.excType, tt.message)
		}
		if <-locked != true || <-locked != false || len(locked) != 0 {
			t.Fatalf("%s: handler ran more than once (retried), or its deferred unlock did not run", tt.id)
		}
	}
}

func fixtureWith(t *testing.T, name string, edit func(map[string]any)) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("internal", "celery", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]any
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	edit(env)
	out, _ := json.Marshal(env)
	return out
}

func TestBadMessagesGoToDeadListWorkerGoesOn(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.start(t)
	pickle := fixtureWith(t, "p2_send_task__db0__certmgr__0.json", func(env map[string]any) {
		env["content-type"] = "application/x-python-serialize"
		env["body"] = base64.StdEncoding.EncodeToString([]byte("cos\nsystem\n(S'touch /tmp/pwned'\ntR."))
	})
	s.redis.Do(t, "LPUSH", "certmgr", "{not json")
	s.redis.Do(t, "LPUSH", "certmgr", pickle)
	id := s.celery.Send(t, testpeers.SendOptions{Task: worker.PingTask})
	if res, cerr := s.celery.Get(t, id, 30*time.Second); cerr != nil || !jsonEqual(res, `"pong"`) {
		t.Fatalf("ping after bad messages: %s %v", res, cerr)
	}
	testpeers.Until(t, 5*time.Second, "two dead messages", func() bool { return s.llen(t, "certmgr.dead") == 2 })
	dead, _ := redis.ByteSlices(s.redis.Do(t, "LRANGE", "certmgr.dead", 0, -1), nil)
	if string(dead[0]) != string(pickle) && string(dead[1]) != string(pickle) {
		t.Error("pickled message not kept whole in the dead list")
	}
	if s.hlen(t, "unacked") != 0 {
		t.Error("a bad message stayed in unacked")
	}
}

func TestStopLetsRunningTaskFinish(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	started := make(chan struct{})
	s.mux.HandleFunc("tenant.tasks.busy", func(ctx context.Context, task *worker.Task) error {
		close(started)
		time.Sleep(500 * time.Millisecond) // work that ignores ctx; it is given its grace
		task.SetResult("done")
		return nil
	})
	srv := s.start(t)
	id := s.celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.busy"})
	<-started
	_ = srv.Stop(context.Background())
	res, cerr := s.celery.Get(t, id, 5*time.Second)
	if cerr != nil || !jsonEqual(res, `"done"`) {
		t.Fatalf("result = %s %v", res, cerr)
	}
	if s.hlen(t, "unacked") != 0 || s.llen(t, "certmgr") != 0 {
		t.Error("message left behind after a finished task")
	}
}

func TestStopAfterGraceGivesMessageBack(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.cfg.ShutdownGrace = 200 * time.Millisecond
	started := make(chan struct{})
	s.mux.HandleFunc("tenant.tasks.endless", func(ctx context.Context, task *worker.Task) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	})
	srv := s.start(t)
	id := s.celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.endless"})
	s.celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.later", Countdown: 60})
	<-started
	_ = srv.Stop(context.Background())
	if n := s.llen(t, "certmgr"); n != 2 {
		t.Fatalf("%d messages back in the queue, want 2 (the cancelled one and the one waiting for its eta)", n)
	}
	if s.hlen(t, "unacked") != 0 {
		t.Error("unacked not empty")
	}
	if v, _ := s.redis.Do(t, "GET", celery.ResultKeyPrefix+id).([]byte); strings.Contains(string(v), "FAILURE") {
		t.Errorf("a cancelled-by-shutdown task was recorded as failed: %s", v)
	}
}

func TestInspectPingListsWorker(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	srv := s.start(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, _ := exec.CommandContext(ctx, testpeers.Python, "-m", "celery", "-b", s.redis.URL, "inspect", "ping", "-t", "2").CombinedOutput()
		cancel()
		if strings.Contains(string(out), srv.Hostname()+": OK") && strings.Contains(string(out), "pong") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("celery inspect ping did not list %s:\n%s", srv.Hostname(), out)
		}
	}
}

func TestServeMuxPanicsOnDuplicate(t *testing.T) {
	t.Parallel()
	mux := worker.NewServeMux()
	worker.RegisterBuiltins(mux)
	defer func() {
		if recover() == nil {
			t.Error("no panic on a second handler for certmgr.ping")
		}
	}()
	worker.RegisterBuiltins(mux)
}

func TestMiddlewareOrder(t *testing.T) {
	t.Parallel()
	mux := worker.NewServeMux()
	var trail []string
	mw := func(name string) worker.Middleware {
		return func(next worker.Handler) worker.Handler {
			return worker.HandlerFunc(func(ctx context.Context, task *worker.Task) error {
				trail = append(trail, name)
				return next.ProcessTask(ctx, task)
			})
		}
	}
	mux.Use(mw("outer"), mw("inner"))
	mux.HandleFunc("x", func(ctx context.Context, task *worker.Task) error { trail = append(trail, "handler"); return nil })
	task, _ := worker.NewTask("x", nil, nil)
	if err := mux.ProcessTask(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	if strings.Join(trail, ",") != "outer,inner,handler" {
		t.Errorf("trail = %v", trail)
	}
	unknown, _ := worker.NewTask("y", nil, nil)
	var nr *worker.NotRegisteredError
	if err := mux.ProcessTask(context.Background(), unknown); !errors.As(err, &nr) {
		t.Errorf("unknown task: %v", err)
	}
}
