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

func uniquePod(t *testing.T, n int) string {
	return "pod-" + strconv.Itoa(n) + "-" + randomSuffix()
}

func appliedVersion(t *testing.T, pg *testpeers.PostgresPeer, pod string) int64 {
	t.Helper()
	var v int64
	err := pg.Conn(t).QueryRow(ctxT(t), `SELECT applied_version FROM certmgr_agent WHERE pod = $1`, pod).Scan(&v)
	if err != nil {
		return -1
	}
	return v
}

func waitApplied(t *testing.T, pg *testpeers.PostgresPeer, pod string, v int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for appliedVersion(t, pg, pod) < v {
		if time.Now().After(deadline) {
			t.Fatalf("%s: heartbeat never reached version %d (at %d)", pod, v, appliedVersion(t, pg, pod))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAgentServesTheStoreAndFollowsIt(t *testing.T) {
	t.Parallel()
	pg := testpeers.Postgres(t)
	key := newStoreKey()
	st := openStore(t, pg.URL, key)
	ca := newTestCA(t)
	a1 := ca.put(t, st, "a.example.com", 1)
	b1 := ca.put(t, st, "b.example.com", 1)
	v := serve(t, st, "a.example.com", "b.example.com")

	p := startPod(t, pg, key, uniquePod(t, 1), podOptions{})
	p.waitServes(t, "a.example.com", a1, 30*time.Second)
	p.waitServes(t, "b.example.com", b1, 5*time.Second)
	// Ready once the first sync (which includes the reload) has finished.
	waitApplied(t, pg, p.name, v)
	if code, _ := p.get(t, "/readyz"); code != 200 {
		t.Fatalf("/readyz %d after the first sync", code)
	}

	// A renewal (version 2) is served within a second or so of the commit.
	a2 := ca.put(t, st, "a.example.com", 2)
	took := p.waitServes(t, "a.example.com", a2, 10*time.Second)
	t.Logf("renewal served %s after the commit", took)

	// HTTP-01: the agent answers from the store, directly and through the
	// generated HTTP server's proxy.
	if err := st.PutChallenge(ctxT(t), "c.example.com", "tok-1_x", "tok-1_x.thumb"); err != nil {
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
	v = serve(t, st, "b.example.com")
	p.waitServes(t, "a.example.com", "", 10*time.Second)
	waitApplied(t, pg, p.name, v)
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
	pg := testpeers.Postgres(t)
	key := newStoreKey()
	st := openStore(t, pg.URL, key)
	ca := newTestCA(t)
	a1 := ca.put(t, st, "a.example.com", 1)
	serve(t, st, "a.example.com")
	p := startPod(t, pg, key, uniquePod(t, 1), podOptions{})
	p.waitServes(t, "a.example.com", a1, 30*time.Second)

	p.stop()
	// Meanwhile: two domains added, one removed.
	b1 := ca.put(t, st, "b.example.com", 1)
	c1 := ca.put(t, st, "c.example.com", 1)
	v := serve(t, st, "b.example.com", "c.example.com")
	// nginx, without its agent, still serves what it had.
	p.waitServes(t, "a.example.com", a1, time.Second)

	if v := appliedVersion(t, pg, p.name); v != -1 {
		t.Errorf("the stopped agent's heartbeat row is still there (version %d)", v)
	}
	p.restart(t, pg, key, podOptions{})
	p.waitServes(t, "b.example.com", b1, 30*time.Second)
	p.waitServes(t, "c.example.com", c1, 5*time.Second)
	p.waitServes(t, "a.example.com", "", 5*time.Second)
	waitApplied(t, pg, p.name, v)
}

func TestAgentKeepsServingThroughAPostgresOutage(t *testing.T) {
	t.Parallel()
	pg := testpeers.Postgres(t)
	key := newStoreKey()
	st := openStore(t, pg.URL, key)
	ca := newTestCA(t)
	a1 := ca.put(t, st, "a.example.com", 1)
	serve(t, st, "a.example.com")
	proxy := newTCPProxy(t, "127.0.0.1:5432")
	p := startPod(t, pg, key, uniquePod(t, 1), podOptions{storeURL: viaProxy(t, pg.URL, proxy)})
	p.waitServes(t, "a.example.com", a1, 30*time.Second)

	// 30 s without PostgreSQL, as the agent sees it.
	proxy.Cut()
	cut := time.Now()
	b1 := ca.put(t, st, "b.example.com", 1)
	a2 := ca.put(t, st, "a.example.com", 2)
	v := serve(t, st, "a.example.com", "b.example.com")
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
	waitApplied(t, pg, p.name, v)
	t.Logf("caught up %s after PostgreSQL came back", time.Since(restored))
}

func TestAgentCatchesUpAfterItsListenConnectionIsKilled(t *testing.T) {
	t.Parallel()
	pg := testpeers.Postgres(t)
	key := newStoreKey()
	st := openStore(t, pg.URL, key)
	ca := newTestCA(t)
	a1 := ca.put(t, st, "a.example.com", 1)
	serve(t, st, "a.example.com")
	p := startPod(t, pg, key, uniquePod(t, 1), podOptions{})
	p.waitServes(t, "a.example.com", a1, 30*time.Second)

	// The LISTEN connection may still be opening: wait for it, then kill it.
	conn := pg.Conn(t)
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
	b1 := ca.put(t, st, "b.example.com", 1)
	serve(t, st, "a.example.com", "b.example.com")
	p.waitServes(t, "b.example.com", b1, 30*time.Second)
}
