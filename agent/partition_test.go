package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// A silent partition (packets dropped, no reset) must not stop the agent:
// a sync in flight gives up after SyncTimeout and says why, the LISTEN
// connection is found dead by its ping, and once the network is back the
// agent serves the store's new version within seconds, not at the next
// 5-minute resync. The connections that lived through the partition stay
// dead (as when a NAT forgot them), so only new ones work.
func TestAgentConvergesAfterASilentPartition(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a1 := b.put(t, "a.example.com", 1)
	v0 := b.serve(t, "a.example.com")
	proxy := testpeers.NewTCPProxy(t, "127.0.0.1:5432")
	p := b.startPod(t, podOptions{storeURL: proxy.Via(t, b.pg.URL),
		syncTimeout: 2 * time.Second, listenPing: time.Second})
	p.waitServes(t, "a.example.com", a1, 30*time.Second)
	p.waitApplied(t, v0) // ready: /readyz is 200
	waitFor(t, "the LISTEN connection", 30*time.Second, func() bool { return p.agent.listening.Load() })

	proxy.Blackhole()
	p.agent.poke() // a sync that starts while the network drops everything
	// The stalled sync fails on its deadline, and /readyz (still 200: nginx
	// serves its last good configuration) says so.
	waitFor(t, "/readyz to report the stalled sync", 15*time.Second, func() bool {
		code, body := p.get(t, "/readyz")
		if code != 200 {
			t.Fatalf("/readyz %d during the partition: nginx still serves", code)
		}
		return strings.Contains(body, "did not finish within 2s")
	})
	_, metrics := p.get(t, "/metrics")
	if !strings.Contains(metrics, `certmgr_agent_syncs_total{result="timeout"}`) {
		t.Errorf("/metrics does not count the timed-out sync:\n%s", metrics)
	}
	// The store moves on meanwhile (the worker's side is not partitioned).
	a2 := b.put(t, "a.example.com", 2)
	c1 := b.put(t, "c.example.com", 1)
	v := b.serve(t, "a.example.com", "c.example.com")
	if got, _, _ := p.handshake("a.example.com"); got != a1 {
		t.Fatalf("served %s during the partition, want the last good %s", got, a1)
	}

	proxy.Heal()
	healed := time.Now()
	p.waitServes(t, "a.example.com", a2, 20*time.Second)
	p.waitServes(t, "c.example.com", c1, 5*time.Second)
	p.waitApplied(t, v)
	t.Logf("caught up %s after the partition healed", time.Since(healed))

	// Notifications flow again: a change is served without a resync.
	a3 := b.put(t, "a.example.com", 3)
	p.waitServes(t, "a.example.com", a3, 10*time.Second)
	if code, body := p.get(t, "/readyz"); code != 200 || body != "ok\n" {
		t.Fatalf("/readyz %d %q after catching up", code, body)
	}
}

// A read of lineages that fails for a reason a retry cures (the connection
// drops mid-query) must not count as done: the lineage is served as soon as
// the store answers again, not at the next 5-minute resync.
func TestAgentRetriesALineageWhoseReadFailedTransiently(t *testing.T) {
	t.Parallel()
	b := setup(t)
	x1 := b.put(t, "x.example.com", 1)
	b.serve(t, "x.example.com")
	proxy := testpeers.NewTCPProxy(t, "127.0.0.1:5432")
	p := b.startPod(t, podOptions{storeURL: proxy.Via(t, b.pg.URL)})
	p.waitServes(t, "x.example.com", x1, 30*time.Second)
	waitFor(t, "the LISTEN connection", 30*time.Second, func() bool { return p.agent.listening.Load() })

	// The batch read of a and b drops, and so does the read of a alone
	// that follows it; b's read goes through.
	proxy.KillOn("a.example.com", 2)
	a1 := b.put(t, "a.example.com", 1)
	b1 := b.put(t, "b.example.com", 1)
	b.serve(t, "x.example.com", "a.example.com", "b.example.com")
	for range 2 {
		select {
		case <-proxy.Killed():
		case <-time.After(30 * time.Second):
			t.Fatal("the agent never read lineage a")
		}
	}
	p.waitServes(t, "b.example.com", b1, 10*time.Second)
	took := p.waitServes(t, "a.example.com", a1, 10*time.Second)
	t.Logf("a served %s after b", took)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not guessing a duration
	}
}
