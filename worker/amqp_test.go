package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
)

func (p pyOptions) call(t *testing.T, task string, args string) pyResult {
	t.Helper()
	var r pyResult
	out := p.run(t, 2*time.Minute, "call", "--task", task, "--args", args, "--timeout", "30")
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	return r
}

// inspectPing waits until `celery inspect ping` through the broker gets a
// reply from hostname.
func (p pyOptions) inspectPing(t *testing.T, hostname string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var m map[string]map[string]any
		out, err := p.try(time.Minute, "ping", "--timeout", "1")
		if err == nil {
			_ = json.Unmarshal([]byte(out), &m)
			if m[hostname]["ok"] == "pong" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no inspect ping reply from %s: %v %v", hostname, m, err)
		}
		if err != nil {
			t.Logf("inspect ping (retried): %v", err)
		}
	}
}

// On RabbitMQ with rpc:// results, as a Django app pairs them: the queue the
// worker declares is the one Celery declares (Python's own declare would
// fail on a mismatch), inspect ping answers through kombu's pidbox
// exchanges, and Python's AsyncResult gets a success, a failure and a
// retried task's final state through its reply queue.
func TestRabbitMQWithPythonCelery(t *testing.T) {
	t.Parallel()
	rb := testpeers.RabbitMQ(t)
	testpeers.Celery(t, rb.URL)
	var handlers matrixRun
	mux := handlers.mux()
	cfg := worker.Config{BrokerURL: rb.URL, ResultBackendURL: "rpc://", Concurrency: 2, SendTaskEvents: true}
	runServerMux(t, cfg, mux)
	py := pyOptions{broker: rb.URL, backend: "rpc://", options: "{}"}
	py.inspectPing(t, "certmgr@"+t.Name())

	if res := py.call(t, "certmgr.ping", "[]"); res.State != "SUCCESS" || string(res.Result) != `"pong"` {
		t.Errorf("ping: %+v", res)
	}
	if res := py.call(t, "test.fail", "[]"); res.State != "FAILURE" || res.ExcType != "ValueError" || res.Message != "boom" {
		t.Errorf("failure: %+v", res)
	}
	if res := py.call(t, "test.retry", "[]"); res.State != "SUCCESS" || string(res.Result) != `"ok"` || handlers.tries.Load() != 2 {
		t.Errorf("retry: %+v after %d tries", res, handlers.tries.Load())
	}

	// A monitor's queue on celeryev, as `celery events` binds one; then
	// one more task.
	conn, err := amqp.Dial(rb.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.ExchangeDeclare("celeryev", "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	evq, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(evq.Name, "#", "celeryev", false, nil); err != nil {
		t.Fatal(err)
	}
	events, err := ch.Consume(evq.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res := py.call(t, "certmgr.ping", "[]"); res.State != "SUCCESS" {
		t.Errorf("ping: %+v", res)
	}
	seen := map[string]bool{}
	timeout := time.After(30 * time.Second)
	for !seen["worker.heartbeat"] || !seen["task.multi"] {
		select {
		case d, ok := <-events:
			if ok {
				seen[d.RoutingKey] = true
			}
		case err := <-closed:
			t.Fatalf("the events channel closed: %v (saw %v)", err, seen)
		case <-timeout:
			t.Fatalf("events on celeryev: saw %v, want worker.heartbeat and task.multi", seen)
		}
	}
}

// A queue that exists with x-max-priority (declared by the Django app's
// task_queues) is used as it is, and RabbitMQ serves the highest priority
// first.
func TestRabbitMQKeepsExistingPriorityQueue(t *testing.T) {
	t.Parallel()
	rb := testpeers.RabbitMQ(t)
	rec := testpeers.Redis(t)
	testpeers.Celery(t, rb.URL)
	py := pyOptions{broker: rb.URL, backend: "rpc://", options: "{}"}
	var ids []string
	for _, pri := range []string{"1", "9", "5"} {
		ids = append(ids, py.run(t, time.Minute, "send", "--task", "test.record", "--args", `["runs"]`, "--priority", pri, "--max-priority", "10"))
	}
	mux := worker.NewServeMux()
	mux.Handle("test.record", recordHandler(rec.Pool()))
	runServerMux(t, worker.Config{BrokerURL: rb.URL, Concurrency: 1, Prefetch: 1}, mux)
	testpeers.Until(t, 60*time.Second, "three tasks ran", func() bool { return len(runs(t, rec, "runs")) == 3 })
	c := rec.Pool().Get()
	defer c.Close()
	order, _ := c.Do("LRANGE", "runs", 0, -1)
	var got []string
	for _, v := range order.([]any) {
		got = append(got, strings.TrimPrefix(string(v.([]byte)), "go:"))
	}
	if want := []string{ids[1], ids[2], ids[0]}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ran %v, want priorities 9, 5, 1: %v", got, want)
	}
}

// startAMQPPyWorker runs testdata/amqp_worker_app.py as a Celery worker.
func startAMQPPyWorker(t *testing.T, brokerURL, recordURL, hostname string) {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile("testdata/amqp_worker_app.py")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "amqp_worker_app.py"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "worker.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testpeers.Python, "-m", "celery", "-A", "amqp_worker_app", "worker", "-Q", "certmgr",
		"-P", "solo", "-c", "1", "-n", hostname, "--without-mingle", "--without-gossip", "-l", "info")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "AMQPWORKER_BROKER="+brokerURL, "AMQPWORKER_RECORD="+recordURL, "PYTHONPATH="+dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("python worker log:\n%s", b)
		}
	})
	testpeers.Until(t, 60*time.Second, "the python worker is ready", func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), " ready.")
	})
}

