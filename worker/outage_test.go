package worker_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
)

// syncBuffer collects log lines from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) count(level string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), `"level":"`+level+`"`)
}

func TestBrokerOutageReconnectsQuietly(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("stops and restarts a redis-server")
	}
	rs := testpeers.StartRedisServer(t)
	logs := &syncBuffer{}
	mux := worker.NewServeMux()
	worker.RegisterBuiltins(mux)
	srv, err := worker.NewServer(worker.Config{
		BrokerURL:    rs.URL,
		Hostname:     "certmgr@outage",
		PollInterval: 100 * time.Millisecond,
		Logger:       zerolog.New(logs),
	}, mux)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	py := testpeers.Celery(t, rs.URL)
	id := py.Send(t, testpeers.SendOptions{Task: worker.PingTask})
	if _, cerr := py.Get(t, id, 30*time.Second); cerr != nil {
		t.Fatal(cerr)
	}

	rs.Stop()
	testpeers.Until(t, 10*time.Second, "the worker to notice the outage", func() bool { return logs.count("error") > 0 })
	time.Sleep(3 * time.Second) // the outage itself: several backoff rounds of fetch, heartbeat, control
	rs.Start(t)

	id = py.Send(t, testpeers.SendOptions{Task: worker.PingTask})
	if res, cerr := py.Get(t, id, 30*time.Second); cerr != nil || !jsonEqual(res, `"pong"`) {
		t.Fatalf("after the outage: %s %v", res, cerr)
	}
	// Fetch, heartbeat, refresh and remote control all failed for seconds;
	// the rate limit lets through one line per 10s.
	if n := logs.count("error"); n > 3 {
		t.Errorf("%d error lines for a 3s outage: logs are flooded", n)
	}
}
