package worker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
	"github.com/midsummer/certmgr/worker/internal/redisbroker"
)

// recordHandler is the Go side of the Python app's test.record(key, sleep):
// it RPUSHes "go:<task id>" to the list key.
func recordHandler(pool *redis.Pool) worker.HandlerFunc {
	return func(ctx context.Context, task *worker.Task) error {
		var key string
		if err := task.Arg(0, &key); err != nil {
			return err
		}
		var sleep float64
		if _, err := task.Kwarg("sleep", &sleep); err != nil {
			return err
		}
		select {
		case <-time.After(time.Duration(sleep * float64(time.Second))):
		case <-ctx.Done():
			return ctx.Err()
		}
		c := pool.Get()
		defer c.Close()
		if _, err := c.Do("RPUSH", key, "go:"+task.ID); err != nil {
			return fmt.Errorf("record run: %w", err)
		}
		task.SetResult("go")
		return nil
	}
}

// runs reads who ran which task id from the list key.
func runs(t *testing.T, r *testpeers.RedisPeer, key string) map[string][]string {
	t.Helper()
	entries, _ := redis.Strings(r.Do(t, "LRANGE", key, 0, -1), nil)
	out := map[string][]string{}
	for _, e := range entries {
		who, id, _ := strings.Cut(e, ":")
		out[id] = append(out[id], who)
	}
	return out
}

// ranOnceEach fails the test for each id that did not run exactly once in
// got (runs' result) and returns how many runs each worker made.
func ranOnceEach(t *testing.T, ids []string, got map[string][]string) map[string]int {
	t.Helper()
	byWho := map[string]int{}
	for _, id := range ids {
		if len(got[id]) != 1 {
			t.Errorf("task %s ran %d times: %v", id, len(got[id]), got[id])
		}
		for _, w := range got[id] {
			byWho[w]++
		}
	}
	return byWho
}

func TestPythonAndGoWorkersShareQueue(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.mux.Handle("test.record", recordHandler(s.redis.Pool()))
	py := testpeers.StartPyWorker(t, testpeers.PyWorkerOptions{BrokerURL: s.redis.URL, Hostname: "py-" + strconv.Itoa(os.Getpid()) + "@share"})
	s.start(t)
	ids := s.celery.SendMany(t, testpeers.SendOptions{Task: "test.record", Args: []any{"runs"}, Kwargs: map[string]any{"sleep": 0.01}, Count: 200})
	testpeers.Until(t, 90*time.Second, "every task ran", func() bool { return len(runs(t, s.redis, "runs")) == len(ids) })
	got := runs(t, s.redis, "runs")
	byWho := ranOnceEach(t, ids, got)
	t.Logf("runs by worker: %v (python %s)", byWho, py.Hostname)
	testpeers.Until(t, 10*time.Second, "nothing left unacked", func() bool { return s.hlen(t, "unacked") == 0 })
}

func TestLongTaskNotRestoredByPythonWorker(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	const vt = 2 * time.Second
	s.cfg.VisibilityTimeout = vt
	started := make(chan struct{}, 1)
	var starts atomic.Int32
	rec := recordHandler(s.redis.Pool())
	s.mux.HandleFunc("test.record", func(ctx context.Context, task *worker.Task) error {
		starts.Add(1)
		select {
		case started <- struct{}{}:
		default:
		}
		return rec(ctx, task)
	})
	s.start(t)
	id := s.celery.Send(t, testpeers.SendOptions{Task: "test.record", Args: []any{"runs"}, Kwargs: map[string]any{"sleep": 8}})
	<-started
	fetched := time.Now()
	// A Python worker with the same visibility timeout starts (and restores
	// expired messages, as kombu does at startup) once the message has been
	// held longer than the visibility timeout.
	time.Sleep(time.Until(fetched.Add(vt + 500*time.Millisecond))) // must outlast vt: the point of the test
	py := testpeers.StartPyWorker(t, testpeers.PyWorkerOptions{BrokerURL: s.redis.URL, VisibilityTimeout: vt.Seconds(), Hostname: "py-" + strconv.Itoa(os.Getpid()) + "@long"})
	if _, cerr := s.celery.Get(t, id, 30*time.Second); cerr != nil {
		t.Fatal(cerr)
	}
	got := runs(t, s.redis, "runs")
	if len(got[id]) != 1 || got[id][0] != "go" {
		t.Fatalf("long task ran %v; want once, by certmgr", got[id])
	}
	if n := starts.Load(); n != 1 {
		t.Errorf("certmgr started the long task %d times: it was re-queued", n)
	}
	if log, _ := os.ReadFile(py.LogPath); strings.Contains(string(log), id) {
		t.Errorf("the Python worker received the long task:\n%s", log)
	}
	if n := s.llen(t, "certmgr"); n != 0 {
		t.Errorf("the long task was re-queued (%d in queue)", n)
	}
}