// A Python Celery worker and certmgr share the queue on RabbitMQ: 500 tasks,
// each run exactly once, none lost.
func TestRabbitMQCompetingPythonWorker(t *testing.T) {
	t.Parallel()
	rb := testpeers.RabbitMQ(t)
	rec := testpeers.Redis(t)
	testpeers.Celery(t, rb.URL)
	startAMQPPyWorker(t, rb.URL, rec.URL, "py-"+strconv.Itoa(os.Getpid())+"@amqp")
	mux := worker.NewServeMux()
	mux.Handle("test.record", recordHandler(rec.Pool()))
	runServerMux(t, worker.Config{BrokerURL: rb.URL, Concurrency: 2}, mux)
	py := pyOptions{broker: rb.URL, backend: "rpc://", options: "{}"}
	const n = 500
	ids := strings.Fields(py.run(t, 2*time.Minute, "send", "--task", "test.record", "--args", `["runs"]`, "--count", strconv.Itoa(n)))
	if len(ids) != n {
		t.Fatalf("sent %d", len(ids))
	}
	testpeers.Until(t, 3*time.Minute, "every task ran", func() bool { return len(runs(t, rec, "runs")) == n })
	got := runs(t, rec, "runs")
	byWho := ranOnceEach(t, ids, got)
	t.Logf("500 tasks on RabbitMQ, runs by worker: %v", byWho)
	if byWho["go"] == 0 || byWho["py"] == 0 {
		t.Errorf("one worker ran nothing: %v", byWho)
	}
}

// RabbitMQ restarted (stop_app, start_app) while certmgr consumes a durable
// queue of persistent messages: every task runs; those unacknowledged when
// the connection dropped run again (at least once).
//
// Not parallel: stopping the shared node drops every connection to it, and
// the other RabbitMQ tests of this package must not be running meanwhile.
func TestRabbitMQRestartLosesNothing(t *testing.T) {
	rb := testpeers.RabbitMQ(t)
	rec := testpeers.Redis(t)
	testpeers.Celery(t, rb.URL)
	t.Cleanup(func() { _ = exec.Command("rabbitmqctl", "-q", "start_app").Run() })
	mux := worker.NewServeMux()
	rh := recordHandler(rec.Pool())
	mux.HandleFunc("test.record", func(ctx context.Context, task *worker.Task) error {
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		return rh(ctx, task)
	})
	py := pyOptions{broker: rb.URL, backend: "rpc://", options: "{}"}
	const n = 200
	ids := strings.Fields(py.run(t, 2*time.Minute, "send", "--task", "test.record", "--args", `["runs"]`, "--count", strconv.Itoa(n)))
	runServerMux(t, worker.Config{BrokerURL: rb.URL, Concurrency: 2}, mux)
	testpeers.Until(t, 60*time.Second, "a quarter ran", func() bool { return len(runs(t, rec, "runs")) >= n/4 })
	testpeers.RabbitCtl(t, "stop_app")
	t.Logf("rabbitmq stopped after %d tasks", len(runs(t, rec, "runs")))
	testpeers.RabbitCtl(t, "start_app")
	testpeers.Until(t, 2*time.Minute, "every task ran", func() bool { return len(runs(t, rec, "runs")) == n })
	got := runs(t, rec, "runs")
	twice := 0
	for _, id := range ids {
		if len(got[id]) == 0 {
			t.Errorf("task %s lost", id)
		}
		if len(got[id]) > 1 {
			twice++
		}
	}
	t.Logf("%d of %d tasks ran twice across the restart", twice, n)
}

