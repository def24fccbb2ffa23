package compat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/midsummer/certmgr/worker"
)

// standIns registers the Go twins of testdata/compat_app.py's tasks. Each
// appends [name, args, kwargs] to compat:calls, as the Python ones do.
func standIns(mux *worker.ServeMux, pool *redis.Pool) {
	logged := func(name string, fn func(ctx context.Context, t *worker.Task) error) {
		mux.HandleFunc(name, func(ctx context.Context, t *worker.Task) error {
			entry, err := json.Marshal([]any{name, t.Args, t.Kwargs})
			if err != nil {
				return err
			}
			c, err := pool.GetContext(ctx)
			if err != nil {
				return err
			}
			_, err = c.Do("RPUSH", "compat:calls", entry)
			c.Close()
			if err != nil {
				return err
			}
			return fn(ctx, t)
		})
	}
	logged("compat.add", func(_ context.Context, t *worker.Task) error {
		var x, y json.Number
		if err := errors.Join(t.Arg(0, &x), t.Arg(1, &y)); err != nil {
			return worker.Fail("TypeError", err)
		}
		t.SetResult(add(x, y))
		return nil
	})
	logged("compat.tsum", func(_ context.Context, t *worker.Task) error {
		var values []json.Number
		if err := t.Arg(0, &values); err != nil {
			return worker.Fail("TypeError", err)
		}
		sum := json.Number("0")
		for _, v := range values {
			sum = add(sum, v)
		}
		t.SetResult(sum)
		return nil
	})
	logged("compat.echo", func(_ context.Context, t *worker.Task) error {
		t.SetResult([]any{t.Args, t.Kwargs})
		return nil
	})
	logged("compat.on_error", func(_ context.Context, t *worker.Task) error {
		t.SetResult("handled")
		return nil
	})
	logged("compat.fail", func(_ context.Context, t *worker.Task) error {
		return worker.Fail("ValueError", errors.New(argString(t, 0)))
	})
	logged("compat.fail_custom", func(_ context.Context, t *worker.Task) error {
		return &worker.TaskError{Type: "CompatError", Module: "compat_app", Err: errors.New(argString(t, 0))}
	})
	logged("compat.flaky", func(_ context.Context, t *worker.Task) error {
		var times int
		if err := t.Arg(0, &times); err != nil {
			return worker.Fail("TypeError", err)
		}
		if t.Retries < times {
			return worker.RetryAfter(100 * time.Millisecond)
		}
		t.SetResult(t.Retries)
		return nil
	})
	logged("compat.retry_forever", func(context.Context, *worker.Task) error {
		return worker.RetryAfter(100 * time.Millisecond)
	})
	logged("compat.retry_forever_exc", func(_ context.Context, t *worker.Task) error {
		return fmt.Errorf("%w: %w", worker.RetryAfter(100*time.Millisecond), worker.Fail("ValueError", errors.New(argString(t, 0))))
	})
	logged("compat.retry_limited", func(context.Context, *worker.Task) error {
		return worker.RetryAfterMax(100*time.Millisecond, 1)
	})
	logged("compat.sleep", func(ctx context.Context, t *worker.Task) error {
		var seconds json.Number
		if err := t.Arg(0, &seconds); err != nil {
			return worker.Fail("TypeError", err)
		}
		f, _ := seconds.Float64()
		select {
		case <-time.After(time.Duration(f * float64(time.Second))):
		case <-ctx.Done():
			return ctx.Err()
		}
		t.SetResult(seconds)
		return nil
	})
}

// add adds two JSON numbers as Python would: integers stay integers.
func add(x, y json.Number) json.Number {
	if a, err := x.Int64(); err == nil {
		if b, err := y.Int64(); err == nil {
			return json.Number(fmt.Sprint(a + b))
		}
	}
	a, _ := x.Float64()
	b, _ := y.Float64()
	return json.Number(fmt.Sprint(a + b))
}

func argString(t *worker.Task, i int) string {
	var s any
	_ = t.Arg(i, &s)
	if str, ok := s.(string); ok {
		return str
	}
	return fmt.Sprint(s)
}
