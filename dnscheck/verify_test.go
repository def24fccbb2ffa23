package dnscheck_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/internal/testpeers"
)

func TestVerifyRecordsOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pg := testpeers.Postgres(t)
	ctx := context.Background()
	store, err := domaindb.New(ctx, domaindb.Config{URL: pg.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)

	good := pg.InsertDomain(t, "good.example.com")
	b.dns.SetCNAME(t, "good.example.com", target)
	wrong := pg.InsertDomain(t, "wrong.example.com")
	b.dns.SetCNAME(t, "wrong.example.com", "shops.myhost.net")
	live := pg.InsertDomain(t, "live.example.com")
	b.dns.SetCNAME(t, "live.example.com", "moved.example.net")
	if err := store.MarkIssued(ctx, live, time.Now(), time.Now().Add(60*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	flaky := pg.InsertDomain(t, "flaky.example.com")
	b.dns.SetServfail(t, "flaky.example.com")

	load := func(id int64) domaindb.CustomDomain {
		t.Helper()
		d, err := store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	v, err := b.checker.Verify(ctx, store, load(good))
	if err != nil || !v.DNSOK || v.Status != "dns_verified" {
		t.Errorf("good: %+v, %v", v, err)
	}
	if d := load(good); d.Status != domaindb.StatusDNSVerified || d.DNSVerifiedAt.IsZero() {
		t.Errorf("good row: %+v", d)
	}

	v, err = b.checker.Verify(ctx, store, load(wrong))
	var nv *dnscheck.NotVerifiedError
	if !errors.As(err, &nv) || v.DNSOK || v.Status != "failed" {
		t.Errorf("wrong: %+v, %v", v, err)
	}
	want := "wrong.example.com is a CNAME to shops.myhost.net; point it to " + target
	if d := load(wrong); d.Status != domaindb.StatusFailed || d.LastError != want || v.Detail != want {
		t.Errorf("wrong row: %q %q", d.Status, d.LastError)
	}

	v, err = b.checker.Verify(ctx, store, load(live))
	if !errors.As(err, &nv) || v.Status != "ssl_issued" {
		t.Errorf("live: %+v, %v", v, err)
	}
	if d := load(live); d.Status != domaindb.StatusIssued || d.LastError == "" {
		t.Errorf("a live certificate's row must stay ssl_issued with the error shown: %+v", d)
	}

	v, err = b.checker.Verify(ctx, store, load(flaky))
	var te *dnscheck.TransientError
	if !errors.As(err, &te) || v.Status != "pending" {
		t.Errorf("flaky: %+v, %v", v, err)
	}
	if d := load(flaky); d.Status != domaindb.StatusPending || d.LastError != te.Detail() {
		t.Errorf("flaky row: %q %q", d.Status, d.LastError)
	}
}
