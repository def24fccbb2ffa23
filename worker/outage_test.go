package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
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

// Stop during a broker outage, with a message held for its eta (to be given
// back) and the result of a task that finished during the outage (to be
// stored and acknowledged), ends by its deadline: the grace period or Stop's
// ctx, whichever comes first, though no handler runs any more. The messages
// stay in unacked.
func TestStopWithBrokerDownEndsByTheDeadline(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("stops a redis-server")
	}
	for _, tc := range []struct {
		desc    string
		grace   time.Duration
		timeout time.Duration // Stop's ctx; 0: context.Background()
	}{
		{desc: "grace period first", grace: 2 * time.Second},
		{desc: "ctx first", grace: time.Minute, timeout: 2 * time.Second},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			rs := testpeers.StartRedisServer(t)
			mux := worker.NewServeMux()
			worker.RegisterBuiltins(mux)
			started, release := make(chan struct{}), make(chan struct{})
			mux.HandleFunc("test.wait", func(ctx context.Context, _ *worker.Task) error {
				close(started)
				<-release
				return nil
			})
			srv, err := worker.NewServer(worker.Config{
				BrokerURL: rs.URL, Hostname: "certmgr@" + strings.ReplaceAll(t.Name(), "/", "_"),
				PollInterval: 100 * time.Millisecond, ShutdownGrace: tc.grace,
				Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
			}, mux)
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			py := testpeers.Celery(t, rs.URL)
			py.Send(t, testpeers.SendOptions{Task: worker.PingTask, Countdown: 600})
			py.Send(t, testpeers.SendOptions{Task: "test.wait"})
			<-started
			testpeers.Until(t, 10*time.Second, "the eta task held", func() bool {
				n, _ := redis.Int(rs.Do(t, "HLEN", "unacked"), nil)
				return n == 2
			})
			rs.Stop()
			close(release) // its result and ack now wait for Redis

			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			done := make(chan struct{})
			start := time.Now()
			go func() { _ = srv.Stop(ctx); close(done) }()
			// The deadline, the last attempts (3s) and the slack of a loaded machine.
			const bound = 12 * time.Second
			select {
			case <-done:
				t.Logf("Stop returned after %s", time.Since(start).Round(time.Millisecond))
			case <-time.After(bound):
				t.Fatalf("Stop still blocked %s after a 2s deadline with Redis down", bound)
			}
		})
	}
}
