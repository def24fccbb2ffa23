package tasks_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/internal/wire"
	"github.com/midsummer/certmgr/podreload"
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

	res, err := b.sweep(ctx)
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

func txtOwnership(c *wire.Config) {
	c.DNS.Ownership, c.DNS.VerifySecret = dnscheck.OwnershipTXT, verifySecret
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

// Budgets stop a tenant before the CA: with 3 orders per tenant per hour and
// one forced re-issue per domain per hour, a second forced re-issue and a
// fourth order fail at once with RateLimited and the time to retry, no order
// reaches Pebble, and /metrics shows the refusals and what the account has
// left. The counts live in PostgreSQL, so a second Service (another replica)
// sees the same budget.
func TestOrderBudgetsRefuseBeforeTheCA(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *wire.Config) {
		c.Tasks.Budgets = domaindb.Budgets{TenantOrdersPerHour: 3, ForceInterval: time.Hour}
	})
	ctx := context.Background()
	d1, d2, d3 := b.domain("budget1"), b.domain("budget2"), b.domain("budget3")
	for _, d := range []domain.Name{d1, d2, d3} {
		b.insertOwned(d, 7)
	}
	if _, err := b.svc.Issue(ctx, string(d1), false); err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Issue(ctx, string(d2), false); err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Issue(ctx, string(d1), true); err != nil {
		t.Fatalf("first forced re-issue: %v", err)
	}
	orders := func() int { return b.issuer.orders(d1) + b.issuer.orders(d2) + b.issuer.orders(d3) }
	if n := orders(); n != 3 {
		t.Fatalf("%d orders, want 3", n)
	}

	b.startWorker("w1")
	for _, tc := range []struct {
		desc   string
		name   domain.Name
		force  bool
		budget string
	}{
		{"second forced re-issue within the hour", d1, true, domaindb.BudgetForce},
		{"fourth order of the tenant within the hour", d3, false, domaindb.BudgetTenant},
	} {
		id := b.celery.Send(t, testpeers.SendOptions{Task: tasks.IssueTask, Args: []any{string(tc.name)}, Kwargs: map[string]any{"force": tc.force}})
		_, cerr := b.celery.Get(t, id, 30*time.Second)
		if cerr == nil || cerr.State != "FAILURE" || cerr.ExcType != tasks.ExcRateLimited || !strings.Contains(cerr.Message, tc.budget) {
			t.Errorf("%s: %+v; want FAILURE RateLimited naming %s", tc.desc, cerr, tc.budget)
			continue
		}
		// The retry time: an hour after the orders that used the budget.
		_, after, _ := strings.Cut(cerr.Message, "may retry after ")
		at, err := time.Parse(time.RFC3339, strings.Fields(after + " x")[0])
		if err != nil || at.Before(time.Now().Add(50*time.Minute)) || at.After(time.Now().Add(time.Hour)) {
			t.Errorf("%s: retry time %q (%v) is not about an hour ahead", tc.desc, after, err)
		}
		if row := b.row(tc.name); !strings.Contains(row.LastError, "try again after") {
			t.Errorf("%s: last_error %q", tc.desc, row.LastError)
		}
	}
	if n := orders(); n != 3 {
		t.Fatalf("%d orders reached the CA; the refused ones must not", n)
	}
	// Another replica counts against the same budget.
	other, err := tasks.New(tasks.Config{Domains: b.db, DNS: b.parts.DNS, Issuer: b.issuer, Certificates: b.acme.Store(),
		Nginx: noNginx{}, Reloader: b.reloader, Names: b.names, Budgets: domaindb.Budgets{TenantOrdersPerHour: 3}})
	if err != nil {
		t.Fatal(err)
	}
	var be *domaindb.BudgetError
	if _, err := other.Issue(ctx, string(d3), false); !errors.As(err, &be) || be.Budget != domaindb.BudgetTenant {
		t.Fatalf("second replica: %v; want the tenant budget refused", err)
	}
	mfs, err := b.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "/" + l.GetValue()
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if got["certmgr_acme_account_orders_remaining"] != 297 || got["certmgr_order_budget_refusals_total/"+domaindb.BudgetForce] != 1 ||
		got["certmgr_order_budget_refusals_total/"+domaindb.BudgetTenant] != 1 {
		t.Errorf("metrics: remaining %v, refusals force %v tenant %v", got["certmgr_acme_account_orders_remaining"],
			got["certmgr_order_budget_refusals_total/"+domaindb.BudgetForce], got["certmgr_order_budget_refusals_total/"+domaindb.BudgetTenant])
	}
}

