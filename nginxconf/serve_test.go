package nginxconf

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
)

// TestServe drives real nginx on loopback with real TLS, in every mode: each
// domain's SNI gets its own certificate and chain and reaches the upstream
// with the proxy headers; unknown names get 421; the HTTP port serves
// challenges, the health check, and redirects the rest.
func TestServe(t *testing.T) {
	t.Parallel()
	for _, mode := range []CertMode{CertModePerServer, CertModeVariable, CertModeLua} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			checkServes(t, setup(t, mode), mode)
		})
	}
	// The same on an nginx with ssl_certificate_cache, when one is present
	// (see newerNginx): auto picks variable mode with the cache there.
	if bin := newerNginx(t); bin != "" {
		for _, mode := range []CertMode{CertModePerServer, CertModeAuto} {
			t.Run("newer-nginx/"+string(mode), func(t *testing.T) {
				t.Parallel()
				checkServes(t, setupNginx(t, mode, bin), map[CertMode]CertMode{CertModeAuto: CertModeVariable}[mode])
			})
		}
	}
}

// checkServes is TestServe's check of one fixture; wantMode is the mode the
// file must say it was rendered in ("" for no check).
func checkServes(t *testing.T, f *fixture, wantMode CertMode) {
	t.Helper()
	names := []string{"shop.example.com", "events.tenant-a.org", "xn--bcher-kva.example"}
	for _, n := range names {
		writeLineage(t, f.le, n, leafOpts{})
	}
	res := f.regenerate(t, names...)
	if !res.Changed || len(res.Skipped) != 0 || len(res.Served) != 3 {
		t.Fatalf("Regenerate = %+v; want 3 served, changed", res)
	}
	if wantMode != "" && res.Plan.Mode != wantMode {
		t.Fatalf("rendered in mode %s (%s); want %s", res.Plan.Mode, res.Plan.Reason, wantMode)
	}

	for _, n := range names {
		r, err := f.get(n, n, "/path?q=1", true)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if r.status != 200 || r.body != "upstream "+n+" /path?q=1" {
			t.Errorf("%s: %d %q; want 200 from the upstream", n, r.status, r.body)
		}
		if !slices.Equal(r.leaf.DNSNames, []string{n}) {
			t.Errorf("%s: served certificate for %v", n, r.leaf.DNSNames)
		}
		if r.chain != 2 {
			t.Errorf("%s: served %d certificates; want the leaf and its intermediate (fullchain.pem)", n, r.chain)
		}
		if r.proto != 2 {
			t.Errorf("%s: HTTP/%d; want HTTP/2", n, r.proto)
		}
		h := f.upstream.headers(n)
		for k, want := range map[string]string{
			"Host": n, "X-Forwarded-Proto": "https", "X-Forwarded-Host": n, "X-Forwarded-For": "127.0.0.1",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: upstream saw %s %q; want %q", n, k, got, want)
			}
		}
		if err := f.websocket(n); err != nil {
			t.Errorf("%s: websocket through nginx: %v", n, err)
		}
	}

	// Unknown SNI: the default certificate and 421.
	r, err := f.get("other.example.net", "other.example.net", "/", false)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusMisdirectedRequest || r.leaf.Subject.CommonName != "default.invalid" {
		t.Errorf("unknown SNI: %d with certificate %q; want 421 with the default certificate", r.status, r.leaf.Subject.CommonName)
	}
	// Known SNI, unknown Host: 421, never another tenant's site.
	r, err = f.get("shop.example.com", "other.example.net", "/", true)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusMisdirectedRequest {
		t.Errorf("known SNI, unknown Host: %d; want 421", r.status)
	}

	// HTTP port: the challenge token, /ping/, and a redirect for the rest.
	writeFile(t, filepath.Join(f.peer.Webroot, ".well-known", "acme-challenge", "tok-123"), "tok-123.thumbprint")
	r, err = f.getHTTP("shop.example.com", "/.well-known/acme-challenge/tok-123")
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 || r.body != "tok-123.thumbprint" {
		t.Errorf("challenge: %d %q", r.status, r.body)
	}
	r, err = f.getHTTP("shop.example.com", "/.well-known/acme-challenge/missing")
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 404 {
		t.Errorf("missing challenge: %d; want 404, not a redirect", r.status)
	}
	r, err = f.getHTTP("shop.example.com", "/cart?id=7")
	if err != nil {
		t.Fatal(err)
	}
	if loc := r.header.Get("Location"); r.status != 301 || loc != "https://shop.example.com/cart?id=7" {
		t.Errorf("http: %d Location %q; want 301 to https", r.status, loc)
	}
	// The load balancer's health check arrives with an address as Host.
	r, err = f.getHTTP("127.0.0.1", "/ping/")
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 || !strings.HasPrefix(r.body, "upstream 127.0.0.1 /ping/") {
		t.Errorf("health check: %d %q; want the upstream's answer", r.status, r.body)
	}

	// Removing a domain: its SNI now gets 421.
	f.regenerate(t, "events.tenant-a.org", "xn--bcher-kva.example")
	r, err = f.get("shop.example.com", "shop.example.com", "/", false)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusMisdirectedRequest {
		t.Errorf("removed domain: %d; want 421", r.status)
	}
}

