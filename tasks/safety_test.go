package tasks_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/tasks"
)

// lastError reads a row's last_error and status straight from the table, as the
// tenant UI does: a row certmgr refuses cannot be loaded through domaindb.
func (b *bundle) lastError(name string) (status, lastError string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := b.pg.Conn(b.t).QueryRow(ctx, `SELECT status, last_error FROM tenant_customdomain WHERE domain = $1`, name).
		Scan(&status, &lastError)
	if err != nil {
		b.t.Fatalf("row %s: %v", name, err)
	}
	return status, lastError
}

// Rows written around Django's validation (a name in the platform's zone, a
// cluster-internal name) are not served, and each row's last_error says why
// instead of staying empty under ssl_issued.
func TestRefusedRowsSayWhyTheyAreNotServed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	zone := "app.platform-" + b.suffix + ".test"
	internal := "kubernetes-" + b.suffix + ".default.svc"
	noFiles := string(b.domain("nofiles")) // a valid name whose certificate files are gone
	for _, n := range []string{zone, internal, noFiles} {
		b.pg.Exec(t, `INSERT INTO tenant_customdomain (domain, mode, tenant_id, status, cert_expires_at)
			VALUES ($1, 'tenant', 1, 'ssl_issued', now() + interval '30 days')`, n)
	}
	res, err := b.svc.Regenerate(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Domains != 0 {
		t.Fatalf("regeneration serves %d domains; want the refused rows left out", res.Domains)
	}
	for n, want := range map[string]string{
		zone:     "This domain is not served: the name is inside the platform's own domain.",
		internal: "This domain is not served: the name does not end in a public top-level domain",
		noFiles:  "This domain is not served yet: its certificate has not been issued.",
	} {
		st, le := b.lastError(n)
		if !strings.HasPrefix(le, want) {
			t.Errorf("%s: status %s, last_error %q; want %q", n, st, le, want)
		}
		// Tenant words only: no file of the certificate store.
		if strings.Contains(le, "/") || strings.Contains(le, b.acmeCfg.Dir) {
			t.Errorf("%s: last_error %q shows the tenant a file path", n, le)
		}
	}
	// The operator's result still says which file is missing.
	if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0].Reason, b.acmeCfg.Dir) {
		t.Errorf("regen result skipped = %+v; want the missing file named for the operator", res.Skipped)
	}
}

// remove_custom_domain_task(d, purge=True) while the row still exists is
// refused with DomainInUse and deletes nothing; once Django deleted the row
// the same task purges.
func TestPurgeRefusedWhileRowExists(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	d := b.domain("purge")
	id := b.pg.InsertDomain(t, string(d))
	if _, err := b.svc.Issue(ctx, string(d), false); err != nil {
		t.Fatal(err)
	}
	b.startWorker("w1")
	live := filepath.Join(b.acmeCfg.Dir, "live", string(d), "fullchain.pem")

	taskID := b.celery.Send(t, testpeers.SendOptions{Task: tasks.RemoveTask, Args: []any{string(d)}, Kwargs: map[string]any{"purge": true}})
	_, cerr := b.celery.Get(t, taskID, 30*time.Second)
	if cerr == nil || cerr.ExcType != tasks.ExcDomainInUse {
		t.Fatalf("purge of a live row: %+v, want FAILURE DomainInUse", cerr)
	}
	if _, err := os.Stat(live); err != nil {
		t.Fatalf("certificate of a live row deleted: %v", err)
	}
	if _, err := b.handshake(d); err != nil {
		t.Fatalf("the live row is no longer served after a refused purge: %v", err)
	}

	b.pg.Exec(t, `DELETE FROM tenant_customdomain WHERE id = $1`, id)
	taskID = b.celery.Send(t, testpeers.SendOptions{Task: tasks.RemoveTask, Args: []any{string(d)}, Kwargs: map[string]any{"purge": true}})
	raw, cerr := b.celery.Get(t, taskID, 30*time.Second)
	if cerr != nil {
		t.Fatalf("purge after the row was deleted: %+v", cerr)
	}
	var rm tasks.RemoveResult
	if err := json.Unmarshal(raw, &rm); err != nil || !rm.Purged || !rm.Removed {
		t.Fatalf("remove result = %s (%v)", raw, err)
	}
	if _, err := os.Stat(live); !os.IsNotExist(err) {
		t.Fatalf("certificate still there after purge: %v", err)
	}
}

