package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
)

// countLevel is how many of the JSON lines logged so far have level.
func countLevel(logs *testpeers.LogBuffer, level string) int {
	return strings.Count(logs.String(), `"level":"`+level+`"`)
}

func TestBrokerOutageReconnectsQuietly(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("stops and restarts a redis-server")
	}
	rs := testpeers.StartRedisServer(t)
	logs := &testpeers.LogBuffer{}
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
	testpeers.Until(t, 10*time.Second, "the worker to notice the outage", func() bool { return countLevel(logs, "error") > 0 })
	time.Sleep(3 * time.Second) // the outage itself: several backoff rounds of fetch, heartbeat, control
	rs.Start(t)

	id = py.Send(t, testpeers.SendOptions{Task: worker.PingTask})
	if res, cerr := py.Get(t, id, 30*time.Second); cerr != nil || !jsonEqual(res, `"pong"`) {
		t.Fatalf("after the outage: %s %v", res, cerr)
	}
	// Fetch, heartbeat, refresh and remote control all failed for seconds;
	// the rate limit lets through one line per 10s.
	if n := countLevel(logs, "error"); n > 3 {
		t.Errorf("%d error lines for a 3s outage: logs are flooded", n)
	}
}