// TestServeAuto: auto mode on Debian's nginx (no certificate cache) renders
// per-server up to AutoVariableAbove domains and variable above, both served,
// and reports the rule.
func TestServeAuto(t *testing.T) {
	t.Parallel()
	f := setup(t, CertModeAuto, func(c *Config) { c.AutoVariableAbove = 2 })
	names := []string{"a.example.com", "b.example.com", "c.example.com"}
	for _, n := range names {
		writeLineage(t, f.le, n, leafOpts{})
	}
	res := f.regenerate(t, names[:2]...)
	if res.Plan.Mode != CertModePerServer || res.Plan.Rule != RuleSmallFleet || res.Plan.HTTP2 != HTTP2Listen {
		t.Errorf("2 domains: plan %+v; want per-server, small-fleet, listen http2", res.Plan)
	}
	res = f.regenerate(t, names...)
	if res.Plan.Mode != CertModeVariable || res.Plan.Rule != RuleLargeFleet || res.Plan.CertCache != 0 {
		t.Errorf("3 domains: plan %+v; want variable, large-fleet, no cache", res.Plan)
	}
	f.checkAuto(t, "# mode variable, 3 domains\n# NGINX_CERT_MODE=auto: 3 domains, more than 2", names)
}

// checkAuto checks that the live file's head says header (its mode and why)
// and that each of names is served with its own certificate.
func (f *fixture) checkAuto(t *testing.T, header string, names []string) {
	t.Helper()
	live, err := os.ReadFile(f.cfg.ConfPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(live), header) {
		t.Errorf("live file does not say its mode and why (%q):\n%.300s", header, live)
	}
	for _, n := range names {
		r, err := f.get(n, n, "/", true)
		if err != nil || r.status != 200 || !slices.Equal(r.leaf.DNSNames, []string{n}) {
			t.Errorf("%s: %v %+v", n, err, r.status)
		}
	}
}

// TestServeAutoLua: on an nginx whose main configuration loads the lua
// module, auto picks lua mode at any size, says why in the file, and serves.
func TestServeAutoLua(t *testing.T) {
	t.Parallel()
	f := setupPeer(t, CertModeAuto, testpeers.NginxOptions{Lua: true})
	names := []string{"a.example.com", "b.example.com"}
	for _, n := range names {
		writeLineage(t, f.le, n, leafOpts{})
	}
	res := f.regenerate(t, names...)
	if res.Plan.Mode != CertModeLua || res.Plan.Rule != RuleLua || res.Plan.LuaCache != 1000 {
		t.Errorf("plan %+v; want lua, rule lua, a cache of 1000", res.Plan)
	}
	f.checkAuto(t, "# mode lua, 2 domains\n# NGINX_CERT_MODE=auto: nginx 1.22.1 loads the lua module", names)
}