// noNginx is never reached in the budget test's second replica.
type noNginx struct{ tasks.NginxConfig }

// gatedReloader holds the first reload until open is closed.
type gatedReloader struct {
	tasks.Reloader
	open  chan struct{}
	first sync.Once
}

func (g *gatedReloader) Reload(ctx context.Context) (podreload.Result, error) {
	g.first.Do(func() { <-g.open })
	return g.Reloader.Reload(ctx)
}

// Four issuances finishing close together share the regenerations and
// reloads: the first reload is held until all four certificates are stored, so the
// other three gather for the next round (at most one per
// CERTMGR_RELOAD_MIN_INTERVAL). Two reloads in all, and every task gets the
// pod's outcome and is served.
func TestIssuancesFinishingTogetherShareOneReload(t *testing.T) {
	t.Parallel()
	gate := &gatedReloader{open: make(chan struct{})}
	b := setup(t, func(c *wire.Config) {
		counting := c.WrapReloader
		c.WrapReloader = func(r tasks.Reloader) tasks.Reloader {
			gate.Reloader = counting(r)
			return gate
		}
		c.Tasks.ReloadMinInterval = 2 * time.Second
	})
	ctx := context.Background()
	names := []domain.Name{b.domain("share1"), b.domain("share2"), b.domain("share3"), b.domain("share4")}
	for _, d := range names {
		b.pg.InsertDomain(t, string(d))
	}
	before := b.reloader.n.Load()
	results := make([]tasks.IssueResult, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, d := range names {
		wg.Go(func() { results[i], errs[i] = b.svc.Issue(ctx, string(d), false) })
	}
	// Open the gate once every row records its new certificate: each task
	// is then on its way to the shared publication.
	pool := b.pg.Pool(t)
	go func() {
		defer close(gate.open)
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			var n int
			err := pool.QueryRow(ctx, `SELECT count(*) FROM tenant_customdomain WHERE cert_expires_at IS NOT NULL`).Scan(&n)
			if err == nil && n == len(names) {
				return
			}
		}
	}()
	wg.Wait()
	for i, r := range results {
		if errs[i] != nil || !r.Issued || len(r.Reloaded) != 1 || r.Reloaded[0].Outcome != podreload.OutcomeReloaded {
			t.Errorf("%s: %+v, %v; want issued with the pod reloaded", names[i], r, errs[i])
		}
	}
	if n := b.reloader.n.Load() - before; n != 2 {
		t.Errorf("%d reloads for %d issuances finishing together; want 2 (the held one and one shared)", n, len(names))
	}
	for _, d := range names {
		b.waitServed(d, func(*x509.Certificate) bool { return true })
	}
}

// TestBackoffIsCertmgrsOwnAndSpendsNoBudget: a domain whose HTTP-01
// validation failed is issued again at once (the tenant clicks again). The
// second attempt is refused by certmgr's backoff before any budget counts an
// order; the row keeps saying what Let's Encrypt saw and says when it is
// tried again, not that the CA is rate limiting.
func TestBackoffIsCertmgrsOwnAndSpendsNoBudget(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *wire.Config) { c.ACME.HTTP01 = unservedChallenges{} })
	ctx := context.Background()
	d := b.domain("backoff")
	b.pg.InsertDomain(t, string(d))
	_, err := b.svc.Issue(ctx, string(d), false)
	var ve *acme.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("first issue: %v, want a failed validation", err)
	}
	first := b.row(d)
	if first.Status != domaindb.StatusFailed || !strings.Contains(first.LastError, "could not verify") {
		t.Fatalf("after the failed validation: %s %q", first.Status, first.LastError)
	}

	_, err = b.svc.Issue(ctx, string(d), false)
	var bo *acme.BackoffError
	if !errors.As(err, &bo) {
		t.Fatalf("second issue: %v, want certmgr's backoff", err)
	}
	row := b.row(d)
	if !strings.Contains(row.LastError, "could not verify") || !strings.Contains(row.LastError, ve.Detail) ||
		!strings.Contains(row.LastError, "tries again after") || strings.Contains(row.LastError, "rate limiting") {
		t.Errorf("last_error during the backoff: %q; want the validation failure (%q) and when it is tried again", row.LastError, ve.Detail)
	}
	var counted int
	if err := b.pg.Conn(t).QueryRow(ctx, `SELECT count(*) FROM certmgr_acme_order WHERE domain = $1`, string(d)).Scan(&counted); err != nil {
		t.Fatal(err)
	}
	if counted != 1 || b.issuer.orders(d) != 1 {
		t.Errorf("%d orders counted against the budgets, %d reached the issuer; want 1 and 1", counted, b.issuer.orders(d))
	}
}

