package worker_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
)

// pyOptions runs testdata/celery_options.py: Python Celery configured with
// broker_transport_options as a Django app would be.
type pyOptions struct{ broker, backend, options, backendOptions string }

func (p pyOptions) run(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	out, err := p.try(timeout, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// try is run returning the failure (with Python's stderr) instead of ending
// the test.
func (p pyOptions) try(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args = append([]string{"testdata/celery_options.py", args[0], "--broker", p.broker, "--options", p.options,
		"--backend-options", cmp.Or(p.backendOptions, "{}")}, args[1:]...)
	if p.backend != "" {
		args = append(args, "--backend", p.backend)
	}
	out, err := exec.CommandContext(ctx, testpeers.Python, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return "", fmt.Errorf("celery_options.py %s: %v\n%s", args[1], err, stderr)
	}
	return strings.TrimSpace(string(out)), nil
}

type pyResult struct {
	State   string          `json:"state"`
	Result  json.RawMessage `json:"result"`
	ExcType string          `json:"exc_type"`
	Message string          `json:"message"`
}

func (p pyOptions) get(t *testing.T, id string) pyResult {
	t.Helper()
	var r pyResult
	if err := json.Unmarshal([]byte(p.run(t, 90*time.Second, "get", "--id", id, "--timeout", "30")), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// runServer runs a worker with the builtins until the test ends.
func runServer(t *testing.T, cfg worker.Config) {
	t.Helper()
	mux := worker.NewServeMux()
	worker.RegisterBuiltins(mux)
	runServerMux(t, cfg, mux)
}

// runServerMux runs a worker until the test ends.
func runServerMux(t *testing.T, cfg worker.Config, mux *worker.ServeMux) {
	t.Helper()
	cfg.Hostname = "certmgr@" + strings.ReplaceAll(t.Name(), "/", "_")
	cfg.PollInterval = 100 * time.Millisecond
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	srv, err := worker.NewServer(cfg, mux)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A Django app with broker_transport_options global_keyprefix, sep and ten
// priority steps: its tasks reach certmgr, results reach AsyncResult, and
// `celery inspect ping` (pidbox on the prefixed fanout channel, the reply on
// the prefixed binding and queue) is answered.
func TestBrokerTransportOptionsWithPythonCelery(t *testing.T) {
	t.Parallel()
	r := testpeers.Redis(t)
	testpeers.Celery(t, r.URL)
	const opts = `{"global_keyprefix": "midsummer:", "sep": ":", "priority_steps": [0,1,2,3,4,5,6,7,8,9], "queue_order_strategy": "round_robin"}`
	py := pyOptions{broker: r.URL, options: opts}
	runServer(t, worker.Config{BrokerURL: r.URL, BrokerTransportOptions: opts})

	var ids []string
	for _, pri := range []int{0, 5, 9} {
		ids = append(ids, py.run(t, time.Minute, "send", "--task", "certmgr.ping", "--priority", strconv.Itoa(pri)))
	}
	for _, id := range ids {
		if res := py.get(t, id); res.State != "SUCCESS" || string(res.Result) != `"pong"` {
			t.Errorf("task %s: %+v", id, res)
		}
	}
	var replies []map[string]any
	for range 3 { // the worker subscribes to the pidbox shortly after start
		out := py.run(t, time.Minute, "ping", "--timeout", "2")
		var m map[string]map[string]any
		_ = json.Unmarshal([]byte(out), &m)
		if len(m) > 0 {
			for _, v := range m {
				replies = append(replies, v)
			}
			break
		}
	}
	if len(replies) != 1 || replies[0]["ok"] != "pong" {
		t.Errorf("inspect ping replies: %v", replies)
	}
	c := r.Pool().Get()
	defer c.Close()
	if n, _ := redis.Int(c.Do("EXISTS", "unacked", "unacked_index", "certmgr", "celery-task-meta-"+ids[0])); n != 1 {
		t.Errorf("%d unprefixed kombu keys exist (only the result should)", n)
	}
	testpeers.Until(t, 10*time.Second, "every message acknowledged", func() bool {
		n, _ := redis.Int(c.Do("HLEN", "midsummer:unacked"))
		m, _ := redis.Int(c.Do("ZCARD", "midsummer:unacked_index"))
		return n == 0 && m == 0
	})
}

// An unknown transport option stops the worker at start, naming it.
func TestUnknownTransportOptionRefused(t *testing.T) {
	t.Parallel()
	_, err := worker.NewServer(worker.Config{BrokerTransportOptions: `{"fanout_patterns": false}`}, worker.NewServeMux())
	if err == nil || !strings.Contains(err.Error(), `"fanout_patterns"`) {
		t.Fatalf("NewServer: %v", err)
	}
}

// A task message over MaxMessageBytes fails with a result naming the limit;
// the message is kept whole in the dead list and the worker goes on.
func TestTooLargeMessageFailsNamingLimit(t *testing.T) {
	t.Parallel()
	r := testpeers.Redis(t)
	testpeers.Celery(t, r.URL)
	py := pyOptions{broker: r.URL, options: "{}"}
	runServer(t, worker.Config{BrokerURL: r.URL}) // default limit, 1 MiB

	big := py.run(t, time.Minute, "send", "--task", "certmgr.ping", "--arg-bytes", strconv.Itoa(2<<20))
	res := py.get(t, big)
	if res.State != "FAILURE" || res.ExcType != "LimitExceeded" || !strings.Contains(res.Message, "limit of 1048576 bytes") {
		t.Errorf("big task: %+v", res)
	}
	small := py.run(t, time.Minute, "send", "--task", "certmgr.ping")
	if res := py.get(t, small); res.State != "SUCCESS" {
		t.Errorf("small task after it: %+v", res)
	}
	c := r.Pool().Get()
	defer c.Close()
	dead, _ := redis.Strings(c.Do("LRANGE", "certmgr.dead", 0, -1))
	if len(dead) != 1 || len(dead[0]) < 2<<20 || !strings.Contains(dead[0], big) {
		t.Errorf("dead list: %d entries", len(dead))
	}
}

// Python Celery and certmgr on the same rediss:// URL, CA, client
// certificate and CERT_REQUIRED, as a managed Redis with a private CA is used.
func TestRedissWithPythonCelery(t *testing.T) {
	t.Parallel()
	s := testpeers.StartRedisTLS(t)
	testpeers.Celery(t, s.URL(0))
	py := pyOptions{broker: s.URL(0), options: "{}"}
	runServer(t, worker.Config{BrokerURL: s.URL(0), MaxMessageBytes: 1 << 10})
	id := py.run(t, time.Minute, "send", "--task", "certmgr.ping")
	if res := py.get(t, id); res.State != "SUCCESS" || string(res.Result) != `"pong"` {
		t.Errorf("ping over TLS: %+v", res)
	}
	// The size limit holds over TLS too (the blocking peek skips on a TLS stream).
	big := py.run(t, time.Minute, "send", "--task", "certmgr.ping", "--arg-bytes", "4096")
	if res := py.get(t, big); res.State != "FAILURE" || res.ExcType != "LimitExceeded" {
		t.Errorf("big task over TLS: %+v", res)
	}
	id = py.run(t, time.Minute, "send", "--task", "certmgr.ping")
	if res := py.get(t, id); res.State != "SUCCESS" {
		t.Errorf("ping after it: %+v", res)
	}
}

// Python Celery and certmgr on a Redis that listens on a Unix socket only:
// redis+socket:// for the broker and the result backend, as Celery spells it.
func TestUnixSocketWithPythonCelery(t *testing.T) {
	t.Parallel()
	sock := testpeers.StartRedisSocket(t)
	url := "redis+socket://" + sock.Path
	testpeers.Celery(t, url)
	mux := (&matrixRun{}).mux()
	runServerMux(t, worker.Config{BrokerURL: url}, mux)
	py := pyOptions{broker: url, options: "{}"}
	if res := py.call(t, "certmgr.ping", "[]"); res.State != "SUCCESS" || string(res.Result) != `"pong"` {
		t.Errorf("ping: %+v", res)
	}
	if res := py.call(t, "test.fail", "[]"); res.State != "FAILURE" || res.ExcType != "ValueError" {
		t.Errorf("failure: %+v", res)
	}
	if res := py.call(t, "test.retry", "[]"); res.State != "SUCCESS" || string(res.Result) != `"ok"` {
		t.Errorf("retry: %+v", res)
	}
}