// TestServeAutoLuaPlatformLua: a main configuration with Lua of its own in
// http{} (braces in strings and comments, no ';' after the last statement)
// is read as nginx reads it: the candidate is proven with nginx -t, auto
// still picks lua (an init_worker_by_lua is not an init_by_lua), and the
// names are served.
func TestServeAutoLuaPlatformLua(t *testing.T) {
	t.Parallel()
	f := setupPeer(t, CertModeAuto, testpeers.NginxOptions{Lua: true, MainHTTP: platformLua})
	names := []string{"a.example.com", "b.example.com"}
	for _, n := range names {
		writeLineage(t, f.le, n, leafOpts{})
	}
	res := f.regenerate(t, names...)
	if res.Plan.Mode != CertModeLua || res.Plan.Rule != RuleLua {
		t.Errorf("plan %+v; want lua, rule lua", res.Plan)
	}
	for _, n := range names {
		if r, err := f.get(n, n, "/", true); err != nil || r.status != 200 {
			t.Errorf("%s: %v %d; want 200", n, err, r.status)
		}
	}
}

// TestServeLuaManyNames: 20,000 names in lua mode, hundreds of long strings
// in the file (each within nginx's 4 KB configuration buffer), go live
// through nginx -t and a reload, and the first, a middle and the last name
// are each served; a name one past them is not. The names share one
// wildcard lineage, so the store holds one certificate.
func TestServeLuaManyNames(t *testing.T) {
	t.Parallel()
	f := setup(t, CertModeLua)
	leaf := writeLineage(t, f.le, "many", leafOpts{dnsNames: []string{"*.many.example"}})
	var ds []Domain
	name := func(i int) string { return fmt.Sprintf("tenant-shop-%05d.many.example", i) }
	const n = 20000
	for i := range n {
		ds = append(ds, Domain{Name: domain.Name(name(i)), Lineage: "many"})
	}
	before := f.workers(t)
	res, err := f.gen.Regenerate(t.Context(), ds)
	if err != nil || len(res.Served) != n || len(res.Skipped) != 0 {
		t.Fatalf("Regenerate: %v, %d served, skipped %v", err, len(res.Served), res.Skipped[:min(3, len(res.Skipped))])
	}
	if err := f.reloader.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitReplaced(t, f.peer, before, time.Minute)
	live, err := os.ReadFile(f.cfg.ConfPath)
	if err != nil {
		t.Fatal(err)
	}
	if chunks := strings.Count(string(live), "add[==["); chunks < 100 {
		t.Errorf("%d long strings for %d names; want them split", chunks, n)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		r, err := f.get(name(i), name(i), "/", true)
		if err != nil || r.status != 200 || r.leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Errorf("%s: %v %d; want 200 with the lineage's certificate", name(i), err, r.status)
		}
	}
	r, err := f.get(name(n), name(n), "/", false)
	if err != nil || r.status != http.StatusMisdirectedRequest || r.leaf.Subject.CommonName != "default.invalid" {
		t.Errorf("%s (not served): %v %d; want 421 with the default certificate", name(n), err, r.status)
	}
}

