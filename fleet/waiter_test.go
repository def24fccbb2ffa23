package fleet

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/podreload"
)

func openStore(t *testing.T) (*certstore.Store, *testpeers.PostgresPeer) {
	t.Helper()
	pg := testpeers.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := certstore.Open(ctx, certstore.Config{URL: pg.URL, Key: testpeers.StoreKey()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, pg
}

// The wait reports each live agent: reloaded when its heartbeat reaches the
// store version, timed_out (with the version it serves and its last error)
// when it does not within Wait; agents not seen within Alive are not listed.
func TestWaiterReportsEachLiveAgent(t *testing.T) {
	t.Parallel()
	st, pg := openStore(t)
	ctx := context.Background()
	_, v, err := st.SetServed(ctx, []certstore.Served{{Domain: "a.example.com", Lineage: "a.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []certstore.Agent{
		{Pod: "app-fast", AppliedVersion: v},
		{Pod: "app-slow", AppliedVersion: v - 1, Detail: "nginx -t failed"},
		{Pod: "app-late", AppliedVersion: v - 1},
		{Pod: "app-gone", AppliedVersion: 0},
	} {
		if err := st.Heartbeat(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	pg.Exec(t, `UPDATE certmgr_agent SET last_seen = now() - interval '5 minutes' WHERE pod = 'app-gone'`)
	// app-late catches up while the worker waits.
	go func() {
		time.Sleep(200 * time.Millisecond) // the agent's sync, as seen by the worker
		_ = st.Heartbeat(ctx, certstore.Agent{Pod: "app-late", AppliedVersion: v})
	}()
	start := time.Now()
	res, err := Waiter{Store: st, Wait: 1500 * time.Millisecond}.Reload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Errorf("returned after %s with a pod behind, before Wait", took)
	}
	want := map[string]podreload.Outcome{"app-fast": podreload.OutcomeReloaded, "app-late": podreload.OutcomeReloaded, "app-slow": podreload.OutcomeTimedOut}
	if len(res.Pods) != len(want) {
		t.Fatalf("pods %+v, want %v", res.Pods, want)
	}
	for _, p := range res.Pods {
		if want[p.Pod] != p.Outcome {
			t.Errorf("%s: %s, want %s (%s)", p.Pod, p.Outcome, want[p.Pod], p.Detail)
		}
	}
	if p, _ := res.Pod("app-slow"); p.Detail == "" || !contains(p.Detail, "nginx -t failed") {
		t.Errorf("slow pod detail %q", p.Detail)
	}
	if p, _ := res.Pod("app-late"); p.Duration < 150*time.Millisecond || p.Duration > 1400*time.Millisecond {
		t.Errorf("late pod reached after %s", p.Duration)
	}

	// Everyone at the version: the wait ends at once.
	_ = st.Heartbeat(ctx, certstore.Agent{Pod: "app-slow", AppliedVersion: v})
	start = time.Now()
	res, err = Waiter{Store: st, Wait: 10 * time.Second}.Reload(ctx)
	if err != nil || res.Count(podreload.OutcomeReloaded) != 3 || time.Since(start) > 5*time.Second {
		t.Fatalf("all caught up: %+v %v after %s", res, err, time.Since(start))
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
