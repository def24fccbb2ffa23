package agent

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/internal/testpeers"
)

// appliedVersion is the version the pod's heartbeat row reports, -1 when
// it has none.
func (p *pod) appliedVersion(t *testing.T) int64 {
	t.Helper()
	var v int64
	err := p.b.pg.Conn(t).QueryRow(ctxT(t), `SELECT applied_version FROM certmgr_agent WHERE pod = $1`, p.name).Scan(&v)
	if err != nil {
		return -1
	}
	return v
}

func (p *pod) waitApplied(t *testing.T, v int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for p.appliedVersion(t) < v {
		if time.Now().After(deadline) {
			t.Fatalf("%s: heartbeat never reached version %d (at %d)", p.name, v, p.appliedVersion(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAgentServesTheStoreAndFollowsIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a1 := b.put(t, "a.example.com", 1)
	b1 := b.put(t, "b.example.com", 1)
	v := b.serve(t, "a.example.com", "b.example.com")

	p := b.startPod(t, podOptions{})
	p.waitServes(t, "a.example.com", a1, 30*time.Second)
	p.waitServes(t, "b.example.com", b1, 5*time.Second)
	// Ready once the first sync (which includes the reload) has finished.
	p.waitApplied(t, v)
	if code, _ := p.get(t, "/readyz"); code != 200 {
		t.Fatalf("/readyz %d after the first sync", code)
	}

	// A renewal (version 2) is served within a second or so of the commit.
	a2 := b.put(t, "a.example.com", 2)
	took := p.waitServes(t, "a.example.com", a2, 10*time.Second)
	t.Logf("renewal served %s after the commit", took)

	// HTTP-01: the agent answers from the store, directly and through the
	// generated HTTP server's proxy.
	if err := b.st.PutChallenge(ctxT(t), "c.example.com", "tok-1_x", "tok-1_x.thumb"); err != nil {
		t.Fatal(err)
	}
	if code, body := p.get(t, "/.well-known/acme-challenge/tok-1_x"); code != 200 || body != "tok-1_x.thumb" {
		t.Fatalf("agent challenge answer %d %q", code, body)
	}
	code, body := httpGet(t, "http://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(p.nginx.HTTPPort))+"/.well-known/acme-challenge/tok-1_x", "c.example.com")
	if code != 200 || body != "tok-1_x.thumb" {
		t.Fatalf("challenge through nginx %d %q", code, body)
	}
	if code, _ := p.get(t, "/.well-known/acme-challenge/unknown"); code != 404 {
		t.Fatalf("unknown token: %d", code)
	}
	if code, _ := p.get(t, "/.well-known/acme-challenge/..%2fetc"); code != 404 {
		t.Fatalf("bad token: %d", code)
	}

	// Removal: 421, and the lineage leaves the pod's directory.
	v = b.serve(t, "b.example.com")
	p.waitServes(t, "a.example.com", "", 10*time.Second)
	p.waitApplied(t, v)
	if names, _ := acme.LineageNames(p.dir); !slices.Equal(names, []acme.LineageName{"b.example.com"}) {
		t.Fatalf("lineages left in the pod: %v", names)
	}
	_, metrics := p.get(t, "/metrics")
	for _, want := range []string{"certmgr_agent_applied_version " + strconv.FormatInt(v, 10), "certmgr_agent_last_sync_timestamp_seconds", "certmgr_agent_lag_seconds 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestAgentConvergesAfterRestart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a1 := b.put(t, "a.example.com", 1)
	b.serve(t, "a.example.com")
	p := b.startPod(t, podOptions{})
	p.waitServes(t, "a.example.com", a1, 30*time.Second)

	p.stop()
	// Meanwhile: two domains added, one removed.
	b1 := b.put(t, "b.example.com", 1)
	c1 := b.put(t, "c.example.com", 1)
	v := b.serve(t, "b.example.com", "c.example.com")
	// nginx, without its agent, still serves what it had.
	p.waitServes(t, "a.example.com", a1, time.Second)

	if v := p.appliedVersion(t); v != -1 {
		t.Errorf("the stopped agent's heartbeat row is still there (version %d)", v)
	}
	p.restart(t, podOptions{})
	p.waitServes(t, "b.example.com", b1, 30*time.Second)
	p.waitServes(t, "c.example.com", c1, 5*time.Second)
	p.waitServes(t, "a.example.com", "", 5*time.Second)
	p.waitApplied(t, v)
}

func TestAgentKeepsServingThroughAPostgresOutage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a1 := b.put(t, "a.example.com", 1)
	b.serve(t, "a.example.com")
	proxy := testpeers.NewTCPProxy(t, "127.0.0.1:5432")
	p := b.startPod(t, podOptions{storeURL: proxy.Via(t, b.pg.URL)})
	p.waitServes(t, "a.example.com", a1, 30*time.Second)

	// 30 s without PostgreSQL, as the agent sees it.
	proxy.Cut()
	cut := time.Now()
	b1 := b.put(t, "b.example.com", 1)
	a2 := b.put(t, "a.example.com", 2)
	v := b.serve(t, "a.example.com", "b.example.com")
	for time.Since(cut) < 30*time.Second {
		if _, _, err := p.handshake("a.example.com"); err != nil {
			t.Fatalf("nginx stopped answering during the outage: %v", err)
		}
		if got, _, _ := p.handshake("a.example.com"); got != a1 {
			t.Fatalf("served %s during the outage, want the last good %s", got, a1)
		}
		if code, _ := p.get(t, "/healthz"); code != 200 {
			t.Fatalf("/healthz %d during the outage", code)
		}
		time.Sleep(time.Second) // sampling the outage, not waiting for a result
	}
	proxy.Restore()
	restored := time.Now()
	p.waitServes(t, "a.example.com", a2, 30*time.Second)
	p.waitServes(t, "b.example.com", b1, 5*time.Second)
	p.waitApplied(t, v)
	t.Logf("caught up %s after PostgreSQL came back", time.Since(restored))
}

func TestAgentCatchesUpAfterItsListenConnectionIsKilled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a1 := b.put(t, "a.example.com", 1)
	b.serve(t, "a.example.com")
	p := b.startPod(t, podOptions{})
	p.waitServes(t, "a.example.com", a1, 30*time.Second)

	// The LISTEN connection may still be opening: wait for it, then kill it.
	conn := b.pg.Conn(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var killed int
		err := conn.QueryRow(ctxT(t), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`,
			ListenApplicationName(p.name)).Scan(&killed)
		if err != nil || killed > 1 {
			t.Fatalf("terminated %d LISTEN connections: %v", killed, err)
		}
		if killed == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent never opened its LISTEN connection")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b1 := b.put(t, "b.example.com", 1)
	b.serve(t, "a.example.com", "b.example.com")
	p.waitServes(t, "b.example.com", b1, 30*time.Second)
}