// TestServeLeavesOutBadCertificates: a missing, mismatched, expired or
// foreign certificate keeps its domain out with a reason; the others are
// served.
func TestServeLeavesOutBadCertificates(t *testing.T) {
	t.Parallel()
	for _, mode := range []CertMode{CertModePerServer, CertModeVariable, CertModeLua} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			f := setup(t, mode)
			writeLineage(t, f.le, "good.example.com", leafOpts{})
			writeLineage(t, f.le, "mismatch.example.com", leafOpts{wrongKey: true})
			writeLineage(t, f.le, "expired.example.com", leafOpts{notAfter: time.Now().Add(-time.Hour)})
			writeLineage(t, f.le, "foreign.example.com", leafOpts{dnsNames: []string{"other.example.com"}})
			res := f.regenerate(t, "good.example.com", "missing.example.com", "mismatch.example.com",
				"expired.example.com", "foreign.example.com")

			if !slices.Equal(res.Served, []domain.Name{"good.example.com"}) {
				t.Errorf("served %v; want only good.example.com", res.Served)
			}
			want := map[domain.Name]SkipKind{
				"missing.example.com": SkipMissing, "mismatch.example.com": SkipMismatch,
				"expired.example.com": SkipExpired, "foreign.example.com": SkipNotCovered,
			}
			if len(res.Skipped) != len(want) {
				t.Errorf("skipped %+v", res.Skipped)
			}
			for _, s := range res.Skipped {
				if want[s.Name] != s.Kind || s.Reason == "" {
					t.Errorf("skipped %s as %s (%q); want %s with a reason", s.Name, s.Kind, s.Reason, want[s.Name])
				}
			}
			r, err := f.get("good.example.com", "good.example.com", "/", true)
			if err != nil || r.status != 200 {
				t.Errorf("good.example.com: %+v %v; want 200", r.status, err)
			}
			for n := range want {
				r, err := f.get(string(n), string(n), "/", false)
				if err != nil {
					t.Fatalf("%s: %v", n, err)
				}
				if r.status != http.StatusMisdirectedRequest {
					t.Errorf("%s: %d; want 421", n, r.status)
				}
			}
		})
	}
}

// TestServeRenewal: in per-server mode a renewed certificate changes the
// file (its fingerprint), so it is applied and reloaded; in variable and lua
// mode the file stays the same and nginx serves the new certificate without
// a reload, once the worker's cached one is older than CertRecheck (lua;
// nginx 1.22 has no certificate cache in variable mode and reads the file at
// every handshake).
func TestServeRenewal(t *testing.T) {
	t.Parallel()
	for _, mode := range []CertMode{CertModePerServer, CertModeVariable, CertModeLua} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			f := setup(t, mode, func(c *Config) { c.CertRecheck = time.Second })
			first := writeLineage(t, f.le, "renew.example.com", leafOpts{})
			f.regenerate(t, "renew.example.com")
			if got := f.serial(t, "renew.example.com"); got != first.SerialNumber.String() {
				t.Fatalf("before renewal: serial %s; want %s", got, first.SerialNumber)
			}
			workers := f.workers(t)
			renewed := writeLineage(t, f.le, "renew.example.com", leafOpts{notAfter: time.Now().Add(48 * time.Hour)})
			res := f.regenerate(t, "renew.example.com")
			if want := mode == CertModePerServer; res.Changed != want {
				t.Errorf("after renewal Changed = %v; want %v", res.Changed, want)
			}
			if mode != CertModePerServer && !slices.Equal(f.workers(t), workers) {
				t.Errorf("workers %v replaced by %v: nginx reloaded for a renewal", workers, f.workers(t))
			}
			testpeers.Until(t, 10*time.Second, "the renewed certificate is served", func() bool {
				return f.serial(t, "renew.example.com") == renewed.SerialNumber.String()
			})
		})
	}
}

