package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// An agent that cannot reach the store at start is alive but not ready, and
// says why; it becomes ready after its first complete sync.
func TestAgentNotReadyUntilItsFirstSync(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a1 := b.put(t, "a.example.com", 1)
	b.serve(t, "a.example.com")
	proxy := testpeers.NewTCPProxy(t, "127.0.0.1:5432")
	url := proxy.Via(t, b.pg.URL)
	// Open the agent's store while the proxy is up, then cut it before the
	// agent runs: its first sync fails.
	p := b.startPodCut(t, podOptions{storeURL: url}, proxy)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := p.get(t, "/readyz")
		if code != 503 {
			t.Fatalf("/readyz %d without a sync", code)
		}
		if strings.Contains(body, "first sync not complete:") {
			break // the failed sync's error is named
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never named the failure: %q", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := p.get(t, "/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	proxy.Restore()
	p.waitServes(t, "a.example.com", a1, 30*time.Second)
	deadline = time.Now().Add(30 * time.Second)
	for code, _ := p.get(t, "/readyz"); code != 200; code, _ = p.get(t, "/readyz") {
		if time.Now().After(deadline) {
			t.Fatal("/readyz never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
