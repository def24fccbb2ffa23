package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// certbotPeer runs Debian's certbot 2.1 against a test's Pebble, with its
// configuration directory as the store certmgr migrates.
type certbotPeer struct {
	bin, dir, work string
	pebble         *testpeers.PebblePeer
	webroot        string
}

func newCertbot(t *testing.T, pb *testpeers.PebblePeer, webroot string) *certbotPeer {
	t.Helper()
	bin, err := exec.LookPath("certbot")
	if err != nil {
		t.Fatal("certbot missing: apt-get install certbot (scripts/setup-peers.sh installs it)")
	}
	work := t.TempDir()
	return &certbotPeer{bin: bin, dir: filepath.Join(work, "letsencrypt"), work: work, pebble: pb, webroot: webroot}
}

// run runs certbot with the store's directories and Pebble's CA trusted, and
// returns its combined output; it fails the test when certbot does.
func (c *certbotPeer) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.try(args...)
	if err != nil {
		t.Fatalf("certbot %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *certbotPeer) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := append(slices.Clone(args), "--config-dir", c.dir, "--work-dir", filepath.Join(c.work, "work"),
		"--logs-dir", filepath.Join(c.work, "logs"), "--non-interactive")
	cmd := exec.CommandContext(ctx, c.bin, all...)
	cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+c.pebble.CABundle)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// certonly makes a lineage the way the old Celery worker did.
func (c *certbotPeer) certonly(t *testing.T, extra []string, names ...string) {
	t.Helper()
	args := []string{"certonly", "--webroot", "-w", c.webroot, "--server", c.pebble.DirectoryURL,
		"--agree-tos", "--register-unsafely-without-email"}
	for _, n := range names {
		args = append(args, "-d", n)
	}
	c.run(t, append(args, extra...)...)
}