// A countdown task is held unacknowledged until its eta, as Celery holds it,
// and the prefetch count grows while it waits: with prefetch 1 the tasks
// sent after it still run first.
func TestRabbitMQCountdownHeldWithoutBlocking(t *testing.T) {
	t.Parallel()
	rb := testpeers.RabbitMQ(t)
	rec := testpeers.Redis(t)
	testpeers.Celery(t, rb.URL)
	py := pyOptions{broker: rb.URL, backend: "rpc://", options: "{}"}
	sent := time.Now()
	late := py.run(t, time.Minute, "send", "--task", "test.record", "--args", `["runs"]`, "--countdown", "4")
	mux := worker.NewServeMux()
	mux.Handle("test.record", recordHandler(rec.Pool()))
	runServerMux(t, worker.Config{BrokerURL: rb.URL, Concurrency: 1, Prefetch: 1}, mux)
	// The worker holds the countdown message before the others arrive.
	time.Sleep(500 * time.Millisecond) // ordering the sends is the point of the test
	soon := strings.Fields(py.run(t, time.Minute, "send", "--task", "test.record", "--args", `["runs"]`, "--count", "3"))
	testpeers.Until(t, 60*time.Second, "all four ran", func() bool { return len(runs(t, rec, "runs")) == 4 })
	c := rec.Pool().Get()
	defer c.Close()
	order, _ := c.Do("LRANGE", "runs", 0, -1)
	var got []string
	for _, v := range order.([]any) {
		got = append(got, strings.TrimPrefix(string(v.([]byte)), "go:"))
	}
	if len(got) != 4 || got[3] != late || !strings.Contains(strings.Join(got[:3], ","), soon[0]) {
		t.Errorf("ran %v: want the three sent later (%v) before the countdown task %s", got, soon, late)
	}
	if d := time.Since(sent); d < 4*time.Second {
		t.Errorf("the countdown task ran %s after it was sent, before its 4s countdown", d)
	}
}

// A graceful stop on RabbitMQ gives back what the worker holds but did not
// finish (the running tasks cancelled after ShutdownGrace): the next worker
// runs everything once, nothing is lost. (The stop rejects with requeue; the
// connection's close would requeue them too, so this proves the outcome,
// not which of the two did it.)
func TestRabbitMQStopRequeues(t *testing.T) {
	t.Parallel()
	rb := testpeers.RabbitMQ(t)
	rec := testpeers.Redis(t)
	testpeers.Celery(t, rb.URL)
	py := pyOptions{broker: rb.URL, backend: "rpc://", options: "{}"}
	ids := strings.Fields(py.run(t, time.Minute, "send", "--task", "test.record", "--args", `["runs"]`, "--count", "5"))

	started := make(chan string, 10)
	slow := worker.NewServeMux()
	slow.HandleFunc("test.record", func(ctx context.Context, task *worker.Task) error {
		started <- task.ID
		<-ctx.Done() // never finishes on its own
		return ctx.Err()
	})
	srv, err := worker.NewServer(worker.Config{BrokerURL: rb.URL, Concurrency: 2, ShutdownGrace: 100 * time.Millisecond,
		Hostname: "certmgr@slow"}, slow)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-started
	<-started
	if err := srv.Stop(context.Background()); err != nil {
		t.Logf("stop: %v", err)
	}

	mux := worker.NewServeMux()
	mux.Handle("test.record", recordHandler(rec.Pool()))
	runServerMux(t, worker.Config{BrokerURL: rb.URL, Concurrency: 2}, mux)
	testpeers.Until(t, 60*time.Second, "every task ran after the stop", func() bool { return len(runs(t, rec, "runs")) == len(ids) })
	got := runs(t, rec, "runs")
	for _, id := range ids {
		if len(got[id]) != 1 {
			t.Errorf("task %s ran %d times", id, len(got[id]))
		}
	}
}

