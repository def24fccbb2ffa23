package faults

import (
	"context"
	"testing"
	"time"

	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/internal/testpeers"
)

// A task sent without a time limit gets CERTMGR_TASK_TIME_LIMIT: stuck on a
// DNS server that never answers (the DNS check's own deadline set longer), it
// fails with Celery's TimeLimitExceeded at the limit, is not retried, and its
// domain's lock is free again for the next task.
func TestTaskTimeLimitDefault(t *testing.T) {
	t.Parallel()
	skipShort(t)
	rd := testpeers.Redis(t)
	pg := testpeers.Postgres(t)
	name := "stuck-" + pg.Schema[len(pg.Schema)-8:] + ".example.com"
	pg.InsertDomain(t, name)
	w := startProc(t, map[string]string{"CELERY_BROKER_URL": rd.URL, "MIDSUMMER_DB_URL": pg.URL,
		"CUSTOM_DOMAIN_DNS_SERVERS": blackHoleDNS(t), "CUSTOM_DOMAIN_DNS_TIMEOUT": "120",
		"CERTMGR_TASK_TIME_LIMIT": "2"})
	w.waitReadyz(t, 0, "") // serving: the worker has started
	cel := testpeers.Celery(t, rd.URL)
	start := time.Now()
	id := cel.Send(t, testpeers.SendOptions{Task: "tenant.tasks.issue_custom_domain_task", Args: []any{name}})
	_, cerr := cel.Get(t, id, 60*time.Second)
	took := time.Since(start)
	if cerr == nil || cerr.State != "FAILURE" || cerr.ExcType != "TimeLimitExceeded" {
		t.Fatalf("AsyncResult.get() = %+v; want FAILURE TimeLimitExceeded", cerr)
	}
	if took > 30*time.Second {
		t.Errorf("the task ended after %s with a 2 s limit", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var free bool
	if err := pg.Conn(t).QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, domaindb.LockKey(name)).Scan(&free); err != nil || !free {
		t.Fatalf("the domain's lock is still held after the time limit: %v %v", free, err)
	}
	if _, cerr := cel.Get(t, cel.Send(t, testpeers.SendOptions{Task: "certmgr.ping"}), 30*time.Second); cerr != nil {
		t.Fatalf("worker no longer answers after a task hit its limit: %v", cerr)
	}
}