// unservedChallenges leaves HTTP-01 tokens unserved: the CA's validation
// fails with a 404, as when the domain's traffic goes elsewhere.
type unservedChallenges struct{}

func (unservedChallenges) Present(context.Context, string, string, string) error { return nil }
func (unservedChallenges) CleanUp(context.Context, string, string, string) error { return nil }

// certbotLineage stores a lineage for names as certbot left it (another CA,
// issued a day ago for 90 days), under the first name, and marks the rows of
// rowNames issued with it.
func (b *bundle) certbotLineage(names []domain.Name, rowNames ...domain.Name) acme.Lineage {
	b.t.Helper()
	ctx := context.Background()
	var raw []string
	for _, d := range names {
		raw = append(raw, string(d))
	}
	ca := testpeers.NewCA(b.t, "certbot's old CA")
	now := b.clock.Now()
	leaf := ca.Issue(b.t, testpeers.LeafOptions{Names: raw, NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(89 * 24 * time.Hour)})
	l, err := b.acme.Store().Save(acme.LineageName(names[0]), acme.Issued{Cert: leaf.Cert, Chain: leaf.Chain, Key: leaf.Key},
		acme.RenewalParams{Server: b.pebble.DirectoryURL, Webroot: b.nginx.Webroot, KeyType: "ec256", Domains: raw})
	if err != nil {
		b.t.Fatal(err)
	}
	for _, d := range rowNames {
		id := b.pg.InsertDomain(b.t, string(d))
		if err := b.db.MarkIssued(ctx, id, l.NotBefore, l.NotAfter); err != nil {
			b.t.Fatal(err)
		}
	}
	return l
}

// TestSweepRenewsAMultiNameLineageForTheNamesStillServed: a certbot lineage
// names a domain that still points here, one whose tenant pointed it
// elsewhere, and one Django no longer has. The sweep orders only the first
// (an order naming the others would fail validation, or succeed on an
// authorization the CA still caches); the lineage's next certificate names
// it alone, the row that left says it is not renewed.
func TestSweepRenewsAMultiNameLineageForTheNamesStillServed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	stays, left, gone := b.domain("stays"), b.domain("left"), b.domain("gone")
	l := b.certbotLineage([]domain.Name{stays, left, gone}, stays, left)
	b.pebble.DNS.SetCNAME(t, string(left), "shops.elsewhere.example.net")
	b.clock.Advance(70 * 24 * time.Hour)

	res, err := b.sweep(ctx)
	if err != nil || len(res.Renewed) != 1 || res.Renewed[0] != string(l.Name) {
		t.Fatalf("sweep: %v %+v; want lineage %s renewed", err, res, l.Name)
	}
	renewed, err := b.acme.Store().Load(l.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(renewed.Domains, []string{string(stays)}) || !renewed.NotAfter.After(l.NotAfter) {
		t.Errorf("renewed lineage names %v until %s; want only %s, later than %s", renewed.Domains, renewed.NotAfter, stays, l.NotAfter)
	}
	if row := b.row(stays); row.Status != domaindb.StatusIssued || row.LastError != "" || !row.CertExpiresAt.Equal(renewed.NotAfter) {
		t.Errorf("row %s: %s %q expires %s; want ssl_issued until %s", stays, row.Status, row.LastError, row.CertExpiresAt, renewed.NotAfter)
	}
	if row := b.row(left); row.Status != domaindb.StatusFailed || !row.CertExpiresAt.IsZero() ||
		!strings.Contains(row.LastError, "shops.elsewhere.example.net") || !strings.Contains(row.LastError, "no longer served") {
		t.Errorf("row %s (pointed elsewhere): %s %q expires %s; want failed, no certificate, saying why it is no longer served",
			left, row.Status, row.LastError, row.CertExpiresAt)
	}
}