// TestServeLuaHalfRenewal: in lua mode a lineage whose new fullchain.pem
// does not match its privkey.pem (a renewal caught half done) keeps being
// served with the certificate the worker has, says so in nginx's log, and
// the completed renewal is served once it lands, all without a reload.
func TestServeLuaHalfRenewal(t *testing.T) {
	t.Parallel()
	f := setup(t, CertModeLua, func(c *Config) { c.CertRecheck = time.Second })
	first := writeLineage(t, f.le, "half.example.com", leafOpts{})
	f.regenerate(t, "half.example.com")
	serial := func() string { return f.serial(t, "half.example.com") }
	if got := serial(); got != first.SerialNumber.String() {
		t.Fatalf("serial %s; want %s", got, first.SerialNumber)
	}
	workers := f.workers(t)
	writeLineage(t, f.le, "half.example.com", leafOpts{wrongKey: true})
	time.Sleep(1500 * time.Millisecond) // past the recheck
	for range 3 {
		if got := serial(); got != first.SerialNumber.String() {
			t.Fatalf("half-done renewal: serial %s; want the cached %s", got, first.SerialNumber)
		}
	}
	testpeers.Until(t, 5*time.Second, "nginx's log names the half-done renewal", func() bool {
		b, _ := os.ReadFile(f.peer.ErrorLog)
		return strings.Contains(string(b), "keeping the cached certificate of half.example.com") &&
			strings.Contains(string(b), "does not belong to fullchain.pem")
	})
	done := writeLineage(t, f.le, "half.example.com", leafOpts{})
	testpeers.Until(t, 10*time.Second, "the completed renewal is served", func() bool {
		return serial() == done.SerialNumber.String()
	})
	if !slices.Equal(f.workers(t), workers) {
		t.Errorf("nginx reloaded: workers %v, then %v", workers, f.workers(t))
	}
}

