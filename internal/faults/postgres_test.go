package faults

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// The database (a private cluster) is down while issue tasks
// arrive. The tasks fail with a transient error, are retried with a growing
// countdown, and complete after the database returns: each row ssl_issued
// with its certificate's expiry, one certificate version per domain, no task
// run to success twice, the worker up throughout.
func TestPostgresDownWhileTasksArrive(t *testing.T) {
	t.Parallel()
	skipShort(t)
	pg := testpeers.StartPGCluster(t)
	s := newStack(t, stackOptions{pg: pg.PostgresPeer})
	var ds []string
	var rowIDs []int64
	for _, l := range []string{"pga", "pgb", "pgc"} {
		d := s.domain(l)
		ds = append(ds, d)
		rowIDs = append(rowIDs, pg.InsertDomain(t, d))
	}
	w := s.startWorker("w1")

	pg.Stop(t)
	down := time.Now()
	var ids []string
	for _, id := range rowIDs {
		ids = append(ids, s.celery.Send(t, sendIssue(id)))
	}
	// The outage lasts until every task was retried twice (the stack's
	// CERTMGR_RETRY_BASE is 1 s, so a few seconds): none fails for good
	// meanwhile, and the worker stays up.
	testpeers.Until(t, 90*time.Second, "two retries of every task during the outage", func() bool {
		if !w.alive() {
			t.Fatalf("the worker exited while the database was down")
		}
		logs := w.logText()
		retried := true
		for _, id := range ids {
			if m, ok := s.meta(id); ok && m.Status != "RETRY" && m.Status != "STARTED" {
				t.Fatalf("task %s ended %s while the database was down: %s", id, m.Status, m.Result)
			}
			retried = retried && len(retryDelays(logs, id)) >= 2
		}
		return retried
	})
	t.Logf("database down for %s", time.Since(down).Round(time.Second))
	pg.Start(t)
	back := time.Now()

	for i, id := range ids {
		res := s.getIssue(id, 3*time.Minute)
		if res.Status != "ssl_issued" || !res.Issued || res.Domain != ds[i] {
			t.Errorf("result = %+v", res)
		}
	}
	t.Logf("all tasks done %s after the database came back", time.Since(back).Round(time.Second))
	for i, id := range ids {
		r := s.row(ds[i])
		leaf := s.served(ds[i])
		if r.Status != "ssl_issued" || r.LastError != "" || r.Expires == nil || !r.Expires.Equal(leaf.NotAfter) {
			t.Errorf("row = %+v, served notAfter %s", r, leaf.NotAfter)
		}
		s.oneLineage(ds[i])
		delays := retryDelays(w.logText(), id)
		for j := 1; j < len(delays); j++ {
			if delays[j] <= delays[j-1] {
				t.Errorf("task %s retry countdowns %v do not grow", id, delays)
			}
		}
		if n := succeeded(w.logText(), id); n != 1 {
			t.Errorf("task %s succeeded %d times", id, n)
		}
	}
	s.quiet()
}

// retryDelays reads the countdowns (ms) the worker logged for a task's retries.
func retryDelays(logs, id string) []float64 {
	var out []float64
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, id) || !strings.Contains(line, "task will be retried") {
			continue
		}
		var l struct {
			Countdown float64 `json:"countdown"`
		}
		if json.Unmarshal([]byte(line), &l) == nil {
			out = append(out, l.Countdown)
		}
	}
	return out
}
