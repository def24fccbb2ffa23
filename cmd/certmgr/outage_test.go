package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// A broker outage is logged once at error level when it starts and once when
// it ends, however long it lasts.
func TestWorkerLogsBrokerOutageAndRecoveryOnce(t *testing.T) {
	t.Parallel()
	env, _, _ := checkEnv(t)
	rs := testpeers.StartRedisServer(t)
	env[EnvBrokerURL] = rs.URL
	env[EnvHTTPAddr] = fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var logs testpeers.LogBuffer
	go func() {
		done <- run(ctx, []string{"--log-format", "json", "worker"}, io.Discard, &logs, func(k string) string { return env[k] })
	}()
	defer func() { cancel(); <-done }()
	count := func(msg string) int { return strings.Count(logs.String(), `"message":"`+msg+`"`) }
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		testpeers.Eventually(t, 30*time.Second, what, func() error {
			if cond() {
				return nil
			}
			return fmt.Errorf("not yet; logs:\n%s", logs.String())
		})
	}
	waitFor("worker start", func() bool { return count("certmgr worker started") == 1 })
	rs.Stop()
	waitFor("the outage logged", func() bool { return count("broker unreachable") == 1 })
	// A negative claim needs a window: three more ping periods while it is
	// down (the watcher pings every outageEvery), and still one line.
	time.Sleep(3 * outageEvery)
	if n := count("broker unreachable"); n != 1 {
		t.Errorf("%d outage lines for one outage", n)
	}
	if !strings.Contains(logs.String(), `"level":"error","component":"peers"`) {
		t.Errorf("outage not at error level:\n%s", logs.String())
	}
	rs.Start(t)
	waitFor("the recovery logged", func() bool { return count("broker reachable again") == 1 })
	if n := count("database unreachable"); n != 0 {
		t.Errorf("the database was reported down %d times while it was up", n)
	}
}