// TestServeLuaRewrittenArchive: a lineage whose archive files are written
// again under the same names (deleted and issued again from version 1, or
// replaced by a store mirror) keeps certbot's live/ links as they were; lua
// mode still serves the new certificate, within six rechecks, without a
// reload.
func TestServeLuaRewrittenArchive(t *testing.T) {
	t.Parallel()
	f := setup(t, CertModeLua, func(c *Config) { c.CertRecheck = time.Second })
	first := writeLineage(t, f.le, "again.example.com", leafOpts{})
	f.regenerate(t, "again.example.com")
	serial := func() string { return f.serial(t, "again.example.com") }
	if got := serial(); got != first.SerialNumber.String() {
		t.Fatalf("serial %s; want %s", got, first.SerialNumber)
	}
	workers := f.workers(t)
	scratch := t.TempDir()
	second := writeLineage(t, scratch, "again.example.com", leafOpts{})
	for _, name := range []string{"privkey1.pem", "fullchain1.pem"} {
		b, err := os.ReadFile(filepath.Join(scratch, "archive", "again.example.com", name))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(f.le, "archive", "again.example.com", name)
		writeFile(t, path+".tmp", string(b))
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	testpeers.Until(t, 20*time.Second, "the rewritten certificate is served", func() bool {
		return serial() == second.SerialNumber.String()
	})
	if !slices.Equal(f.workers(t), workers) {
		t.Errorf("nginx reloaded: workers %v, then %v", workers, f.workers(t))
	}
}

// TestServeLuaEdges: lua mode compares the SNI in lower case, fails the
// handshake of a served name whose certificate cannot be loaded (never the
// tenant's site under the default certificate), and keeps serving correct
// chains while its cache (2 lineages here) evicts and the garbage collector
// frees parsed certificates whose intermediates are shared.
func TestServeLuaEdges(t *testing.T) {
	t.Parallel()
	f := setup(t, CertModeLua, func(c *Config) { c.CertCacheMax = 2 })
	names := []string{"a.example.com", "b.example.com", "c.example.com", "broken.example.com"}
	for _, n := range names {
		writeLineage(t, f.le, n, leafOpts{})
	}
	res := f.regenerate(t, names...)
	if res.Plan.LuaCache != 2 || len(res.Served) != 4 {
		t.Fatalf("plan %+v, served %v; want a cache of 2 and 4 names", res.Plan, res.Served)
	}
	// Vetted and in the file, then its key goes missing.
	if err := os.Remove(filepath.Join(f.le, "live", "broken.example.com", "privkey.pem")); err != nil {
		t.Fatal(err)
	}

	r, err := f.get("A.Example.COM", "a.example.com", "/", false)
	if err != nil || r.status != 200 || !slices.Equal(r.leaf.DNSNames, []string{"a.example.com"}) {
		t.Errorf("mixed-case SNI: %v %d; want 200 with a.example.com's certificate", err, r.status)
	}
	// Each handshake fails, but the worker tries the files again (and logs)
	// at most once a second: clients cannot make it reread and log at will.
	start := time.Now()
	const tries = 20
	for range tries {
		if _, err := f.get("broken.example.com", "broken.example.com", "/", false); err == nil {
			t.Fatal("a served name without its key: the handshake succeeded; want it to fail")
		}
	}
	allowed := 2 + int(time.Since(start).Seconds())
	testpeers.Until(t, 5*time.Second, "nginx's log names the broken lineage", func() bool {
		b, _ := os.ReadFile(f.peer.ErrorLog)
		return strings.Contains(string(b), "certmgr: certificate of broken.example.com")
	})
	b, _ := os.ReadFile(f.peer.ErrorLog)
	if n := strings.Count(string(b), "certmgr: certificate of broken.example.com"); n > allowed {
		t.Errorf("%d failed handshakes logged the broken lineage %d times; want at most %d (one load a second)", tries, n, allowed)
	}
	for i := range 150 {
		n := names[i%3]
		r, err := f.get(n, n, "/", true)
		if err != nil || r.status != 200 || !slices.Equal(r.leaf.DNSNames, []string{n}) || r.chain != 2 {
			t.Fatalf("handshake %d, %s, through evictions: %v %d chain %d", i, n, err, r.status, r.chain)
		}
	}
	b, _ = os.ReadFile(f.peer.ErrorLog)
	for _, bad := range []string{"[alert]", "[crit]", "signal 11", "double free"} {
		if strings.Contains(string(b), bad) {
			t.Errorf("nginx's log has %q", bad)
		}
	}
}

// TestServeLuaPlainFiles: a lineage whose fullchain.pem and privkey.pem are
// plain files, not certbot's symlinks (a hand-made one), is rechecked by
// its content: a renewal written over them is served without a reload.
func TestServeLuaPlainFiles(t *testing.T) {
	t.Parallel()
	f := setup(t, CertModeLua, func(c *Config) { c.CertRecheck = time.Second })
	scratch := t.TempDir()
	plain := func(o leafOpts, preamble string) *x509.Certificate {
		t.Helper()
		leaf := writeLineage(t, scratch, "plain.example.com", o)
		dir := filepath.Join(f.le, "live", "plain.example.com")
		for _, name := range []string{"privkey.pem", "fullchain.pem"} {
			b, err := os.ReadFile(filepath.Join(scratch, "live", "plain.example.com", name))
			if err != nil {
				t.Fatal(err)
			}
			if name == "fullchain.pem" {
				b = append([]byte(preamble), b...)
			}
			writeFile(t, filepath.Join(dir, name+".tmp"), string(b))
			if err := os.Rename(filepath.Join(dir, name+".tmp"), filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
		return leaf
	}
	// Text before the first certificate, as `openssl x509` writes it: nginx
	// and the vetter skip it, and so must lua mode's parser.
	first := plain(leafOpts{}, "\nsubject=CN = plain.example.com\nissuer=CN = certmgr test CA\n\n")
	f.regenerate(t, "plain.example.com")
	serial := func() string { return f.serial(t, "plain.example.com") }
	if got := serial(); got != first.SerialNumber.String() {
		t.Fatalf("serial %s; want %s", got, first.SerialNumber)
	}
	workers := f.workers(t)
	renewed := plain(leafOpts{notAfter: time.Now().Add(48 * time.Hour)}, "")
	if res := f.regenerate(t, "plain.example.com"); res.Changed {
		t.Error("a renewal changed the lua-mode file")
	}
	testpeers.Until(t, 10*time.Second, "the renewed plain-file certificate is served", func() bool {
		return serial() == renewed.SerialNumber.String()
	})
	if !slices.Equal(f.workers(t), workers) {
		t.Errorf("nginx reloaded: workers %v, then %v", workers, f.workers(t))
	}
}
