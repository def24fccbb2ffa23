package tasks_test

import (
	"context"
	"strings"
	"testing"
	"time"
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
	for _, n := range []string{zone, internal} {
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
	} {
		st, le := b.lastError(n)
		if !strings.HasPrefix(le, want) {
			t.Errorf("%s: status %s, last_error %q; want %q", n, st, le, want)
		}
	}
}
