package domaindb_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/internal/testpeers"
)

type bundle struct {
	pg    *testpeers.PostgresPeer
	pool  *pgxpool.Pool // a second view of the schema, for arranging and checking rows
	store *domaindb.Store
	now   time.Time
}

func setup(t *testing.T) *bundle {
	t.Helper()
	pg := testpeers.Postgres(t)
	b := &bundle{pg: pg, pool: pg.Pool(t), now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
	s, err := domaindb.New(context.Background(), domaindb.Config{
		URL:    pg.URL,
		Logger: zerolog.New(zerolog.NewTestWriter(t)),
		Names:  domain.Policy{CNAMETarget: "custom.midsummer.cloud", AllowPrivateSuffixes: []string{"example"}},
		Now:    func() time.Time { return b.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	b.store = s
	return b
}

// insert adds a row as Django (or someone writing around Django) would.
func (b *bundle) insert(t *testing.T, name, status string, expires *time.Time) int64 {
	t.Helper()
	var id int64
	err := b.pool.QueryRow(context.Background(), `INSERT INTO tenant_customdomain
		(domain, mode, tenant_id, event_id, status, cert_expires_at, created_at, updated_at)
		VALUES ($1, 'event', 7, 42, $2, $3, '2020-01-01', '2020-01-01') RETURNING id`,
		name, status, expires).Scan(&id)
	if err != nil {
		t.Fatalf("insert %q: %v", name, err)
	}
	return id
}

func (b *bundle) row(t *testing.T, id int64) (status, lastError string, updated time.Time) {
	t.Helper()
	err := b.pool.QueryRow(context.Background(),
		`SELECT status, last_error, updated_at FROM tenant_customdomain WHERE id = $1`, id).
		Scan(&status, &lastError, &updated)
	if err != nil {
		t.Fatal(err)
	}
	return status, lastError, updated
}

func TestGet(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	exp := b.now.Add(60 * 24 * time.Hour)
	id := b.insert(t, "shop.example.com", "ssl_issued", &exp)

	d, err := b.store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != id || d.Domain != "shop.example.com" || d.Mode != domaindb.ModeEvent ||
		d.TenantID != 7 || d.EventID != 42 || d.Status != domaindb.StatusIssued ||
		!d.CertExpiresAt.Equal(exp) || !d.CertIssuedAt.IsZero() || d.LastError != "" {
		t.Errorf("Get = %+v", d)
	}
	if !d.CertLive(b.now) || d.CertLive(exp) {
		t.Errorf("CertLive wrong for expiry %s", exp)
	}

	byName, err := b.store.GetByName(ctx, "shop.example.com")
	if err != nil || byName.ID != id {
		t.Errorf("GetByName = %+v, %v", byName, err)
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err1 := b.store.Get(ctx, 999)
	_, err2 := b.store.GetByName(ctx, "gone.example.com")
	err3 := b.store.MarkIssued(ctx, 999, b.now, b.now)
	_, err4 := b.store.MarkFailed(ctx, 999, "x")
	_, err5 := b.store.MarkDNSVerified(ctx, 999, b.now, false)
	err6 := b.store.SetLastError(ctx, 999, "x")
	for i, err := range []error{err1, err2, err3, err4, err5, err6} {
		if !errors.Is(err, domaindb.ErrNotFound) {
			t.Errorf("%d: err = %v, want ErrNotFound", i, err)
		}
		if domaindb.IsTransient(err) {
			t.Errorf("%d: NotFound reported transient", i)
		}
	}
}

func TestHostileRowsAreReportedNotServed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	exp := b.now.Add(24 * time.Hour)
	good := b.insert(t, "good.example.com", "ssl_issued", &exp)
	hostile := map[string]int64{}
	for _, name := range []string{
		"evil.com;}server{listen 80;",
		"evil.com\nserver_name x",
		"*.example.com",
		"UPPER.example.com", // not the normal form Django stores
		"127.0.0.1",
		"app.midsummer.cloud", // the platform's own zone
		"",
	} {
		hostile[name] = b.insert(t, name, "ssl_issued", &exp)
	}
	badStatus := b.insert(t, "status.example.com", "ssl_issued; drop", &exp)

	got, bad, err := b.store.ListServable(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != good {
		t.Errorf("ListServable served %+v; want only good.example.com", got)
	}
	if len(bad) != len(hostile)+1 {
		t.Errorf("bad rows = %d, want %d", len(bad), len(hostile)+1)
	}
	for _, name := range []string{"evil.com;}server{listen 80;", "*.example.com", "app.midsummer.cloud"} {
		_, err := b.store.Get(ctx, hostile[name])
		var rowErr *domaindb.BadRowError
		var rej *domain.RejectedError
		if !errors.As(err, &rowErr) || !errors.As(err, &rej) {
			t.Errorf("Get(%q) = %v; want BadRowError wrapping RejectedError", name, err)
		}
		if domaindb.IsTransient(err) {
			t.Errorf("Get(%q): bad row reported transient", name)
		}
	}
	if _, err := b.store.Get(ctx, badStatus); !errors.As(err, new(*domaindb.BadRowError)) {
		t.Errorf("row with unknown status: %v", err)
	}
}

func TestListServable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exp := b.now.Add(24 * time.Hour)
	b.insert(t, "a-pending.example.com", "pending", nil)
	b.insert(t, "b-verified.example.com", "dns_verified", nil)
	b.insert(t, "c-issued.example.com", "ssl_issued", &exp)
	b.insert(t, "d-failed-first.example.com", "failed", nil)
	b.insert(t, "e-failed-with-cert.example.com", "failed", &exp)

	got, bad, err := b.store.ListServable(context.Background())
	if err != nil || len(bad) != 0 {
		t.Fatal(err, bad)
	}
	var names []string
	for _, d := range got {
		names = append(names, string(d.Domain))
	}
	if want := "c-issued.example.com e-failed-with-cert.example.com"; strings.Join(names, " ") != want {
		t.Errorf("ListServable = %v, want %s", names, want)
	}
	all, _, err := b.store.ListAll(context.Background())
	if err != nil || len(all) != 5 {
		t.Errorf("ListAll = %d rows, %v", len(all), err)
	}
}

func TestStatusWrites(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	id := b.insert(t, "shop.example.com", "pending", nil)

	// A first-time DNS failure: failed, with the tenant's message on one line.
	st, err := b.store.MarkFailed(ctx, id, "shop.example.com is a CNAME to shops.myhost.net;\npoint it to custom.midsummer.cloud")
	if err != nil || st != domaindb.StatusFailed {
		t.Fatalf("MarkFailed = %s, %v", st, err)
	}
	status, lastErr, updated := b.row(t, id)
	if status != "failed" || strings.ContainsAny(lastErr, "\n\r") || !strings.Contains(lastErr, "point it to custom.midsummer.cloud") {
		t.Errorf("after MarkFailed: %q %q", status, lastErr)
	}
	if !updated.After(old) {
		t.Errorf("updated_at not bumped: %s", updated)
	}

	if st, err := b.store.MarkDNSVerified(ctx, id, b.now, false); err != nil || st != domaindb.StatusDNSVerified {
		t.Fatalf("MarkDNSVerified = %s, %v", st, err)
	}
	d, _ := b.store.Get(ctx, id)
	if d.Status != domaindb.StatusDNSVerified || d.LastError != "" || !d.DNSVerifiedAt.Equal(b.now) {
		t.Errorf("after MarkDNSVerified: %+v", d)
	}

	issued, notAfter := b.now, b.now.Add(90*24*time.Hour)
	if err := b.store.MarkIssued(ctx, id, issued, notAfter); err != nil {
		t.Fatal(err)
	}
	d, _ = b.store.Get(ctx, id)
	if d.Status != domaindb.StatusIssued || !d.CertIssuedAt.Equal(issued) || !d.CertExpiresAt.Equal(notAfter) {
		t.Errorf("after MarkIssued: %+v", d)
	}

	// Re-verifying DNS does not demote an issued domain.
	if st, err := b.store.MarkDNSVerified(ctx, id, b.now, false); err != nil || st != domaindb.StatusIssued {
		t.Fatalf("MarkDNSVerified on issued = %s, %v", st, err)
	}
	if status, _, _ := b.row(t, id); status != "ssl_issued" {
		t.Errorf("MarkDNSVerified demoted ssl_issued to %s", status)
	}

	// A failed renewal while the certificate is live: stays ssl_issued, error shown.
	st, err = b.store.MarkFailed(ctx, id, "renewal failed: rate limited; retrying in 1 hour")
	if err != nil || st != domaindb.StatusIssued {
		t.Fatalf("MarkFailed on live cert = %s, %v", st, err)
	}
	if status, lastErr, _ := b.row(t, id); status != "ssl_issued" || lastErr != "renewal failed: rate limited; retrying in 1 hour" {
		t.Errorf("live cert after failure: %q %q", status, lastErr)
	}

	if err := b.store.SetLastError(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	if _, lastErr, _ := b.row(t, id); lastErr != "" {
		t.Errorf("SetLastError(\"\") left %q", lastErr)
	}
}

func TestMarkFailedAfterExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	expired := b.now.Add(-time.Minute)
	id := b.insert(t, "late.example.com", "ssl_issued", &expired)
	st, err := b.store.MarkFailed(context.Background(), id, "renewal failed")
	if err != nil || st != domaindb.StatusFailed {
		t.Fatalf("MarkFailed on expired cert = %s, %v; want failed", st, err)
	}
}

func TestLongLastErrorIsCapped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.insert(t, "shop.example.com", "pending", nil)
	if err := b.store.SetLastError(context.Background(), id, strings.Repeat("é", 5000)); err != nil {
		t.Fatal(err)
	}
	if _, lastErr, _ := b.row(t, id); len([]rune(lastErr)) > 500 {
		t.Errorf("last_error is %d characters", len([]rune(lastErr)))
	}
}

func TestTransientErrors(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: the failure is the kind a retry can fix.
	s, err := domaindb.New(context.Background(), domaindb.Config{URL: "postgres://postgres@127.0.0.1:1/test?connect_timeout=2"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Get(context.Background(), 1)
	if err == nil || !domaindb.IsTransient(err) {
		t.Errorf("unreachable database: %v, transient=%v", err, domaindb.IsTransient(err))
	}

	b := setup(t)
	if _, err := b.pool.Exec(context.Background(), `DROP TABLE tenant_customdomain`); err != nil {
		t.Fatal(err)
	}
	_, err = b.store.Get(context.Background(), 1)
	if err == nil || domaindb.IsTransient(err) {
		t.Errorf("missing table: %v reported transient", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if _, err := domaindb.New(context.Background(), domaindb.Config{}); err == nil || !strings.Contains(err.Error(), "MIDSUMMER_DB_URL") {
		t.Errorf("empty config: %v", err)
	}
	_, err := domaindb.New(context.Background(), domaindb.Config{URL: "postgres://u:secretpw@[bad/x"})
	if err == nil || strings.Contains(err.Error(), "secretpw") {
		t.Errorf("bad URL error %v leaks the password", err)
	}
}

// A row migrated from certbot (ssl_issued, no expiry) gets its certificate's
// dates without any other change, once.
func TestLinkCertificateSetsOnlyTheDates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := b.insert(t, "migrated.example.com", "ssl_issued", nil)
	if err := b.store.SetLastError(ctx, id, "kept"); err != nil {
		t.Fatal(err)
	}
	issued, notAfter := b.now.Add(-time.Hour), b.now.Add(60*24*time.Hour)
	wrote, err := b.store.LinkCertificate(ctx, id, issued, notAfter)
	if err != nil || !wrote {
		t.Fatalf("LinkCertificate = %v, %v", wrote, err)
	}
	d, _ := b.store.Get(ctx, id)
	if d.Status != domaindb.StatusIssued || d.LastError != "kept" || !d.CertIssuedAt.Equal(issued) || !d.CertExpiresAt.Equal(notAfter) {
		t.Errorf("after LinkCertificate: %+v", d)
	}
	if wrote, err := b.store.LinkCertificate(ctx, id, issued, notAfter); err != nil || wrote {
		t.Errorf("linking the same certificate again wrote: %v, %v", wrote, err)
	}
}