// liveLeaf reads the live certificate of a lineage.
func liveLeaf(t *testing.T, store, lineage string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(store, "live", lineage, "cert.pem"))
	if err != nil {
		t.Fatalf("lineage %s: %v", lineage, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("lineage %s: cert.pem holds no PEM", lineage)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func keyOf(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ec" + strconv.Itoa(k.Curve.Params().BitSize)
	}
	return fmt.Sprintf("%T", c.PublicKey)
}

// served connects to nginx's HTTPS port with SNI name and returns the leaf
// it is served, verified against Pebble's roots for that name.
func served(t *testing.T, port int, roots *x509.CertPool, name string) (*x509.Certificate, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(&d, "tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// waitServedSerial waits until nginx serves name the certificate with serial
// (a reload lets old workers finish first).
func waitServedSerial(t *testing.T, port int, roots *x509.CertPool, name string, want *x509.Certificate) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		leaf, err := served(t, port, roots, name)
		if err == nil && leaf.SerialNumber.Cmp(want.SerialNumber) == 0 {
			return
		}
		if time.Now().After(deadline) {
			got := "none"
			if leaf != nil {
				got = leaf.SerialNumber.Text(16)
			}
			t.Fatalf("nginx serves %s serial %s, want %s (%v)", name, got, want.SerialNumber.Text(16), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func pebbleRoots(t *testing.T, pb *testpeers.PebblePeer) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pb.RootPEM(t)) {
		t.Fatal("pebble root is not PEM")
	}
	return pool
}

// setARIWindow makes Pebble suggest renewing cert between start and end.
func setARIWindow(t *testing.T, pb *testpeers.PebblePeer, cert *x509.Certificate, start, end time.Time) {
	t.Helper()
	ari, _ := json.Marshal(map[string]any{"suggestedWindow": map[string]string{
		"start": start.UTC().Format(time.RFC3339), "end": end.UTC().Format(time.RFC3339)}})
	body, _ := json.Marshal(map[string]string{
		"Certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		"ARIResponse": string(ari),
	})
	resp, err := pb.Client.Post(pb.ManagementURL+"/set-renewal-info/", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("set-renewal-info: %s %s", resp.Status, b)
	}
}

// oldSites is what manage.py customdomain_regen_nginx wrote: one server per
// name, each with its lineage's live files. It listens as certmgr's file does
// (port only): nginx hands the same sockets over when one file replaces the
// other, where a different address would fail to bind while old workers
// still hold it.
func oldSites(port int, store string, lineageOf map[string]string) string {
	var b strings.Builder
	names := make([]string, 0, len(lineageOf))
	for n := range lineageOf {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "server {\n    listen %d ssl;\n    server_name %s;\n", port, n)
		fmt.Fprintf(&b, "    ssl_certificate %s/live/%s/fullchain.pem;\n", store, lineageOf[n])
		fmt.Fprintf(&b, "    ssl_certificate_key %s/live/%s/privkey.pem;\n    return 200 ok;\n}\n", store, lineageOf[n])
	}
	return b.String()
}

// The proof of docs/migration.md: a store made by the real certbot 2.1 with
// every lineage shape an adopter has (plain, two names, --cert-name, RSA-2048,
// renewed once, one the CA asks to renew now), migrated by following the
// guide: every name is served by its own certificate before and after,
// renewals keep the name sets and key types, no lineage is split, and certbot
// still accepts the store (rollback).
func TestMigrationFromRealCertbot(t *testing.T) {
	t.Parallel()
	pg := testpeers.Postgres(t)
	rd := testpeers.Redis(t)
	dns := testpeers.ChallTestSrv(t)
	ng := testpeers.Nginx(t, testpeers.NginxOptions{})
	pb := testpeers.Pebble(t, testpeers.PebbleOptions{HTTPPort: ng.HTTPPort, DNS: dns})
	suffix := testpeers.RandomHex(4)
	target := "custom.platform-" + suffix + ".test"
	dns.AddA(t, target, "127.0.0.1")
	name := func(label string) string {
		d := label + "-" + suffix + ".example.com"
		dns.SetCNAME(t, d, target)
		return d
	}
	plain, two, www, shop, rsaName, renewed, near := name("plain"), name("two"), name("www"), name("shop"),
		name("rsa"), name("renewed"), name("near")
	// The old nginx served the webroot for certbot's HTTP-01 challenges.
	webrootConf := filepath.Join(ng.ConfDir, "old-webroot.conf")
	if err := os.WriteFile(webrootConf, []byte(fmt.Sprintf(`server {
    listen %d;
    server_name _;
    location /.well-known/acme-challenge/ { root %s; default_type text/plain; }
}
`, ng.HTTPPort, ng.Webroot)), 0o644); err != nil {
		t.Fatal(err)
	}
	ng.ReloadAndWait(t)

	// The store, made by certbot as the old worker made it.
	cb := newCertbot(t, pb, ng.Webroot)
	cb.certonly(t, nil, plain)
	cb.certonly(t, nil, two, www)
	cb.certonly(t, []string{"--cert-name", "custom-name"}, shop)
	cb.certonly(t, []string{"--key-type", "rsa", "--rsa-key-size", "2048"}, rsaName)
	cb.certonly(t, nil, renewed)
	cb.run(t, "renew", "--cert-name", renewed, "--force-renewal", "--server", pb.DirectoryURL, "--no-random-sleep-on-renew")
	cb.certonly(t, nil, near)
	store := cb.dir
	lineageOf := map[string]string{plain: plain, two: two, www: two, shop: "custom-name", rsaName: rsaName, renewed: renewed, near: near}
	lineages := []string{plain, two, "custom-name", rsaName, renewed, near}
	if v := liveLeaf(t, store, renewed); !strings.Contains(mustReadlink(t, filepath.Join(store, "live", renewed, "cert.pem")), "cert2.pem") {
		t.Fatalf("certbot renew did not make version 2 of %s (serial %x)", renewed, v.SerialNumber)
	}
	if k := keyOf(liveLeaf(t, store, rsaName)); k != "rsa2048" {
		t.Fatalf("certbot made a %s key for %s, want rsa2048", k, rsaName)
	}
	// Near expiry: the CA's renewal window for it has begun (Pebble issues
	// 90-day certificates only and certbot 2.1 cannot ask for a profile, so
	// ARI is how a certificate is made due now without waiting).
	nearLeaf := liveLeaf(t, store, near)
	setARIWindow(t, pb, nearLeaf, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))

	oldConf := filepath.Join(ng.ConfDir, "old-sites.conf")
	if err := os.WriteFile(oldConf, []byte(oldSites(ng.HTTPSPort, store, lineageOf)), 0o644); err != nil {
		t.Fatal(err)
	}
	ng.ReloadAndWait(t)
	roots := pebbleRoots(t, pb)
	before := map[string]*x509.Certificate{}
	for n, l := range lineageOf {
		before[n] = liveLeaf(t, store, l)
		waitServedSerial(t, ng.HTTPSPort, roots, n, before[n])
	}

	// The tenants' rows, as the old worker left them: ssl_issued, no expiry.
	ids := map[string]int64{}
	for n := range lineageOf {
		ids[n] = pg.InsertDomain(t, n)
		pg.Exec(t, `UPDATE tenant_customdomain SET status = 'ssl_issued' WHERE id = $1`, ids[n])
	}

	env := map[string]string{
		EnvBrokerURL: rd.URL, EnvDBURL: pg.URL, EnvCNAMETarget: target, EnvDNSServers: dns.DNSAddr,
		EnvACMEDirectoryURL: pb.DirectoryURL, EnvACMECABundle: pb.CABundle,
		EnvACMEWebroot: ng.Webroot, EnvLetsEncryptDir: store,
		EnvNginxConfPath: filepath.Join(ng.ConfDir, "custom-domains.conf"), EnvNginxBinary: ng.Binary,
		EnvNginxMainConf: ng.MainConf, EnvNginxPrefix: ng.Prefix, EnvNginxUpstream: "127.0.0.1:9",
		EnvNginxHTTPPort: strconv.Itoa(ng.HTTPPort), EnvNginxHTTPSPort: strconv.Itoa(ng.HTTPSPort),
	}

	// The guide starts with the pre-flight.
	code, out, errOut := runCLI(t, env, "check")
	if code != exitOK {
		t.Fatalf("check exit %d\n%s\n%s", code, out, errOut)
	}
	// Step 2: see what certmgr makes of the store.
	code, out, errOut = runCLI(t, env, "certificates", "--json")
	if code != exitOK {
		t.Fatalf("certificates exit %d\n%s\n%s", code, out, errOut)
	}
	var listing struct {
		Result []struct {
			Name         string   `json:"name"`
			Domains      []string `json:"domains"`
			Broken       bool     `json:"broken"`
			Valid        bool     `json:"valid"`
			RenewKeyType string   `json:"renew_key_type"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &listing); err != nil {
		t.Fatalf("certificates --json: %v\n%s", err, out)
	}
	if len(listing.Result) != len(lineages) {
		t.Fatalf("certificates lists %d lineages, want %d:\n%s", len(listing.Result), len(lineages), out)
	}
	for _, c := range listing.Result {
		wantKey := "ec256"
		if c.Name == rsaName {
			wantKey = "rsa2048"
		}
		if c.Broken || !c.Valid || c.RenewKeyType != wantKey {
			t.Errorf("certificates: %s broken=%v valid=%v renews with %q (want %s)", c.Name, c.Broken, c.Valid, c.RenewKeyType, wantKey)
		}
	}
	code, out, errOut = runCLI(t, env, "renew", "--dry-run")
	if code != exitOK {
		t.Fatalf("renew --dry-run exit %d\n%s\n%s", code, out, errOut)
	}
	for _, l := range lineages {
		want := l + ": kept"
		if l == near {
			want = l + ": would renew"
		}
		if !strings.Contains(out, want) {
			t.Errorf("renew --dry-run does not say %q:\n%s", want, out)
		}
	}

	// Steps 3-5: the old machinery goes, certmgr writes nginx's file.
	for _, f := range []string{webrootConf, oldConf} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut = runCLI(t, env, "regen-nginx")
	if code != exitOK || !strings.Contains(out, fmt.Sprintf("%d domain(s) served", len(lineageOf))) {
		t.Fatalf("regen-nginx exit %d\n%s\n%s", code, out, errOut)
	}
	for n := range lineageOf {
		waitServedSerial(t, ng.HTTPSPort, roots, n, before[n])
		var expires time.Time
		var status string
		if err := pg.Conn(t).QueryRow(context.Background(), `SELECT status, cert_expires_at FROM tenant_customdomain WHERE id = $1`, ids[n]).Scan(&status, &expires); err != nil {
			t.Fatalf("row of %s: %v", n, err)
		}
		if status != "ssl_issued" || !expires.Equal(before[n].NotAfter) {
			t.Errorf("row of %s after regen-nginx: %s, expires %s; want ssl_issued, %s", n, status, expires, before[n].NotAfter)
		}
	}

	// Step 6: the first sweep renews what is due, and only that.
	code, out, errOut = runCLI(t, env, "renew")
	if code != exitOK || !strings.Contains(out, near+": renewed") || !strings.Contains(out, "renewed 1,") {
		t.Fatalf("renew exit %d\n%s\n%s", code, out, errOut)
	}
	after := liveLeaf(t, store, near)
	if after.SerialNumber.Cmp(nearLeaf.SerialNumber) == 0 || !sameNames(after, nearLeaf) || keyOf(after) != "ec256" {
		t.Errorf("%s renewed into %x %v %s", near, after.SerialNumber, after.DNSNames, keyOf(after))
	}
	waitServedSerial(t, ng.HTTPSPort, roots, near, after)

	// issue --force, as the guide suggests for a lineage in doubt: it renews
	// the lineage that serves the name, with all its names and its key type.
	for _, tc := range []struct{ domain, lineage, key string }{
		{www, two, "ec256"}, {rsaName, rsaName, "rsa2048"}, {shop, "custom-name", "ec256"},
	} {
		old := liveLeaf(t, store, tc.lineage)
		code, out, errOut = runCLI(t, env, "issue", "--domain", tc.domain, "--force")
		if code != exitOK {
			t.Fatalf("issue --force %s exit %d\n%s\n%s", tc.domain, code, out, errOut)
		}
		l := liveLeaf(t, store, tc.lineage)
		if l.SerialNumber.Cmp(old.SerialNumber) == 0 || !sameNames(l, old) || keyOf(l) != tc.key {
			t.Errorf("issue --force %s: lineage %s now %v %s (was %v %s)", tc.domain, tc.lineage, l.DNSNames, keyOf(l), old.DNSNames, keyOf(old))
		}
		for n, ln := range lineageOf {
			if ln == tc.lineage {
				waitServedSerial(t, ng.HTTPSPort, roots, n, l)
			}
		}
	}
	confs, _ := filepath.Glob(filepath.Join(store, "renewal", "*.conf"))
	if len(confs) != len(lineages) {
		t.Errorf("the store has %d lineages after the migration, want %d (a lineage was split): %v", len(confs), len(lineages), confs)
	}

	// Rollback: certbot still reads and renews the store.
	out = cb.run(t, "certificates")
	for _, l := range lineages {
		if !strings.Contains(out, "Certificate Name: "+l+"\n") {
			t.Errorf("certbot certificates does not list %s:\n%s", l, out)
		}
	}
	if strings.Contains(out, "INVALID") || strings.Count(out, "(VALID: ") != len(lineages) {
		t.Errorf("certbot certificates after the migration:\n%s", out)
	}
	// certbot's dry run orders from Pebble over the webroot certmgr's nginx
	// file now serves.
	out = cb.run(t, "renew", "--dry-run", "--server", pb.DirectoryURL, "--no-random-sleep-on-renew")
	if !strings.Contains(out, "all simulated renewals succeeded") && !strings.Contains(out, "Congratulations, all simulated renewals succeeded") {
		t.Errorf("certbot renew --dry-run:\n%s", out)
	}
}

// sameNames: the two certificates name the same set of domains (Pebble
// orders SANs as it likes).
func sameNames(a, b *x509.Certificate) bool {
	x, y := slices.Clone(a.DNSNames), slices.Clone(b.DNSNames)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func mustReadlink(t *testing.T, p string) string {
	t.Helper()
	s, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
