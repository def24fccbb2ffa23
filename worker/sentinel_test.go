package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
)

// A Django app on sentinel://…;sentinel://… with master_name: certmgr
// consumes through the sentinels, the master is killed mid-stream, the
// worker follows the promoted replica and every queued task runs and has its
// result (a task acknowledged on the old master just before it died may run
// twice: at-least-once, as with Celery).
func TestSentinelFailoverLosesNothing(t *testing.T) {
	t.Parallel()
	rs := testpeers.StartRedisSentinels(t)
	rec := testpeers.Redis(t) // who ran what, outside the failing cluster
	testpeers.Celery(t, rec.URL)
	url := rs.URL(0)
	const opts = `{"master_name": "mymaster"}`
	py := pyOptions{broker: url, options: opts, backendOptions: opts}

	const n = 60
	ids := strings.Fields(py.run(t, 2*time.Minute, "send", "--task", "test.record", "--args", `["runs"]`, "--count", "60"))
	if len(ids) != n {
		t.Fatalf("sent %d", len(ids))
	}
	master := rs.Master(t)
	replica := rs.Other(master)
	rc := rs.Conn(t, replica, 0)
	testpeers.Until(t, 30*time.Second, "the replica holds every message", func() bool {
		l, _ := redis.Int(rc.Do("LLEN", "certmgr"))
		return l == n
	})
	rc.Close()

	mux := worker.NewServeMux()
	mux.Handle("test.record", recordHandler(rec.Pool()))
	slow := worker.HandlerFunc(func(ctx context.Context, task *worker.Task) error {
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		return mux.ProcessTask(ctx, task)
	})
	outer := worker.NewServeMux()
	outer.Handle("test.record", slow)
	runServerMux(t, worker.Config{BrokerURL: url, BrokerTransportOptions: opts, Concurrency: 2, Prefetch: 2,
		VisibilityTimeout: 3 * time.Second, RefreshInterval: 500 * time.Millisecond, RestoreInterval: time.Second}, outer)

	testpeers.Until(t, 60*time.Second, "a quarter of the tasks ran", func() bool { return len(runs(t, rec, "runs")) >= n/4 })
	rs.Kill(master)
	t.Logf("master on %d killed after %d tasks", master, len(runs(t, rec, "runs")))
	testpeers.Until(t, 30*time.Second, "the sentinels promote the replica", func() bool { return rs.Master(t) == replica })

	testpeers.Until(t, 90*time.Second, "every task ran", func() bool { return len(runs(t, rec, "runs")) == n })
	got := runs(t, rec, "runs")
	twice := 0
	for _, id := range ids {
		switch c := len(got[id]); {
		case c == 0:
			t.Errorf("task %s never ran", id)
		case c > 1:
			twice++
		}
	}
	t.Logf("%d of %d tasks ran twice across the failover", twice, n)
	nc := rs.Conn(t, replica, 0)
	defer nc.Close()
	testpeers.Until(t, 30*time.Second, "every result on the new master", func() bool {
		for _, id := range ids {
			if ok, _ := redis.Bool(nc.Do("EXISTS", "celery-task-meta-"+id)); !ok {
				return false
			}
		}
		return true
	})
	if res := py.get(t, ids[n-1]); res.State != "SUCCESS" || string(res.Result) != `"go"` {
		t.Errorf("AsyncResult through the sentinels: %+v", res)
	}
	testpeers.Until(t, 30*time.Second, "nothing left queued or unacknowledged", func() bool {
		q, _ := redis.Int(nc.Do("LLEN", "certmgr"))
		u, _ := redis.Int(nc.Do("HLEN", "unacked"))
		return q == 0 && u == 0
	})
}
