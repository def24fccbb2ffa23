package redisbroker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker/internal/celery"
)

type setup struct {
	redis  *testpeers.RedisPeer
	broker *Broker
}

func newSetup(t *testing.T, vt time.Duration) *setup {
	t.Helper()
	r := testpeers.Redis(t)
	b, err := New(Config{URL: r.URL, Queue: "certmgr", VisibilityTimeout: vt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &setup{redis: r, broker: b}
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "celery", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFetchWritesUnackedLikeKombu(t *testing.T) {
	t.Parallel()
	s := newSetup(t, time.Hour)
	ctx := context.Background()
	// The fixture is the value kombu HSETs: [message, exchange, routing_key].
	want := fixture(t, "unacked_hset_value.json")
	msg := want[1 : strings.Index(string(want), `}}, "", "certmgr"]`)+2]
	s.redis.Do(t, "LPUSH", "certmgr", msg)

	before := time.Now()
	ds, err := s.broker.Fetch(ctx, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Tag != "bf5f190d-92ea-45fc-9833-94001e5c304f" || string(ds[0].Raw) != string(msg) {
		t.Fatalf("deliveries = %+v", ds)
	}
	got, _ := redis.Bytes(s.redis.Do(t, "HGET", UnackedKey, ds[0].Tag), nil)
	if string(got) != strings.TrimSpace(string(want)) {
		t.Errorf("unacked value\n got %s\nwant %s", got, want)
	}
	score, _ := redis.Float64(s.redis.Do(t, "ZSCORE", UnackedIndexKey, ds[0].Tag), nil)
	if score < float64(before.Unix())-1 || score > float64(time.Now().Unix())+1 {
		t.Errorf("unacked_index score %f is not now", score)
	}
	if n, _ := redis.Int(s.redis.Do(t, "LLEN", "certmgr"), nil); n != 0 {
		t.Errorf("queue still has %d", n)
	}

	if err := s.broker.Ack(ctx, ds[0].Tag); err != nil {
		t.Fatal(err)
	}
	if n, _ := redis.Int(s.redis.Do(t, "HLEN", UnackedKey), nil); n != 0 {
		t.Errorf("unacked has %d after ack", n)
	}
	if n, _ := redis.Int(s.redis.Do(t, "ZCARD", UnackedIndexKey), nil); n != 0 {
		t.Errorf("unacked_index has %d after ack", n)
	}
}

func TestFetchServesPriorityZeroFirst(t *testing.T) {
	t.Parallel()
	s := newSetup(t, time.Hour)
	p5 := fixture(t, "p2_apply_async_priority5__db0__certmgr__SEP__3__0.json")
	p0 := fixture(t, "p2_send_task__db0__certmgr__0.json")
	s.redis.Do(t, "LPUSH", "certmgr\x06\x163", p5)
	s.redis.Do(t, "LPUSH", "certmgr", p0)
	ds, err := s.broker.Fetch(context.Background(), 1, 0)
	if err != nil || len(ds) != 1 || ds[0].Queue != "certmgr" {
		t.Fatalf("first = %+v, %v", ds, err)
	}
	ds, err = s.broker.Fetch(context.Background(), 5, 0)
	if err != nil || len(ds) != 1 || ds[0].Queue != "certmgr\x06\x163" {
		t.Fatalf("second = %+v, %v", ds, err)
	}
}

func TestFetchWaitsWithoutTaking(t *testing.T) {
	t.Parallel()
	s := newSetup(t, time.Hour)
	ctx := context.Background()
	done := make(chan []Delivery)
	go func() {
		ds, err := s.broker.Fetch(ctx, 1, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- ds
	}()
	// Push once the fetch is blocked in BLMOVE.
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, _ := redis.String(s.redis.Do(t, "CLIENT", "LIST"), nil)
		if strings.Contains(info, "cmd=blmove") || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.redis.Do(t, "LPUSH", "certmgr", fixture(t, "p2_send_task__db0__certmgr__0.json"))
	ds := <-done
	if len(ds) != 1 {
		t.Fatalf("got %d deliveries", len(ds))
	}
}

func TestUndecodableGoesToDeadList(t *testing.T) {
	t.Parallel()
	s := newSetup(t, time.Hour)
	s.redis.Do(t, "LPUSH", "certmgr", "not json at all")
	ds, err := s.broker.Fetch(context.Background(), 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Tag != "" {
		t.Fatalf("deliveries = %+v", ds)
	}
	got, _ := redis.String(s.redis.Do(t, "RPOP", "certmgr.dead"), nil)
	if got != "not json at all" {
		t.Errorf("dead list has %q", got)
	}
}

func TestRestoreVisibleRequeuesExpiredOnly(t *testing.T) {
	t.Parallel()
	s := newSetup(t, 10*time.Second)
	ctx := context.Background()
	s.redis.Do(t, "LPUSH", "certmgr", fixture(t, "p2_send_task__db0__certmgr__0.json"))
	s.redis.Do(t, "LPUSH", "certmgr", fixture(t, "p2_send_task_expires3600__db0__certmgr__0.json"))
	ds, err := s.broker.Fetch(ctx, 10, 0)
	if err != nil || len(ds) != 2 {
		t.Fatalf("fetch: %v, %d", err, len(ds))
	}
	// One holder died long ago (old score); the other is being refreshed.
	s.redis.Do(t, "ZADD", UnackedIndexKey, time.Now().Add(-time.Minute).Unix(), ds[0].Tag)
	if err := s.broker.Refresh(ctx, []string{ds[1].Tag}); err != nil {
		t.Fatal(err)
	}
	n, err := s.broker.RestoreVisible(ctx)
	if err != nil || n != 1 {
		t.Fatalf("restored %d, %v", n, err)
	}
	raw, _ := redis.Bytes(s.redis.Do(t, "RPOP", "certmgr"), nil)
	env, err := celery.ParseEnvelope(raw)
	if err != nil || env.Properties.DeliveryTag != ds[0].Tag || !strings.Contains(string(raw), `"redelivered":true`) {
		t.Fatalf("restored %s (%v)", raw, err)
	}
	if ok, _ := redis.Bool(s.redis.Do(t, "HEXISTS", UnackedKey, ds[1].Tag), nil); !ok {
		t.Error("the refreshed message was restored")
	}
	if ok, _ := redis.Bool(s.redis.Do(t, "EXISTS", UnackedMutexKey), nil); ok {
		t.Error("unacked_mutex left behind")
	}
}

func TestRestoreVisibleRespectsMutex(t *testing.T) {
	t.Parallel()
	s := newSetup(t, 10*time.Second)
	s.redis.Do(t, "SET", UnackedMutexKey, "someone-else")
	s.redis.Do(t, "LPUSH", "certmgr", fixture(t, "p2_send_task__db0__certmgr__0.json"))
	ds, _ := s.broker.Fetch(context.Background(), 1, 0)
	s.redis.Do(t, "ZADD", UnackedIndexKey, 1, ds[0].Tag)
	n, err := s.broker.RestoreVisible(context.Background())
	if err != nil || n != 0 {
		t.Fatalf("restored %d under another's mutex (%v)", n, err)
	}
}

func TestRepublishAndDeadLetterAreAtomicMoves(t *testing.T) {
	t.Parallel()
	s := newSetup(t, time.Hour)
	ctx := context.Background()
	s.redis.Do(t, "LPUSH", "certmgr", fixture(t, "p2_send_task__db0__certmgr__0.json"))
	s.redis.Do(t, "LPUSH", "certmgr", fixture(t, "p1_send_task__db0__certmgr__0.json"))
	ds, _ := s.broker.Fetch(ctx, 2, 0)
	if err := s.broker.Republish(ctx, ds[0].Tag, []byte(`{"new":1}`), 6); err != nil {
		t.Fatal(err)
	}
	if err := s.broker.DeadLetter(ctx, ds[1].Tag, ds[1].Raw); err != nil {
		t.Fatal(err)
	}
	if v, _ := redis.String(s.redis.Do(t, "LINDEX", "certmgr\x06\x166", 0), nil); v != `{"new":1}` {
		t.Errorf("republished = %q", v)
	}
	if v, _ := redis.Bytes(s.redis.Do(t, "LINDEX", "certmgr.dead", 0), nil); string(v) != string(ds[1].Raw) {
		t.Errorf("dead = %q", v)
	}
	if n, _ := redis.Int(s.redis.Do(t, "HLEN", UnackedKey), nil); n != 0 {
		t.Errorf("unacked has %d", n)
	}
}

// Redis before 6.2 has no BLMOVE: the blocking peek uses BRPOPLPUSH, chosen
// by the broker's own switch (Config.brpoplpush) or on the server's "unknown
// command" (a real redis-server with BLMOVE renamed away). Either way the
// fetch wakes on a push and takes the message, and nothing is lost or
// reordered on the way.
func TestFetchWaitsWithoutBLMOVE(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		url  func(t *testing.T) string
		cfg  Config
	}{
		{desc: "forced", url: func(t *testing.T) string { return testpeers.Redis(t).URL }, cfg: Config{brpoplpush: true}},
		{desc: "server without BLMOVE", url: func(t *testing.T) string { return testpeers.StartRedisWithout(t, "BLMOVE") }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg
			cfg.URL, cfg.Queue, cfg.VisibilityTimeout = tc.url(t), "certmgr", time.Hour
			b, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			c, err := redis.DialURL(cfg.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			for round := range 2 { // the second round starts with BRPOPLPUSH
				done := make(chan []Delivery)
				go func() {
					ds, err := b.Fetch(ctx, 10, 10*time.Second)
					if err != nil {
						t.Error(err)
					}
					done <- ds
				}()
				testpeers.Until(t, 10*time.Second, "the fetch blocks in BRPOPLPUSH", func() bool {
					info, _ := redis.String(c.Do("CLIENT", "LIST"))
					return strings.Contains(info, "cmd=brpoplpush")
				})
				if _, err := c.Do("LPUSH", "certmgr", fixture(t, "p2_send_task__db0__certmgr__0.json")); err != nil {
					t.Fatal(err)
				}
				ds := <-done
				if len(ds) != 1 || ds[0].Tag == "" {
					t.Fatalf("round %d: got %+v", round, ds)
				}
				if n, _ := redis.Int(c.Do("LLEN", "certmgr")); n != 0 {
					t.Errorf("round %d: %d messages left in the queue", round, n)
				}
			}
		})
	}
}
