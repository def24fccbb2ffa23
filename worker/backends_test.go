package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/jackc/pgx/v5"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
)

// djangoApp runs testdata/django_results.py: a Django project with
// django-celery-results on the test's PostgreSQL schema.
type djangoApp struct {
	pg       *testpeers.PostgresPeer
	broker   string
	extended bool // result_extended = True
}

func (d djangoApp) run(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args = append([]string{"testdata/django_results.py", args[0], "--db", d.pg.URL, "--schema", d.pg.Schema, "--broker", d.broker}, args[1:]...)
	if d.extended {
		args = append(args, "--extended")
	}
	out, err := exec.CommandContext(ctx, testpeers.Python, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("django_results.py %s: %v\n%s", args[1], err, stderr)
	}
	return strings.TrimSpace(string(out))
}

func (d djangoApp) get(t *testing.T, id string) pyResult {
	t.Helper()
	var r pyResult
	if err := json.Unmarshal([]byte(d.run(t, "get", "--id", id, "--timeout", "30")), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func requireDjangoCeleryResults(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(testpeers.Python, "-c", "import django, django_celery_results, psycopg2").CombinedOutput(); err != nil {
		msg := "python3-django-celery-results / python3-psycopg2 missing (scripts/setup-peers.sh installs them): " + string(out)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// taskRow is a django_celery_results_taskresult row without its id, task_id
// and dates.
type taskRow struct {
	Status, ContentType, ContentEncoding                            string
	Result, Meta, Traceback, TaskName, TaskArgs, TaskKwargs, Worker *string
	HasCreated, HasDone                                             bool
}

func readRow(t *testing.T, pg *testpeers.PostgresPeer, taskID string) taskRow {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var r taskRow
	err = c.QueryRow(ctx, `SELECT status, content_type, content_encoding, result, meta, traceback, task_name,
		task_args, task_kwargs, worker, date_created IS NOT NULL, date_done IS NOT NULL
		FROM django_celery_results_taskresult WHERE task_id = $1`, taskID).Scan(&r.Status, &r.ContentType,
		&r.ContentEncoding, &r.Result, &r.Meta, &r.Traceback, &r.TaskName, &r.TaskArgs, &r.TaskKwargs, &r.Worker,
		&r.HasCreated, &r.HasDone)
	if err != nil {
		t.Fatalf("row of %s: %v", taskID, err)
	}
	return r
}

func str(p *string) string {
	if p == nil {
		return "NULL"
	}
	return *p
}

// CELERY_RESULT_BACKEND = 'django-db': certmgr writes the rows
// django-celery-results' DatabaseBackend writes (compared column by column
// with rows DatabaseBackend wrote itself), in the tables its own migrations
// made, and AsyncResult in Django reads success and failure from them.
func TestDjangoDBResultBackend(t *testing.T) {
	t.Parallel()
	requireDjangoCeleryResults(t)
	r := testpeers.Redis(t)
	pg := testpeers.Postgres(t)
	testpeers.Celery(t, r.URL)
	dj := djangoApp{pg: pg, broker: r.URL}
	dj.run(t, "migrate")

	// The broker × backend matrix's handlers: test.fail, test.retry (once
	// retried, then "ok"), test.add and test.sum.
	var run matrixRun
	mux := run.mux()
	runServerMux(t, worker.Config{BrokerURL: r.URL, ResultBackendURL: worker.BackendDjangoDB, DatabaseURL: pg.URL}, mux)

	ok := dj.run(t, "send", "--task", "certmgr.ping")
	if res := dj.get(t, ok); res.State != "SUCCESS" || string(res.Result) != `"pong"` {
		t.Errorf("ping through django-db: %+v", res)
	}
	bad := dj.run(t, "send", "--task", "test.fail")
	if res := dj.get(t, bad); res.State != "FAILURE" || res.ExcType != "ValueError" || res.Message != "boom" {
		t.Errorf("failure through django-db: %+v", res)
	}

	again := dj.run(t, "send", "--task", "test.retry")
	if res := dj.get(t, again); res.State != "SUCCESS" || string(res.Result) != `"ok"` || run.tries.Load() != 2 {
		t.Errorf("retry through django-db: %+v after %d tries", res, run.tries.Load())
	}

	body := dj.run(t, "chord")
	if res := dj.get(t, body); res.State != "SUCCESS" || string(res.Result) != "10" {
		t.Errorf("chord through django-db: %+v", res)
	}
	var counters int
	cc, err := pgx.Connect(context.Background(), pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close(context.Background())
	if err := cc.QueryRow(context.Background(), "SELECT count(*) FROM django_celery_results_chordcounter").Scan(&counters); err != nil || counters != 0 {
		t.Errorf("%d chord counters left (%v)", counters, err)
	}

	dj.run(t, "store", "--id", "python")
	for _, pair := range [][2]string{{ok, "python-ok"}, {bad, "python-fail"}} {
		got, want := readRow(t, pg, pair[0]), readRow(t, pg, pair[1])
		if pair[1] == "python-fail" {
			// Python's exception carries its own module; ours says what
			// the handler chose. Compare the rest of the row.
			var g, w map[string]any
			_ = json.Unmarshal([]byte(str(got.Result)), &g)
			_ = json.Unmarshal([]byte(str(want.Result)), &w)
			if g["exc_type"] != w["exc_type"] || g["exc_message"] == nil {
				t.Errorf("failure result\n got %s\nwant %s", str(got.Result), str(want.Result))
			}
			got.Result, want.Result = nil, nil
		}
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		if string(gj) != string(wj) {
			t.Errorf("row of %s differs from DatabaseBackend's\n got %s\nwant %s", pair[0], gj, wj)
		}
	}
	c := r.Pool().Get()
	defer c.Close()
	if keys, _ := redis.Strings(c.Do("KEYS", "celery-task-meta-*")); len(keys) != 0 {
		t.Errorf("results also went to Redis: %v", keys)
	}
}

// CELERY_RESULT_EXTENDED=true with django-db: certmgr fills task_name,
// task_args, task_kwargs, worker and traceback as DatabaseBackend does with
// result_extended = True (rows compared column by column with the ones it
// wrote for the same request), and AsyncResult reads task_name, args and
// kwargs from them as from DatabaseBackend's own rows.
func TestDjangoDBResultExtended(t *testing.T) {
	t.Parallel()
	requireDjangoCeleryResults(t)
	r := testpeers.Redis(t)
	pg := testpeers.Postgres(t)
	testpeers.Celery(t, r.URL)
	dj := djangoApp{pg: pg, broker: r.URL, extended: true}
	dj.run(t, "migrate")

	mux := (&matrixRun{}).mux()
	runServerMux(t, worker.Config{BrokerURL: r.URL, ResultBackendURL: worker.BackendDjangoDB, DatabaseURL: pg.URL,
		ResultExtended: true}, mux)
	hostname := "certmgr@" + t.Name()

	const args, kwargs = `[2, 3]`, `{"zone": "été.example", "n": [1]}`
	type extendedResult struct {
		pyResult
		Name     *string         `json:"name"`
		TaskName string          `json:"task_name"`
		Args     json.RawMessage `json:"args"`
		Kwargs   json.RawMessage `json:"kwargs"`
	}
	get := func(id string) extendedResult {
		var res extendedResult
		if err := json.Unmarshal([]byte(dj.run(t, "get", "--id", id, "--timeout", "30")), &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	ok := dj.run(t, "send", "--task", "test.add", "--args", args, "--kwargs", kwargs)
	res := get(ok)
	if res.State != "SUCCESS" || string(res.Result) != "5" || res.TaskName != "test.add" {
		t.Errorf("AsyncResult through django-db with result_extended: %+v", res)
	}
	// DatabaseBackend keeps argsrepr and kwargsrepr: AsyncResult.args is
	// the repr string Python's send_task made.
	if string(res.Args) != `"[2, 3]"` || string(res.Kwargs) != `"{'zone': '\u00e9t\u00e9.example', 'n': [1]}"` {
		t.Errorf("AsyncResult args %s kwargs %s", res.Args, res.Kwargs)
	}
	bad := dj.run(t, "send", "--task", "test.fail", "--args", args, "--kwargs", kwargs)
	if res := dj.get(t, bad); res.State != "FAILURE" || res.ExcType != "ValueError" {
		t.Errorf("failure through django-db with result_extended: %+v", res)
	}

	dj.run(t, "store", "--id", "python", "--task", "test.add", "--args", args, "--kwargs", kwargs,
		"--hostname", hostname, "--result", "5")
	// AsyncResult reads the row DatabaseBackend wrote for the same request
	// as it reads ours.
	if py := get("python-ok"); fmt.Sprintf("%+v", py) != fmt.Sprintf("%+v", res) {
		t.Errorf("AsyncResult of certmgr's row %+v, of DatabaseBackend's %+v", res, py)
	}
	ourFail := readRow(t, pg, bad)
	if ourFail.Traceback == nil || !strings.Contains(*ourFail.Traceback, "boom") {
		t.Errorf("failure row keeps no traceback: %s", str(ourFail.Traceback))
	}
	for _, pair := range [][2]string{{ok, "python-ok"}, {bad, "python-fail"}} {
		got, want := readRow(t, pg, pair[0]), readRow(t, pg, pair[1])
		if want.TaskName == nil || want.TaskArgs == nil || want.Worker == nil {
			t.Fatalf("DatabaseBackend wrote no extended columns: %+v", want)
		}
		if pair[1] == "python-fail" {
			// Python's task name, exception module and traceback are its
			// own; the rest of the row must match.
			got.TaskName, got.Result, want.Result = want.TaskName, nil, nil
			got.Traceback, want.Traceback = nil, nil
		}
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		if string(gj) != string(wj) {
			t.Errorf("row of %s differs from DatabaseBackend's with result_extended\n got %s\nwant %s", pair[0], gj, wj)
		}
	}
}

// CELERY_RESULT_BACKEND = 'disabled': tasks run, nothing is stored.
func TestDisabledResultBackend(t *testing.T) {
	t.Parallel()
	r := testpeers.Redis(t)
	cel := testpeers.Celery(t, r.URL)
	mux := worker.NewServeMux()
	ran := make(chan string, 1)
	mux.HandleFunc("test.ran", func(ctx context.Context, task *worker.Task) error {
		ran <- task.ID
		return nil
	})
	runServerMux(t, worker.Config{BrokerURL: r.URL, ResultBackendURL: worker.BackendDisabled}, mux)
	id := cel.Send(t, testpeers.SendOptions{Task: "test.ran"})
	select {
	case got := <-ran:
		if got != id {
			t.Fatalf("ran %s, sent %s", got, id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the task did not run")
	}
	c := r.Pool().Get()
	defer c.Close()
	testpeers.Until(t, 10*time.Second, "the message acknowledged", func() bool {
		n, _ := redis.Int(c.Do("HLEN", "unacked"))
		return n == 0
	})
	if keys, _ := redis.Strings(c.Do("KEYS", "celery-task-meta-*")); len(keys) != 0 {
		t.Errorf("a result was stored: %v", keys)
	}
}

func TestResultBackendRefusedByName(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]string{
		"rpc://":                     "rpc:// replies over AMQP",
		"db+postgresql://u@h/db":     `"db+postgresql" is not supported`,
		"django-cache":               `"django-cache" is not supported`,
		"redis://:hunter2@h:99999/0": "port",
		"django-db-but-misspelt://x": "scheme",
	} {
		err := worker.CheckResultBackend("redis://localhost:6379/0", v)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v", v, err)
		}
	}
}
