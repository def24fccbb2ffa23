package worker_test

import (
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
)

// refusedMsg is what the worker logs for a result the backend refuses.
const refusedMsg = "the result backend refuses this task's result; acknowledging its message without storing it"

// startLogged starts a worker with the builtins whose JSON log goes to logs
// (and the test's output); the test stops it.
func startLogged(t *testing.T, cfg worker.Config, logs io.Writer) *worker.Server {
	t.Helper()
	mux := worker.NewServeMux()
	worker.RegisterBuiltins(mux)
	cfg.Hostname = "certmgr@" + strings.ReplaceAll(t.Name(), "/", "_")
	cfg.PollInterval = 100 * time.Millisecond
	cfg.Logger = zerolog.New(zerolog.MultiLevelWriter(logs, zerolog.NewTestWriter(t))).Level(zerolog.InfoLevel)
	srv, err := worker.NewServer(cfg, mux)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	return srv
}

// sendWithID sends certmgr.ping with a task id of the test's choosing, as a
// Python producer does.
func sendWithID(t *testing.T, brokerURL, id string) {
	t.Helper()
	script := `
import sys
from celery import Celery
app = Celery("p", broker=sys.argv[1])
app.send_task("certmgr.ping", task_id=sys.argv[2], queue="certmgr")
`
	if out, err := exec.Command(testpeers.Python, "-c", script, brokerURL, id).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
}

// refusedLogged waits for the log line naming the task whose result was
// refused.
func refusedLogged(t *testing.T, logs *testpeers.LogBuffer, id string) {
	t.Helper()
	testpeers.Until(t, 20*time.Second, "a log line naming the refused task", func() bool {
		for _, l := range logs.Lines(refusedMsg) {
			if l["task_id"] == id && l["result_backend"] != "" && l["error"] != "" {
				return true
			}
		}
		return false
	})
}

// stopAndCheckSettled stops the worker and checks that nothing is left in
// unacked or in the queue: the refused task cannot come back after a
// restart (neither by restore nor by the visibility timeout).
func stopAndCheckSettled(t *testing.T, srv *worker.Server, r *testpeers.RedisPeer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if n, _ := redis.Int(r.Do(t, "HLEN", "unacked"), nil); n != 0 {
		t.Errorf("%d messages left in unacked: the refused task comes back after a restart", n)
	}
	if n, _ := redis.Int(r.Do(t, "LLEN", "certmgr"), nil); n != 0 {
		t.Errorf("%d messages left in the queue", n)
	}
}

// A task whose result django-db cannot take (a task id over the column's
// varchar(255): SQLSTATE 22001) is logged and acknowledged, as Python
// Celery does; the results behind it are stored.
func TestDjangoDBRefusedResultDoesNotWedgeTheWorker(t *testing.T) {
	t.Parallel()
	requireDjangoCeleryResults(t)
	r := testpeers.Redis(t)
	pg := testpeers.Postgres(t)
	dj := djangoApp{pg: pg, broker: r.URL}
	dj.run(t, "migrate")
	logs := &testpeers.LogBuffer{}
	srv := startLogged(t, worker.Config{BrokerURL: r.URL, ResultBackendURL: worker.BackendDjangoDB,
		DatabaseURL: pg.URL, Concurrency: 2}, logs)

	poison := strings.Repeat("x", 300)
	sendWithID(t, r.URL, poison)
	ok := dj.run(t, "send", "--task", "certmgr.ping")
	if res := dj.get(t, ok); res.State != "SUCCESS" {
		t.Errorf("a task sent after one with a 300-character id: %+v", res)
	}
	refusedLogged(t, logs, poison)
	if l := logs.Lines(refusedMsg); len(l) > 0 && !strings.Contains(l[0]["error"].(string), "22001") {
		t.Errorf("the log line does not carry PostgreSQL's error: %v", l[0])
	}
	stopAndCheckSettled(t, srv, r)
}

// A result Redis refuses (WRONGTYPE: the task's result key holds a hash) is
// logged and acknowledged, whether the broker's database is the result
// backend (results stored and messages acknowledged in one script) or not.
func TestRedisRefusedResultDoesNotWedgeTheWorker(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc      string
		ownBroker bool
	}{
		{desc: "broker is the result backend"},
		{desc: "result backend of its own", ownBroker: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			r := testpeers.Redis(t)
			results := r
			if tc.ownBroker {
				results = testpeers.Redis(t)
			}
			py := testpeers.Celery(t, r.URL)
			py.BackendURL = results.URL
			const poison = "refused-result-0001"
			results.Do(t, "HSET", "celery-task-meta-"+poison, "not", "a string")
			logs := &testpeers.LogBuffer{}
			srv := startLogged(t, worker.Config{BrokerURL: r.URL, ResultBackendURL: results.URL, Concurrency: 2}, logs)

			sendWithID(t, r.URL, poison)
			id := py.Send(t, testpeers.SendOptions{Task: worker.PingTask})
			if res, cerr := py.Get(t, id, 20*time.Second); cerr != nil || !jsonEqual(res, `"pong"`) {
				t.Errorf("a task sent after one whose result Redis refuses: %s %v", res, cerr)
			}
			refusedLogged(t, logs, poison)
			stopAndCheckSettled(t, srv, r)
		})
	}
}
