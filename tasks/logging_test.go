package tasks_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/tasks"
	"github.com/midsummer/certmgr/worker"
)

// A task's log lines, the worker's own included, name the task, its id and
// the domain, and the runtime in seconds.
func TestTaskLogLinesNameTaskAndDomain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := domain.Name("logged-" + b.suffix + ".example.com")
	b.pebble.DNS.SetCNAME(t, string(d), "shops.elsewhere.example.net")
	id := b.pg.InsertDomain(t, string(d))
	mux := worker.NewServeMux()
	b.svc.Register(mux)
	srv, err := worker.NewServer(worker.Config{BrokerURL: b.redis.URL, Queue: "certmgr", Concurrency: 1,
		Hostname: "logs@test", ShutdownGrace: 5 * time.Second, Logger: zerolog.New(b.logs).Level(zerolog.InfoLevel)}, mux)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	taskID := b.celery.Send(t, testpeers.SendOptions{Task: tasks.IssueTask, Args: []any{id}})
	if _, cerr := b.celery.Get(t, taskID, 60*time.Second); cerr == nil {
		t.Fatal("issue for a wrong CNAME succeeded")
	}
	lines := b.logs.Lines("task failed")
	if len(lines) != 1 {
		t.Fatalf("%d 'task failed' lines, want 1", len(lines))
	}
	l := lines[0]
	if l["task_id"] != taskID || l["task"] != tasks.IssueTask || l["domain"] != string(d) || l["level"] != "error" {
		t.Errorf("task failed line: %v", l)
	}
	if _, ok := l["runtime_s"].(float64); !ok {
		t.Errorf("no runtime_s in seconds: %v", l)
	}
	if _, ok := l["runtime"]; ok {
		t.Errorf("a runtime without its unit: %v", l)
	}
}

// A renewal that fails keeps its cause on the row, in the tenant's words,
// through later regenerations, and logs it at error level with the domain;
// the sweep logs its start.
func TestFailedRenewalKeepsItsCause(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	d := b.domain("failing")
	id := b.pg.InsertDomain(t, string(d))
	cfg := b.acmeCfg
	cfg.Profile = "shortlived"
	short, err := acme.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := short.Issue(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.db.MarkIssued(ctx, id, l.NotBefore, l.NotAfter); err != nil {
		t.Fatal(err)
	}
	// The CA goes away; the certificate expires.
	b.pebble.Kill()
	b.clock.Advance(7 * 24 * time.Hour)
	res, err := b.sweep(ctx)
	if err != nil || len(res.Failed) != 1 {
		t.Fatalf("sweep = %+v, %v; want one failure", res, err)
	}
	cause := b.row(d).LastError
	if cause == "" || strings.Contains(cause, "expired") {
		t.Fatalf("last_error after the failed renewal: %q", cause)
	}
	if _, err := b.svc.Regenerate(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := b.row(d).LastError; got != cause {
		t.Errorf("regeneration replaced the renewal's cause %q with %q", cause, got)
	}
	failed := b.logs.Lines("certificate renewal failed")
	if len(failed) != 1 || failed[0]["level"] != "error" || failed[0]["domain"] != string(d) || failed[0]["last_error"] != cause {
		t.Errorf("renewal failure lines: %v", failed)
	}
	if len(b.logs.Lines("renewal sweep started")) != 1 {
		t.Error("no start line for the sweep")
	}
}
