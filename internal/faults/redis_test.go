package faults

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// Redis killed (SIGKILL) and started again on the same port while 1,000
// certmgr.ping tasks are queued and being consumed. The broker runs as one
// that must not lose queued messages is run: append-only file, fsync always
// (a Redis without persistence loses its queue on a restart, which no client
// can undo). Every task completes: its SUCCESS result is in the backend and
// Python Celery reads it; the worker stays up throughout and nothing is left
// queued, unacknowledged or dead.
func TestRedisRestartUnderLoad(t *testing.T) {
	t.Parallel()
	const total = 1000
	skipShort(t)
	rs := testpeers.StartDurableRedisServer(t)
	s := newStack(t, stackOptions{redisURL: rs.URL})
	ids := s.celery.SendMany(t, testpeers.SendOptions{Task: "certmgr.ping", Count: total})
	if len(ids) != total || s.llen("certmgr") != total {
		t.Fatalf("sent %d ids, queue holds %d; want %d", len(ids), s.llen("certmgr"), total)
	}

	w := s.startWorker("w1")
	// Kill Redis once consumption is under way, with most tasks still queued.
	c := s.redis.Get()
	left := total
	deadline := time.Now().Add(60 * time.Second)
	for left > total-50 {
		n, err := redis.Int(c.Do("LLEN", "certmgr"))
		if err != nil {
			t.Fatal(err)
		}
		left = n
		if time.Now().After(deadline) {
			t.Fatalf("the worker consumed nothing in 60s")
		}
	}
	c.Close()
	rs.Stop()
	if left == 0 {
		t.Fatalf("the queue was already empty when Redis was killed: the fault came too late")
	}
	t.Logf("Redis killed with %d of %d tasks still queued", left, total)
	// The worker keeps retrying the broker; it must not exit meanwhile.
	outage := time.Now().Add(2 * time.Second)
	for time.Now().Before(outage) {
		if !w.alive() {
			t.Fatalf("the worker exited while Redis was down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Every id below must reach SUCCESS although most were queued when
	// Redis died: the broker kept them, and the worker reconnected.
	rs.Start(t)

	var missing []string
	testpeers.Until(t, 120*time.Second, "every task's SUCCESS result", func() bool {
		missing = missing[:0]
		c := s.redis.Get()
		defer c.Close()
		keys := make([]any, len(ids))
		for i, id := range ids {
			keys[i] = "celery-task-meta-" + id
		}
		vals, err := redis.ByteSlices(c.Do("MGET", keys...))
		if err != nil {
			return false
		}
		for i, v := range vals {
			var m resultMeta
			if v == nil || json.Unmarshal(v, &m) != nil || m.Status != "SUCCESS" || string(m.Result) != `"pong"` {
				missing = append(missing, ids[i])
			}
		}
		return len(missing) == 0
	})
	if !w.alive() {
		t.Fatalf("the worker exited")
	}
	// Python Celery reads the results (first, last and one in the middle).
	for _, id := range []string{ids[0], ids[total/2], ids[total-1]} {
		if raw, cerr := s.celery.Get(t, id, 10*time.Second); cerr != nil || string(raw) != `"pong"` {
			t.Errorf("AsyncResult(%s).get() = %s %v", id, raw, cerr)
		}
	}
	testpeers.Until(t, 10*time.Second, "the last acks", func() bool { return s.hlen("unacked") == 0 })
	s.quiet()
	if n := s.llen("certmgr.dead"); n != 0 {
		t.Errorf("%d messages were dead-lettered", n)
	}
	// At-least-once: a task whose ack was lost with the Redis process runs
	// again after the visibility timeout; its result is the same.
	runs := map[string]int{}
	for _, id := range ids {
		runs[id] = succeeded(w.logText(), id)
	}
	twice := 0
	for _, n := range runs {
		if n > 1 {
			twice++
		}
	}
	t.Logf("%d task(s) ran twice (acks lost with the Redis process)", twice)
}