// TestHelperWorkerProcess is not a test: it is the certmgr worker process
// that TestKill9 starts and kills (the test binary re-executed).
func TestHelperWorkerProcess(t *testing.T) {
	if os.Getenv("CERTMGR_HELPER_BROKER") == "" {
		t.Skip("helper process for TestKill9LosesNothing")
	}
	pool := &redis.Pool{Dial: func() (redis.Conn, error) { return redis.DialURL(os.Getenv("CERTMGR_HELPER_BROKER")) }}
	mux := worker.NewServeMux()
	worker.RegisterBuiltins(mux)
	mux.Handle("test.record", recordHandler(pool))
	srv, err := worker.NewServer(worker.Config{
		BrokerURL:         os.Getenv("CERTMGR_HELPER_BROKER"),
		Hostname:          os.Getenv("CERTMGR_HELPER_HOSTNAME"),
		VisibilityTimeout: 2 * time.Second,
		RestoreInterval:   300 * time.Millisecond,
		// A kill while restoring leaves unacked_mutex behind; kombu's 300s
		// expiry would stall this test for five minutes.
		RestoreMutexTTL: 3 * time.Second,
		PollInterval:    100 * time.Millisecond,
		Concurrency:     4,
		Logger:          zerolog.New(os.Stderr),
	}, mux)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_ = srv.Run(ctx) // until killed
}

func TestKill9LosesNothing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("kills and restarts worker processes for ~20s")
	}
	s := newSetup(t)
	hostname := "certmgr-kill9-" + strconv.Itoa(os.Getpid()) + "@test"
	ids := s.celery.SendMany(t, testpeers.SendOptions{Task: "test.record", Args: []any{"runs"}, Kwargs: map[string]any{"sleep": 0.02}, Count: 400})
	// Some with a countdown, held in unacked while they wait.
	ids = append(ids, s.celery.SendMany(t, testpeers.SendOptions{Task: "test.record", Args: []any{"runs"}, Kwargs: map[string]any{"sleep": 0.0}, Count: 20, Countdown: 1})...)

	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWorkerProcess$", "-test.v")
		cmd.Env = append(os.Environ(), "CERTMGR_HELPER_BROKER="+s.redis.URL, "CERTMGR_HELPER_HOSTNAME="+hostname)
		logPath := t.TempDir() + "/worker.log"
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logPath)
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("worker process %d log:\n%s", cmd.Process.Pid, b)
			}
		})
		return cmd
	}
	for i := range 5 {
		cmd := start()
		// Kill at a random moment once it is consuming.
		before := len(runs(t, s.redis, "runs"))
		testpeers.Until(t, 30*time.Second, "worker consuming", func() bool { return len(runs(t, s.redis, "runs")) > before })
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond) // the random moment
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		t.Logf("kill %d: %d of %d tasks done", i+1, len(runs(t, s.redis, "runs")), len(ids))
	}
	start()
	testpeers.Until(t, 120*time.Second, "every task ran after the kills", func() bool { return len(runs(t, s.redis, "runs")) >= len(ids) })
	got := runs(t, s.redis, "runs")
	dup := 0
	for _, id := range ids {
		if len(got[id]) == 0 {
			t.Errorf("task %s lost", id)
		}
		if len(got[id]) > 1 {
			dup++
		}
	}
	t.Logf("%d tasks, %d ran more than once (acks-late redelivery after kill -9)", len(ids), dup)
	testpeers.Until(t, 30*time.Second, "queue and unacked empty", func() bool {
		return s.hlen(t, "unacked") == 0 && s.llen(t, "certmgr") == 0
	})

	// The restarted worker answers `celery inspect ping`.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, testpeers.Python, "-m", "celery", "-b", s.redis.URL, "inspect", "ping", "-t", "3").CombinedOutput()
	if !strings.Contains(string(out), hostname+": OK") {
		t.Errorf("celery inspect ping does not list %s:\n%s", hostname, out)
	}
}

// TestPythonWorkerRestoresDeadCertmgrMessages: messages a certmgr process
// held when it died are in unacked exactly as kombu writes them, so a Python
// worker's own restore (at its start, under unacked_mutex) brings them back.
func TestPythonWorkerRestoresDeadCertmgrMessages(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	ids := s.celery.SendMany(t, testpeers.SendOptions{Task: "test.record", Args: []any{"runs"}, Count: 5})
	// A certmgr worker takes them and dies before acknowledging.
	b, err := redisbroker.New(redisbroker.Config{URL: s.redis.URL, Queue: "certmgr"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ds, err := b.Fetch(context.Background(), 10, 0)
	if err != nil || len(ds) != len(ids) {
		t.Fatalf("fetch: %d, %v", len(ds), err)
	}
	testpeers.Until(t, 5*time.Second, "the visibility timeout (1s) to pass", func() bool {
		oldest, _ := redis.Strings(s.redis.Do(t, "ZRANGE", "unacked_index", 0, 0, "WITHSCORES"), nil)
		score, _ := strconv.ParseFloat(oldest[1], 64)
		return float64(time.Now().UnixMicro())/1e6-score > 1.5
	})
	testpeers.StartPyWorker(t, testpeers.PyWorkerOptions{BrokerURL: s.redis.URL, VisibilityTimeout: 1, Hostname: "py-" + strconv.Itoa(os.Getpid()) + "@restore"})
	testpeers.Until(t, 60*time.Second, "the Python worker to run the restored tasks", func() bool { return len(runs(t, s.redis, "runs")) == len(ids) })
	for id, who := range runs(t, s.redis, "runs") {
		if len(who) != 1 || who[0] != "py" {
			t.Errorf("task %s ran by %v", id, who)
		}
	}
}