// A tenant who pointed the name elsewhere is not renewed: the sweep re-checks
// DNS before ordering, makes no order, and the row says why and when the
// certificate stops working.
func TestSweepDoesNotRenewANameThatLeftThePlatform(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	d := b.domain("left")
	id := b.pg.InsertDomain(t, string(d))
	cfg := b.acmeCfg
	cfg.Profile = "shortlived"
	shortMgr, err := acme.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	first, err := shortMgr.Issue(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.db.MarkIssued(ctx, id, first.NotBefore, first.NotAfter); err != nil {
		t.Fatal(err)
	}
	b.pebble.DNS.SetCNAME(t, string(d), "shops.elsewhere.example.net")
	b.clock.Advance(5 * 24 * time.Hour)

	res, err := b.svc.Sweep(ctx, false)
	if err != nil {
		t.Fatalf("sweep: %v (%+v)", err, res)
	}
	if len(res.Renewed) != 0 || len(res.Certificates) != 1 || res.Certificates[0].Action != "not renewed" {
		t.Fatalf("sweep = %+v", res)
	}
	if got := b.issuer.renewals(); len(got) != 0 {
		t.Fatalf("renewal orders for a name that left the platform: %v", got)
	}
	row := b.row(d)
	want := fmt.Sprintf("%s is a CNAME to shops.elsewhere.example.net; point it to %s. Its certificate is not renewed and stops working on %s.",
		d, b.target, first.NotAfter.UTC().Format("2006-01-02"))
	if row.LastError != want || row.Status != "ssl_issued" {
		t.Fatalf("row = %s %q; want ssl_issued with %q", row.Status, row.LastError, want)
	}
}

const verifySecret = "tasks-test-verify-secret-0123"

func txtOwnership(c *dnscheck.Config) {
	c.Ownership, c.VerifySecret = dnscheck.OwnershipTXT, verifySecret
}

// insertOwned adds a row for tenant as Django would.
func (b *bundle) insertOwned(name domain.Name, tenant int64) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var id int64
	err := b.pg.Conn(b.t).QueryRow(ctx, `INSERT INTO tenant_customdomain (domain, mode, tenant_id, status)
		VALUES ($1, 'tenant', $2, 'pending') RETURNING id`, string(name), tenant).Scan(&id)
	if err != nil {
		b.t.Fatal(err)
	}
	return id
}

// The dangling-CNAME takeover: tenant A proved ownership with its TXT record,
// got a certificate, then deleted the name, leaving its CNAME and TXT behind.
// Tenant B adds the same name: its issue task fails with the record B must
// create, no order is made, and nginx does not serve B A's certificate, not
// even when B's row is marked ssl_issued behind certmgr's back. Once B's own
// record is published, B passes and is served.
func TestDanglingCNAMETakeoverNeedsAFreshOwnershipProof(t *testing.T) {
	t.Parallel()
	b := setup(t, txtOwnership)
	ctx := context.Background()
	d := b.domain("takeover")
	record := "_certmgr." + string(d)
	b.pebble.DNS.SetTXT(t, record, dnscheck.Token(verifySecret, "tenant-1", d))
	idA := b.insertOwned(d, 1)
	if _, err := b.svc.Issue(ctx, string(d), false); err != nil {
		t.Fatalf("tenant A's issue: %v", err)
	}
	first := b.waitServed(d, func(*x509.Certificate) bool { return true })

	// A deletes the name (files kept: no purge); the CNAME and TXT stay.
	b.pg.Exec(t, `DELETE FROM tenant_customdomain WHERE id = $1`, idA)
	if _, err := b.svc.Remove(ctx, string(d), false); err != nil {
		t.Fatal(err)
	}
	idB := b.insertOwned(d, 2)
	b.startWorker("w1")
	taskID := b.celery.Send(t, testpeers.SendOptions{Task: tasks.IssueTask, Args: []any{idB}})
	_, cerr := b.celery.Get(t, taskID, 60*time.Second)
	if cerr == nil || cerr.ExcType != tasks.ExcDNSNotVerified {
		t.Fatalf("tenant B's issue = %+v; want DNSNotVerified", cerr)
	}
	wantB := dnscheck.Token(verifySecret, "tenant-2", d)
	row := b.row(d)
	if !strings.Contains(row.LastError, record) || !strings.Contains(row.LastError, wantB) {
		t.Fatalf("B's last_error %q does not name the record %s and value %s", row.LastError, record, wantB)
	}
	if n := b.issuer.orders(d); n != 1 {
		t.Fatalf("%d orders; want only A's", n)
	}
	// B's row marked ssl_issued without a check (a script, an admin): still
	// not served A's certificate.
	b.pg.Exec(t, `UPDATE tenant_customdomain SET status = 'ssl_issued', cert_expires_at = $2 WHERE id = $1`, idB, first.NotAfter)
	if _, err := b.svc.Regenerate(ctx, true); err != nil {
		t.Fatal(err)
	}
	if code := httpsStatus(t, b, d); code != http.StatusMisdirectedRequest && code != -1 {
		t.Fatalf("B's name answered %d with A's certificate; want 421 or a refused handshake", code)
	}
	if row := b.row(d); !strings.Contains(row.LastError, "must be verified for this account") {
		t.Fatalf("B's last_error %q does not say why it is not served", row.LastError)
	}

	// B publishes its own record: the check passes, the certificate (still
	// valid) is B's from now on, and nginx serves it.
	b.pebble.DNS.SetTXT(t, record, wantB)
	if _, err := b.svc.Issue(ctx, string(d), false); err != nil {
		t.Fatalf("tenant B's issue with its record: %v", err)
	}
	b.waitServed(d, func(*x509.Certificate) bool { return true })
}