// RabbitMQ requeues what a connection held when it drops. A message the
// worker held but had not started (one waiting on the run queue, one waiting
// for its eta) belongs to the dead connection then and must not run: the
// copy RabbitMQ delivers again runs, once. (The running task's copy runs
// again: at least once, as with Celery.)
func TestRabbitMQConnectionLossRunsHeldTasksOnce(t *testing.T) {
	t.Parallel()
	rb := testpeers.RabbitMQ(t)
	testpeers.Celery(t, rb.URL)
	var holdRuns, queuedRuns, etaRuns atomic.Int32
	started := make(chan struct{}, 4)
	release := make(chan struct{})
	mux := worker.NewServeMux()
	mux.HandleFunc("test.hold", func(ctx context.Context, task *worker.Task) error {
		if holdRuns.Add(1) == 1 {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	mux.HandleFunc("test.queued", func(ctx context.Context, task *worker.Task) error { queuedRuns.Add(1); return nil })
	mux.HandleFunc("test.eta", func(ctx context.Context, task *worker.Task) error { etaRuns.Add(1); return nil })
	srv, err := worker.NewServer(worker.Config{BrokerURL: rb.URL, ResultBackendURL: worker.BackendDisabled, Concurrency: 1,
		Hostname: "certmgr@" + t.Name(), PollInterval: 100 * time.Millisecond,
		Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}, mux)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			close(release)
			_ = srv.Stop(context.Background())
		}
	})

	// The countdown messages first: each one fetched raises the prefetch
	// count, so the worker holds both and then test.hold too.
	py := pyOptions{broker: rb.URL, backend: "rpc://", options: "{}"}
	sent := time.Now()
	py.run(t, time.Minute, "send", "--task", "test.queued", "--countdown", "5")
	py.run(t, time.Minute, "send", "--task", "test.eta", "--countdown", "12")
	py.run(t, time.Minute, "send", "--task", "test.hold")
	<-started // the one worker goroutine is busy from here on
	testpeers.Eventually(t, 20*time.Second, "three messages held by the worker", func() error {
		if ready, unacked := queueCounts(t, rb.VHost, "certmgr"); ready != 0 || unacked != 3 {
			return fmt.Errorf("%d ready, %d unacknowledged", ready, unacked)
		}
		return nil
	})
	// Once test.queued is due it waits on the run queue behind test.hold;
	// test.eta still waits for its eta.
	testpeers.Until(t, 10*time.Second, "test.queued is due", func() bool { return time.Since(sent) > 5500*time.Millisecond })
	if queuedRuns.Load() != 0 || etaRuns.Load() != 0 {
		t.Fatalf("a countdown task ran before test.hold started: the sends took too long (%s)", time.Since(sent))
	}
	closeConnections(t, rb.VHost)
	close(release)
	testpeers.Eventually(t, 25*time.Second, "every task ran and the queue is empty", func() error {
		ready, unacked := queueCounts(t, rb.VHost, "certmgr")
		if queuedRuns.Load() == 0 || etaRuns.Load() == 0 || ready+unacked != 0 {
			return fmt.Errorf("runs: queued %d, eta %d; %d ready, %d unacknowledged", queuedRuns.Load(), etaRuns.Load(), ready, unacked)
		}
		return nil
	})
	stopped = true
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := queuedRuns.Load(); n != 1 {
		t.Errorf("the prefetched task ran %d times after one connection loss, want 1", n)
	}
	if n := etaRuns.Load(); n != 1 {
		t.Errorf("the countdown task ran %d times after one connection loss, want 1", n)
	}
	t.Logf("the running task ran %d times (its ack was lost with the connection)", holdRuns.Load())
}

// queueCounts is a queue's ready and unacknowledged message counts.
func queueCounts(t *testing.T, vhost, queue string) (ready, unacked int) {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged").CombinedOutput()
	if err != nil {
		t.Fatalf("list_queues: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == queue {
			ready, _ = strconv.Atoi(f[1])
			unacked, _ = strconv.Atoi(f[2])
			return ready, unacked
		}
	}
	return -1, -1
}

// closeConnections has RabbitMQ close every client connection to vhost, as
// a broker restart or a network cut would drop them.
func closeConnections(t *testing.T, vhost string) {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "-q", "list_connections", "pid", "vhost").CombinedOutput()
	if err != nil {
		t.Fatalf("list_connections: %v: %s", err, out)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == vhost {
			testpeers.RabbitCtl(t, "close_connection", f[0], "test: connection lost")
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no connection to %s to close", vhost)
	}
}
