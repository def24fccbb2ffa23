package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
)

// matrixProducer is the Django side of one broker × result backend row:
// Python Celery sending a task and reading its result, and sending a chord.
type matrixProducer interface {
	call(t *testing.T, task string) pyResult
	chord(t *testing.T) pyResult
}

func (p pyOptions) chord(t *testing.T) pyResult {
	t.Helper()
	var r pyResult
	if err := json.Unmarshal([]byte(p.run(t, 2*time.Minute, "chord", "--timeout", "30")), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// pyCaller adapts pyOptions (send and AsyncResult.get in one process, which
// rpc:// needs) to matrixProducer.
type pyCaller struct{ pyOptions }

func (p pyCaller) call(t *testing.T, task string) pyResult { return p.pyOptions.call(t, task, "[]") }

// djCaller reads results through django-celery-results' DatabaseBackend.
type djCaller struct{ dj djangoApp }

func (d djCaller) call(t *testing.T, task string) pyResult {
	return d.dj.get(t, d.dj.run(t, "send", "--task", task))
}

func (d djCaller) chord(t *testing.T) pyResult { return d.dj.get(t, d.dj.run(t, "chord")) }

// matrixRun counts what the row's handlers did, for the disabled backend
// where no result can be read.
type matrixRun struct{ fails, tries, retried atomic.Int32 }

func (m *matrixRun) mux() *worker.ServeMux {
	mux := worker.NewServeMux()
	worker.RegisterBuiltins(mux)
	mux.HandleFunc("test.fail", func(ctx context.Context, task *worker.Task) error {
		m.fails.Add(1)
		return worker.Fail("ValueError", errors.New("boom"))
	})
	mux.HandleFunc("test.retry", func(ctx context.Context, task *worker.Task) error {
		if m.tries.Add(1) == 1 {
			return fmt.Errorf("%w: not yet", worker.RetryAfter(200*time.Millisecond))
		}
		m.retried.Add(1)
		task.SetResult("ok")
		return nil
	})
	mux.HandleFunc("test.add", func(ctx context.Context, task *worker.Task) error {
		var a, b int
		if err := task.Arg(0, &a); err != nil {
			return err
		}
		if err := task.Arg(1, &b); err != nil {
			return err
		}
		task.SetResult(a + b)
		return nil
	})
	mux.HandleFunc("test.sum", func(ctx context.Context, task *worker.Task) error {
		var xs []int
		if err := task.Arg(0, &xs); err != nil {
			return err
		}
		sum := 0
		for _, x := range xs {
			sum += x
		}
		task.SetResult(sum)
		return nil
	})
	return mux
}

// Every broker × result backend pair the README's configuration section
// supports, with Python Celery as the producer: `celery inspect ping` is
// answered, a failing task is a FAILURE with its exception class and
// message, a retried task ends in SUCCESS, and a chord joins (10 = sum of
// 1+2 and 3+4) — or, on rpc:// and disabled, Celery refuses to start it
// with NotImplementedError naming the reason, at once, as it does with a
// Python worker. With disabled no result can be read: the handlers' own
// counts show the failure ran and the retry ran twice and succeeded.
func TestBrokerBackendMatrix(t *testing.T) {
	t.Parallel()
	type env struct {
		cfg      worker.Config
		ping     pyOptions // inspect ping goes through the broker only
		producer matrixProducer
	}
	redisURL := func(t *testing.T) string { r := testpeers.Redis(t); return r.URL }
	rows := []struct {
		name     string
		setup    func(t *testing.T) env
		disabled bool   // no result backend: nothing to read
		refusal  string // the chord is refused with this in the message
	}{
		{name: "redis×redis", setup: func(t *testing.T) env {
			url := redisURL(t)
			py := pyOptions{broker: url, options: "{}"}
			return env{worker.Config{BrokerURL: url}, py, pyCaller{py}}
		}},
		{name: "rediss×rediss", setup: func(t *testing.T) env {
			url := testpeers.StartRedisTLS(t).URL(0)
			py := pyOptions{broker: url, options: "{}"}
			return env{worker.Config{BrokerURL: url}, py, pyCaller{py}}
		}},
		{name: "redis+socket×redis+socket", setup: func(t *testing.T) env {
			url := "redis+socket://" + testpeers.StartRedisSocket(t).Path
			py := pyOptions{broker: url, options: "{}"}
			return env{worker.Config{BrokerURL: url}, py, pyCaller{py}}
		}},
		{name: "sentinel×sentinel", setup: func(t *testing.T) env {
			url := testpeers.StartRedisSentinels(t).URL(0)
			const opts = `{"master_name": "mymaster"}`
			py := pyOptions{broker: url, options: opts, backendOptions: opts}
			return env{worker.Config{BrokerURL: url, BrokerTransportOptions: opts}, py, pyCaller{py}}
		}},
		{name: "redis×django-db", setup: func(t *testing.T) env {
			requireDjangoCeleryResults(t)
			url, pg := redisURL(t), testpeers.Postgres(t)
			dj := djangoApp{pg: pg, broker: url}
			dj.run(t, "migrate")
			return env{worker.Config{BrokerURL: url, ResultBackendURL: worker.BackendDjangoDB, DatabaseURL: pg.URL},
				pyOptions{broker: url, options: "{}"}, djCaller{dj}}
		}},
		{name: "amqp×redis", setup: func(t *testing.T) env {
			rb, backend := testpeers.RabbitMQ(t), redisURL(t)
			py := pyOptions{broker: rb.URL, backend: backend, options: "{}"}
			return env{worker.Config{BrokerURL: rb.URL, ResultBackendURL: backend}, py, pyCaller{py}}
		}},
		{name: "amqp×django-db", setup: func(t *testing.T) env {
			requireDjangoCeleryResults(t)
			rb, pg := testpeers.RabbitMQ(t), testpeers.Postgres(t)
			dj := djangoApp{pg: pg, broker: rb.URL}
			dj.run(t, "migrate")
			return env{worker.Config{BrokerURL: rb.URL, ResultBackendURL: worker.BackendDjangoDB, DatabaseURL: pg.URL},
				pyOptions{broker: rb.URL, options: "{}"}, djCaller{dj}}
		}},
		{name: "amqp×rpc", refusal: "does not support chords", setup: func(t *testing.T) env {
			rb := testpeers.RabbitMQ(t)
			py := pyOptions{broker: rb.URL, backend: "rpc://", options: "{}"}
			return env{worker.Config{BrokerURL: rb.URL, ResultBackendURL: "rpc://"}, py, pyCaller{py}}
		}},
		{name: "amqp×disabled", disabled: true, refusal: "requires a result backend", setup: func(t *testing.T) env {
			rb := testpeers.RabbitMQ(t)
			py := pyOptions{broker: rb.URL, backend: "disabled", options: "{}"}
			return env{worker.Config{BrokerURL: rb.URL, ResultBackendURL: worker.BackendDisabled}, py, pyCaller{py}}
		}},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			t.Parallel()
			testpeers.Celery(t, "") // Python Celery must be there (CI fails without)
			e := row.setup(t)
			var m matrixRun
			runServerMux(t, e.cfg, m.mux())
			e.ping.inspectPing(t, "certmgr@"+strings.ReplaceAll(t.Name(), "/", "_"))

			if row.disabled {
				for _, task := range []string{"test.fail", "test.retry"} {
					e.ping.run(t, time.Minute, "send", "--task", task)
				}
				testpeers.Until(t, 30*time.Second, "the failing task ran and the retried one succeeded", func() bool {
					return m.fails.Load() == 1 && m.retried.Load() == 1
				})
				if n := m.tries.Load(); n != 2 {
					t.Errorf("retried task ran %d times, want 2", n)
				}
			} else {
				if res := e.producer.call(t, "test.fail"); res.State != "FAILURE" || res.ExcType != "ValueError" || res.Message != "boom" {
					t.Errorf("failure: %+v", res)
				}
				if res := e.producer.call(t, "test.retry"); res.State != "SUCCESS" || string(res.Result) != `"ok"` || m.tries.Load() != 2 {
					t.Errorf("retry: %+v after %d tries", res, m.tries.Load())
				}
			}

			res := e.producer.chord(t)
			switch {
			case row.refusal == "":
				if res.State != "SUCCESS" || string(res.Result) != "10" {
					t.Errorf("chord: %+v", res)
				}
			case res.State != "REFUSED" || res.ExcType != "NotImplementedError" || !strings.Contains(res.Message, row.refusal):
				t.Errorf("chord on a backend without chords: %+v, want NotImplementedError %q", res, row.refusal)
			}
		})
	}
}