// TestIssueOfAMultiNameLineageOrdersOnlyServedNames: a forced issue of one
// name of a certbot lineage whose other name has no row orders that name
// alone.
func TestIssueOfAMultiNameLineageOrdersOnlyServedNames(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	stays, gone := b.domain("stays"), domain.Name("gone-"+b.suffix+".example.com") // no DNS record at all
	l := b.certbotLineage([]domain.Name{stays, gone}, stays)
	res, err := b.svc.Issue(ctx, string(stays), true)
	if err != nil || !res.Issued {
		t.Fatalf("forced issue: %v %+v", err, res)
	}
	renewed, err := b.acme.Store().Load(l.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(renewed.Domains, []string{string(stays)}) {
		t.Errorf("lineage names %v after the issue; want only %s", renewed.Domains, stays)
	}
}

// TestSweepDefersWhenTheAccountBudgetRunsOut: with room for one order in
// the account's budget and three due lineages, the sweep renews one and
// defers the others without ordering, and without writing on their rows
// (no tenant asked for anything; their certificates are still live).
func TestSweepDefersWhenTheAccountBudgetRunsOut(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *wire.Config) { c.Tasks.Budgets = domaindb.Budgets{AccountOrdersPer3h: 1} })
	ctx := context.Background()
	for _, label := range []string{"due1", "due2", "due3"} {
		d := b.domain(label)
		b.certbotLineage([]domain.Name{d}, d)
	}
	b.clock.Advance(70 * 24 * time.Hour)
	res, err := b.sweep(ctx)
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if len(res.Renewed) != 1 || len(res.Deferred) != 2 || len(res.Failed) != 0 {
		t.Fatalf("sweep renewed %v, deferred %v, failed %v; want 1 renewed, 2 deferred, none failed", res.Renewed, res.Deferred, res.Failed)
	}
	if got := b.issuer.renewals(); len(got) != 1 {
		t.Errorf("renewal orders %v; want one", got)
	}
	for _, d := range res.Deferred {
		if row := b.row(domain.Name(d)); row.Status != domaindb.StatusIssued || row.LastError != "" {
			t.Errorf("deferred %s: row %s %q; want ssl_issued, untouched", d, row.Status, row.LastError)
		}
	}
}

// TestPublicationsWaitForEachOther: while another worker publishes (it
// holds the publication lock), a regeneration waits, and then reads the rows
// as that worker left them: Django deleted a domain meanwhile, and it is
// not served. Without the wait the older set could be stored last.
func TestPublicationsWaitForEachOther(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	d := b.domain("published")
	b.pg.InsertDomain(t, string(d))
	if _, err := b.svc.Issue(ctx, string(d), false); err != nil {
		t.Fatal(err)
	}
	unlock, ok, err := b.db.TryLock(ctx, b.svc.PublishLock())
	if err != nil || !ok {
		t.Fatalf("take the publication lock as another worker: %v %v", ok, err)
	}
	type result struct {
		res tasks.RegenResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := b.svc.Regenerate(ctx, false)
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		unlock()
		t.Fatalf("regenerated while another worker's publication held the lock: %+v %v", r.res, r.err)
	case <-time.After(time.Second):
	}
	if _, err := b.pg.Conn(t).Exec(ctx, `DELETE FROM tenant_customdomain WHERE domain = $1`, string(d)); err != nil {
		t.Fatal(err)
	}
	unlock()
	r := <-done
	if r.err != nil || r.res.Domains != 0 {
		t.Errorf("regeneration after the other publication: %+v %v; want 0 domains (the row was deleted before it read them)", r.res, r.err)
	}
}
