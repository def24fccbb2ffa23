package tasks_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
)

// dnscheck only looks; the tasks record what it found on the row: passed
// (dns_verified), the tenant must act (failed, or ssl_issued kept for a live
// certificate, with the words in last_error), DNS did not answer (last_error
// only, retried).
func TestVerifyDNSRecordsOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	dns := b.pebble.DNS

	good := b.domain("good")
	b.pg.InsertDomain(t, string(good))
	wrong := domain.Name("wrong-" + b.suffix + ".example.com")
	dns.SetCNAME(t, string(wrong), "shops.myhost.net")
	b.pg.InsertDomain(t, string(wrong))
	live := domain.Name("live-" + b.suffix + ".example.com")
	dns.SetCNAME(t, string(live), "moved.example.net")
	liveID := b.pg.InsertDomain(t, string(live))
	if err := b.db.MarkIssued(ctx, liveID, time.Now(), time.Now().Add(60*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	flaky := domain.Name("flaky-" + b.suffix + ".example.com")
	dns.SetServfail(t, string(flaky))
	b.pg.InsertDomain(t, string(flaky))

	v, err := b.svc.VerifyDNS(ctx, string(good))
	if err != nil || !v.DNSOK || v.Status != "dns_verified" {
		t.Errorf("good: %+v, %v", v, err)
	}
	if r := b.row(good); r.Status != domaindb.StatusDNSVerified || r.DNSVerifiedAt.IsZero() || r.LastError != "" {
		t.Errorf("good row: %+v", r)
	}

	v, err = b.svc.VerifyDNS(ctx, string(wrong))
	if err != nil || v.DNSOK || v.Status != "failed" {
		t.Errorf("wrong: %+v, %v", v, err)
	}
	want := string(wrong) + " is a CNAME to shops.myhost.net; point it to " + b.target
	if r := b.row(wrong); r.Status != domaindb.StatusFailed || r.LastError != want || v.Detail != want {
		t.Errorf("wrong row: %q %q, detail %q", r.Status, r.LastError, v.Detail)
	}

	v, err = b.svc.VerifyDNS(ctx, string(live))
	if err != nil || v.DNSOK || v.Status != "ssl_issued" {
		t.Errorf("live: %+v, %v", v, err)
	}
	if r := b.row(live); r.Status != domaindb.StatusIssued || r.LastError == "" {
		t.Errorf("a live certificate's row must stay ssl_issued with the error shown: %+v", r)
	}

	v, err = b.svc.VerifyDNS(ctx, string(flaky))
	var te *dnscheck.TransientError
	if !errors.As(err, &te) || v.Status != "pending" {
		t.Errorf("flaky: %+v, %v", v, err)
	}
	if r := b.row(flaky); r.Status != domaindb.StatusPending || r.LastError != te.Detail() {
		t.Errorf("flaky row: %q %q", r.Status, r.LastError)
	}
}

// TestVerifyKeepsThePendingRenewalsError: an issued domain whose renewal is
// due and failed keeps what the renewal said when the tenant verifies DNS
// again (DNS passing does not make the renewal succeed); once the
// certificate is renewed, a stale error is cleared by the next verify.
func TestVerifyKeepsThePendingRenewalsError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	d := b.domain("renewing")
	b.pg.InsertDomain(t, string(d))
	if _, err := b.svc.Issue(ctx, string(d), false); err != nil {
		t.Fatal(err)
	}
	row := b.row(d)
	const failed = "Let's Encrypt could not verify the domain: a proxy answered 404."
	if err := b.db.SetLastError(ctx, row.ID, failed); err != nil {
		t.Fatal(err)
	}
	// Not due: the error is stale, and a passing check clears it.
	if _, err := b.svc.VerifyDNS(ctx, string(d)); err != nil {
		t.Fatal(err)
	}
	if r := b.row(d); r.Status != domaindb.StatusIssued || r.LastError != "" {
		t.Errorf("verify of a healthy issued domain: %s %q; want ssl_issued, error cleared", r.Status, r.LastError)
	}
	// Due (two thirds of its life gone) and the renewal failed: kept.
	if err := b.db.SetLastError(ctx, row.ID, failed); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(70 * 24 * time.Hour)
	v, err := b.svc.VerifyDNS(ctx, string(d))
	if err != nil || !v.DNSOK {
		t.Fatalf("verify: %+v %v", v, err)
	}
	if r := b.row(d); r.Status != domaindb.StatusIssued || r.LastError != failed {
		t.Errorf("verify while the renewal is due: %s %q; want ssl_issued with %q", r.Status, r.LastError, failed)
	}
}

// TestVerifyWaitsForARunningIssue: a DNS verify of a domain whose issue is
// running (it holds the domain's lock) waits for it, then reads the row as
// the issue left it: the issue's outcome is not overwritten with an older
// view of the row.
func TestVerifyWaitsForARunningIssue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	d := b.domain("busy")
	id := b.pg.InsertDomain(t, string(d))
	unlock, err := b.db.Lock(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.svc.VerifyDNS(ctx, string(d))
		done <- err
	}()
	select {
	case err := <-done:
		unlock()
		t.Fatalf("verify ran while the domain's issue held its lock: %v", err)
	case <-time.After(time.Second):
	}
	// What the issue records as it finishes.
	if err := b.db.MarkIssued(ctx, id, time.Now(), time.Now().Add(90*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := b.row(d); r.Status != domaindb.StatusIssued || r.DNSVerifiedAt.IsZero() {
		t.Errorf("row after the verify: %s verified %s; want ssl_issued, DNS verified", r.Status, r.DNSVerifiedAt)
	}
}
