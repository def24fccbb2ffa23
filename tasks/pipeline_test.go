package tasks_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/internal/wire"
	"github.com/midsummer/certmgr/tasks"
)

// The tenant clicks Issue SSL: Django inserts the row and sends the task with
// real Python Celery; the row ends ssl_issued with the certificate's expiry,
// certbot lists the certificate, nginx serves it by SNI. Django deletes the
// row and sends the remove task: the name is no longer served.
func TestIssueFromCeleryToNginxAndRemove(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := b.domain("shop")
	id := b.pg.InsertDomain(t, string(d))
	b.startWorker("w1")

	taskID := b.celery.Send(t, testpeers.SendOptions{Task: tasks.IssueTask, Args: []any{id}})
	raw, cerr := b.celery.Get(t, taskID, 90*time.Second)
	if cerr != nil {
		t.Fatalf("AsyncResult.get() raised %v\n%s", cerr, cerr.Traceback)
	}
	var res tasks.IssueResult
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("result %s: %v", raw, err)
	}
	if res.Domain != string(d) || res.Status != "ssl_issued" || !res.Issued || len(res.Reloaded) != 1 || res.Reloaded[0].Outcome != "reloaded" {
		t.Fatalf("result = %s", raw)
	}

	row := b.row(d)
	leaf := b.waitServed(d, func(*x509.Certificate) bool { return true })
	if row.Status != "ssl_issued" || row.LastError != "" || !row.CertExpiresAt.Equal(leaf.NotAfter) {
		t.Fatalf("row = %+v, served notAfter %s", row, leaf.NotAfter)
	}
	if res.NotAfter != leaf.NotAfter.UTC().Format(time.RFC3339) {
		t.Fatalf("result not_after %s, served %s", res.NotAfter, leaf.NotAfter)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != string(d) {
		t.Fatalf("served certificate names %v", leaf.DNSNames)
	}

	// certbot reads the store certmgr wrote.
	work := t.TempDir()
	out, err := exec.Command("certbot", "certificates", "--config-dir", b.acmeCfg.Dir,
		"--work-dir", work, "--logs-dir", work).CombinedOutput()
	if err != nil {
		t.Fatalf("certbot certificates: %v\n%s", err, out)
	}
	for _, want := range []string{"Certificate Name: " + string(d), "Domains: " + string(d), "VALID",
		filepath.Join(b.acmeCfg.Dir, "live", string(d), "fullchain.pem")} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("certbot certificates lacks %q:\n%s", want, out)
		}
	}

	// Django deletes the row, then sends the remove task.
	b.pg.Exec(t, `DELETE FROM tenant_customdomain WHERE id = $1`, id)
	taskID = b.celery.Send(t, testpeers.SendOptions{Task: tasks.RemoveTask, Args: []any{string(d)}})
	raw, cerr = b.celery.Get(t, taskID, 60*time.Second)
	if cerr != nil {
		t.Fatalf("remove task raised %v", cerr)
	}
	var rm tasks.RemoveResult
	if err := json.Unmarshal(raw, &rm); err != nil || !rm.Removed || rm.Purged {
		t.Fatalf("remove result = %s (%v)", raw, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for code := httpsStatus(t, b, d); code != http.StatusMisdirectedRequest && code != -1; code = httpsStatus(t, b, d) {
		if time.Now().After(deadline) {
			t.Fatalf("after remove, https://%s answered %d; want 421 or a refused handshake", d, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Files are kept without purge: a returning tenant gets the same certificate.
	if _, err := os.Stat(filepath.Join(b.acmeCfg.Dir, "live", string(d), "fullchain.pem")); err != nil {
		t.Fatalf("certificate removed without purge: %v", err)
	}
}

// A domain whose CNAME points elsewhere fails with DNSNotVerified, the row says
// what to fix, and no ACME order is made.
func TestIssueWithWrongCNAMEFailsWithoutOrdering(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := domain.Name("wrong-" + b.suffix + ".example.com")
	b.pebble.DNS.SetCNAME(t, string(d), "shops.elsewhere.example.net")
	id := b.pg.InsertDomain(t, string(d))
	b.startWorker("w1")

	taskID := b.celery.Send(t, testpeers.SendOptions{Task: tasks.IssueTask, Args: []any{id}})
	_, cerr := b.celery.Get(t, taskID, 60*time.Second)
	if cerr == nil || cerr.State != "FAILURE" || cerr.ExcType != "DNSNotVerified" {
		t.Fatalf("AsyncResult.get() = %+v, want FAILURE DNSNotVerified", cerr)
	}
	row := b.row(d)
	want := fmt.Sprintf("%s is a CNAME to shops.elsewhere.example.net; point it to %s", d, b.target)
	if row.Status != "failed" || !strings.Contains(row.LastError, want) {
		t.Fatalf("row = %s %q; want failed with %q", row.Status, row.LastError, want)
	}
	if n := b.issuer.orders(d); n != 0 {
		t.Fatalf("%d ACME orders for a domain that does not point at us", n)
	}
}

// Unknown ids and hostile names fail at once with the contract's exc_types,
// and nothing reaches the CA or nginx.
func TestIssueRejectsUnknownAndHostileInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker("w1")
	cases := []struct {
		desc string
		args []any
		want string
	}{
		{"unknown id", []any{987654}, "NotFound"},
		{"nginx injection", []any{"a.example.com; } server { listen 80"}, "DomainRejected"},
		{"platform zone", []any{"evil.platform-" + b.suffix + ".test"}, "DomainRejected"},
		{"ip literal", []any{"127.0.0.1"}, "DomainRejected"},
		{"cluster-internal name", []any{"kubernetes.default.svc"}, "DomainRejected"},
		{"no argument", []any{}, "BadArguments"},
		{"object", []any{map[string]any{"id": 1}}, "BadArguments"},
	}
	for _, tc := range cases {
		id := b.celery.Send(t, testpeers.SendOptions{Task: tasks.IssueTask, Args: tc.args})
		_, cerr := b.celery.Get(t, id, 30*time.Second)
		if cerr == nil || cerr.ExcType != tc.want {
			t.Errorf("%s: got %+v, want FAILURE %s", tc.desc, cerr, tc.want)
		}
	}
	b.issuer.mu.Lock()
	defer b.issuer.mu.Unlock()
	if len(b.issuer.issued) != 0 {
		t.Fatalf("orders were made: %v", b.issuer.issued)
	}
}

// Two workers and the same task sent twice: one certificate.
func TestTwoWorkersSameTaskTwiceOrderOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := b.domain("twice")
	id := b.pg.InsertDomain(t, string(d))
	b.startWorker("w1")
	b.startWorker("w2")

	ids := b.celery.SendMany(t, testpeers.SendOptions{Task: tasks.IssueTask, Args: []any{id}, Count: 2})
	issued := 0
	for _, tid := range ids {
		raw, cerr := b.celery.Get(t, tid, 90*time.Second)
		if cerr != nil {
			t.Fatalf("task %s raised %v", tid, cerr)
		}
		var res tasks.IssueResult
		if err := json.Unmarshal(raw, &res); err != nil || res.Status != "ssl_issued" {
			t.Fatalf("result %s (%v)", raw, err)
		}
		if res.Issued {
			issued++
		}
	}
	if issued != 1 || b.issuer.orders(d) != 1 {
		t.Fatalf("issued=%d in results, %d ACME orders; want exactly one", issued, b.issuer.orders(d))
	}
	versions, _ := filepath.Glob(filepath.Join(b.acmeCfg.Dir, "archive", string(d), "cert*.pem"))
	if len(versions) != 1 {
		t.Fatalf("archive has %v, want one version", versions)
	}
}

// The renewal sweep with a moved clock renews what is due, and only that,
// with one reload.
func TestSweepRenewsOnlyDueCertificatesWithOneReload(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	short, long := b.domain("short"), b.domain("long")
	shortID := b.pg.InsertDomain(t, string(short))
	b.pg.InsertDomain(t, string(long))

	// A 6-day certificate (Pebble's shortlived profile) and a 90-day one.
	cfg := b.acmeCfg
	cfg.Profile = "shortlived"
	shortMgr, err := acme.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	first, err := shortMgr.Issue(ctx, short)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.db.MarkIssued(ctx, shortID, first.NotBefore, first.NotAfter); err != nil {
		t.Fatal(err)
	}
	// A removed tenant's certificate (files kept, row deleted) is due too, but
	// must not be renewed.
	gone := b.domain("gone")
	if _, err := shortMgr.Issue(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Issue(ctx, string(long), false); err != nil {
		t.Fatal(err)
	}
	reloadsBefore := b.reloader.n.Load()

	// Day 5: the 6-day certificate is inside its last third, the 90-day one is not.
	b.clock.Advance(5 * 24 * time.Hour)

	// While another replica sweeps (it holds the sweep lock), this one does nothing.
	other, ok, err := b.db.TryLock(ctx, b.svc.SweepLock())
	if err != nil || !ok {
		t.Fatalf("take the sweep lock as another replica: %v %v", ok, err)
	}
	res, err := b.svc.Sweep(ctx, false)
	if err != nil || !res.Skipped || len(res.Renewed) != 0 || len(b.issuer.renewals()) != 0 {
		t.Fatalf("sweep while another replica sweeps = %+v, %v", res, err)
	}
	other()

	res, err = b.sweep(ctx)
	if err != nil {
		t.Fatalf("sweep: %v (%+v)", err, res)
	}
	if res.Checked != 3 || len(res.Renewed) != 1 || res.Renewed[0] != string(short) || len(res.Failed) != 0 {
		t.Fatalf("sweep = %+v", res)
	}
	for _, e := range res.Certificates {
		if e.Name == string(gone) && e.Action != "no row" {
			t.Fatalf("lineage without a row: action %q, want no row", e.Action)
		}
	}
	if got := b.issuer.renewals(); len(got) != 1 || got[acme.LineageName(short)] != 1 {
		t.Fatalf("renewals = %v", got)
	}
	if n := b.reloader.n.Load() - reloadsBefore; n != 1 {
		t.Fatalf("%d reloads after the sweep, want 1", n)
	}
	row := b.row(short)
	// nginx -s reload returns once signalled; old workers finish their
	// connections while new ones start, so wait for the new certificate.
	leaf := b.waitServed(short, func(c *x509.Certificate) bool { return c.SerialNumber.Cmp(first.Leaf().SerialNumber) != 0 })
	if !row.CertExpiresAt.Equal(leaf.NotAfter) {
		t.Fatalf("nginx serves serial %x (old %x), row expiry %s, served %s",
			leaf.SerialNumber, first.Leaf().SerialNumber, row.CertExpiresAt, leaf.NotAfter)
	}

	// A second sweep finds nothing due and does not reload.
	res, err = b.sweep(ctx)
	if err != nil || len(res.Renewed) != 0 {
		t.Fatalf("second sweep = %+v, %v", res, err)
	}
	if n := b.reloader.n.Load() - reloadsBefore; n != 1 {
		t.Fatalf("second sweep reloaded (%d reloads in all)", n)
	}
}

// httpsStatus GETs https://d/ through nginx without verifying the
// certificate; -1 means the handshake was refused.
func httpsStatus(t *testing.T, b *bundle, d domain.Name) int {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: string(d), InsecureSkipVerify: true},
	}}
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/", b.nginx.HTTPSPort), nil)
	req.Host = string(d)
	resp, err := client.Do(req)
	if err != nil {
		if strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "handshake") {
			return -1
		}
		t.Fatalf("GET https://%s/: %v", d, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestIssueThatStopsRetryingSaysSo: DNS servers that never answer make each
// attempt a transient failure; while retries are left the row says it will
// be tried again, and when the last one fails the task is FAILURE and the row
// is marked failed without that promise (nothing would retry it).
func TestIssueThatStopsRetryingSaysSo(t *testing.T) {
	t.Parallel()
	// A resolver that reads queries and never answers.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := silent.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	b := setup(t, func(c *wire.Config) {
		c.DNS.Servers = []string{silent.LocalAddr().String()}
		c.DNS.Timeout = 300 * time.Millisecond
		c.Tasks.MaxRetries = 1
	})
	d := b.domain("silentdns")
	id := b.pg.InsertDomain(t, string(d))
	b.startWorker("w1")

	taskID := b.celery.Send(t, testpeers.SendOptions{Task: tasks.IssueTask, Args: []any{id}})
	_, cerr := b.celery.Get(t, taskID, 60*time.Second)
	if cerr == nil || cerr.State != "FAILURE" || cerr.ExcType != tasks.ExcTemporary {
		t.Fatalf("AsyncResult.get() = %+v, want FAILURE %s after the retry", cerr, tasks.ExcTemporary)
	}
	row := b.row(d)
	if row.Status != domaindb.StatusFailed || !strings.Contains(row.LastError, "did not answer in time") ||
		!strings.Contains(row.LastError, "stopped retrying") || strings.Contains(row.LastError, "try again;") ||
		strings.Contains(row.LastError, "we will try again") {
		t.Errorf("row after the last retry: %s %q; want failed, saying certmgr stopped retrying", row.Status, row.LastError)
	}
	if n := b.issuer.orders(d); n != 0 {
		t.Errorf("%d ACME orders without a DNS answer", n)
	}
}
