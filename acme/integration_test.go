package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-acme/lego/v5/acme/api"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
)

func init() {
	// lego logs to stdout by default; keep test output readable.
	SetLegoLogger(zerolog.Nop())
}

// acmeSetup is the bundle every issuance test starts from: nginx serving the
// webroot on its HTTP port, challtestsrv resolving test names to 127.0.0.1,
// Pebble validating against that nginx, and a Manager with its own store.
type acmeSetup struct {
	nginx  *testpeers.NginxPeer
	dns    *testpeers.ChallTestSrvPeer
	pebble *testpeers.PebblePeer
	clock  *testpeers.Clock
	cfg    Config
	m      *Manager
}

type setupOptions struct {
	pebble testpeers.PebbleOptions
	// directory overrides Pebble's directory URL (a proxy in front of it);
	// bundle then trusts both.
	proxy func(t *testing.T, s *acmeSetup) (dirURL string, caFile string)
	cfg   func(*Config)
}

func webrootServer(port int, webroot string) string {
	return fmt.Sprintf(`server {
    listen 127.0.0.1:%d;
    server_name _;
    location /.well-known/acme-challenge/ {
        root %s;
        default_type text/plain;
    }
}
`, port, webroot)
}

func setup(t *testing.T, opts setupOptions) *acmeSetup {
	t.Helper()
	s := &acmeSetup{clock: &testpeers.Clock{}}
	s.dns = testpeers.ChallTestSrv(t)
	// nginx starts with no server; the webroot server needs its port first.
	s.nginx = testpeers.Nginx(t, testpeers.NginxOptions{})
	if err := os.WriteFile(filepath.Join(s.nginx.ConfDir, "webroot.conf"), []byte(webrootServer(s.nginx.HTTPPort, s.nginx.Webroot)), 0o644); err != nil {
		t.Fatal(err)
	}
	s.nginx.ReloadAndWait(t)

	po := opts.pebble
	po.HTTPPort = s.nginx.HTTPPort
	po.DNS = s.dns
	s.pebble = testpeers.Pebble(t, po)
	s.cfg = Config{
		DirectoryURL: s.pebble.DirectoryURL,
		CABundle:     s.pebble.CABundle,
		Email:        "ops@example.com",
		Webroot:      s.nginx.Webroot,
		Dir:          filepath.Join(t.TempDir(), "letsencrypt"),
		Now:          s.clock.Now,
		Logger:       zerolog.New(zerolog.NewTestWriter(t)),
		HTTPTimeout:  10 * time.Second,
	}
	if opts.proxy != nil {
		s.cfg.DirectoryURL, s.cfg.CABundle = opts.proxy(t, s)
	}
	if opts.cfg != nil {
		opts.cfg(&s.cfg)
	}
	m, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.m = m
	return s
}

// name returns a fresh test domain that resolves to 127.0.0.1 for Pebble.
func (s *acmeSetup) name(t *testing.T, label string) domain.Name {
	t.Helper()
	d, err := domain.Parse(label + ".certmgr-test.example.com")
	if err != nil {
		t.Fatal(err)
	}
	s.dns.AddA(t, string(d), "127.0.0.1")
	return d
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// certbotCertificates runs Debian's certbot on the store and returns its output.
func certbotCertificates(t *testing.T, store string) string {
	t.Helper()
	bin, err := exec.LookPath("certbot")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("certbot missing: apt-get install certbot")
		}
		t.Skip("certbot missing: apt-get install certbot")
	}
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "certificates", "--config-dir", store,
		"--work-dir", filepath.Join(work, "work"), "--logs-dir", filepath.Join(work, "logs"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("certbot certificates: %v\n%s", err, out)
	}
	return string(out)
}

func TestIssueIsListedByCertbotAndServedByNginx(t *testing.T) {
	t.Parallel()
	s := setup(t, setupOptions{})
	d := s.name(t, "shop")
	l, err := s.m.Issue(ctxT(t), d)
	if err != nil {
		t.Fatal(err)
	}
	if l.Name != LineageName(d) || l.Version != 1 || l.KeyType != EC256 {
		t.Fatalf("issued lineage %+v", l)
	}
	// The token files are gone from the webroot.
	left, _ := os.ReadDir(filepath.Join(s.nginx.Webroot, ".well-known", "acme-challenge"))
	if len(left) != 0 {
		t.Errorf("challenge files left in the webroot: %v", left)
	}
	// The account key was created once, 0600, and is reused by a new manager.
	keys, _ := filepath.Glob(filepath.Join(s.cfg.Dir, "accounts", "certmgr", "*", "*", "private_key.pem"))
	if len(keys) != 1 {
		t.Fatalf("account keys: %v", keys)
	}
	if st, _ := os.Stat(keys[0]); st.Mode().Perm() != 0o600 {
		t.Errorf("account key mode %v", st.Mode().Perm())
	}
	keyBefore, _ := os.ReadFile(keys[0])

	out := certbotCertificates(t, s.cfg.Dir)
	for _, want := range []string{
		"Certificate Name: " + string(d),
		"Domains: " + string(d),
		"(VALID: ",
		"Certificate Path: " + l.Live.Fullchain,
		"Private Key Path: " + l.Live.Privkey,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("certbot certificates lacks %q:\n%s", want, out)
		}
	}

	// nginx serves the live pair for that SNI.
	tlsConf := fmt.Sprintf(`server {
    listen 127.0.0.1:%d ssl;
    server_name %s;
    ssl_certificate %s;
    ssl_certificate_key %s;
    return 200 "ok\n";
}
`, s.nginx.HTTPSPort, d, l.Live.Fullchain, l.Live.Privkey)
	if err := os.WriteFile(filepath.Join(s.nginx.ConfDir, "tls.conf"), []byte(tlsConf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.nginx.Test(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	s.nginx.ReloadAndWait(t)
	served := handshake(t, s, d)
	if served.SerialNumber.Cmp(l.Leaf().SerialNumber) != 0 {
		t.Errorf("nginx served serial %x, stored %s", served.SerialNumber, l.Serial)
	}

	// A second manager on the same store (a restart, or another replica)
	// reuses the account key; a changed ACME_EMAIL updates its contact.
	cfg2 := s.cfg
	cfg2.Email = "certs@example.com"
	m2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := m2.Issue(ctxT(t), d)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Version != 2 {
		t.Errorf("reissue went to version %d, want 2", l2.Version)
	}
	keyAfter, _ := os.ReadFile(keys[0])
	if !bytes.Equal(keyBefore, keyAfter) {
		t.Error("account key replaced")
	}
	for _, m := range []*Manager{s.m, m2} {
		client, err := m.connect(ctxT(t), true)
		if err != nil {
			t.Fatal(err)
		}
		acct, err := client.Registration.QueryRegistration(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(acct.Contact, []string{"mailto:certs@example.com"}) || acct.Location != m2.acct.reg.Location {
			t.Errorf("account %s contact %v, want the one account with mailto:certs@example.com", acct.Location, acct.Contact)
		}
	}
	s.nginx.ReloadAndWait(t)
	if served := handshake(t, s, d); served.SerialNumber.Cmp(l2.Leaf().SerialNumber) != 0 {
		t.Errorf("after renewal and reload nginx serves %x, want %s", served.SerialNumber, l2.Serial)
	}
}

// handshake connects to nginx's TLS port with SNI d and verifies the chain up
// to Pebble's root.
func handshake(t *testing.T, s *acmeSetup, d domain.Name) *x509.Certificate {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(s.pebble.RootPEM(t))
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.nginx.HTTPSPort), &tls.Config{ServerName: string(d), RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS handshake with SNI %s: %v", d, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

func TestRenewCertbotLineageIntoNextVersion(t *testing.T) {
	t.Parallel()
	s := setup(t, setupOptions{})
	d := s.name(t, "legacy")
	name := string(d) + "-0001"
	ca := newTestCA(t)
	now := time.Now()
	old := ca.issue(t, now.Add(-80*24*time.Hour), now.Add(10*24*time.Hour), string(d))
	// certbot's own file for this lineage: the fixture with this store's paths.
	conf, _ := os.ReadFile("testdata/full_renewal.conf")
	conf = bytes.ReplaceAll(conf, []byte("/etc/letsencrypt"), []byte(s.cfg.Dir))
	conf = bytes.ReplaceAll(conf, []byte("test.example.com"), []byte(name))
	writeCertbotLineage(t, s.cfg.Dir, name, conf, old)

	st, err := s.m.Statuses(ctxT(t), true)
	if err != nil || len(st) != 1 {
		t.Fatalf("statuses %v %v", st, err)
	}
	// Pebble does not know this certificate: ARI fails, the one-third rule says due.
	if !st[0].Decision.Due || st[0].Decision.Source != SourceLifetime {
		t.Fatalf("decision for an old certbot certificate: %+v", st[0].Decision)
	}
	res, err := sweep(ctxT(t), s.m, false)
	if err != nil || len(res.Renewed) != 1 || len(res.Failed) != 0 {
		t.Fatalf("sweep: %+v %v", res, err)
	}
	l := res.Renewed[0]
	if l.Name != LineageName(name) || l.Version != 2 {
		t.Fatalf("renewed into %s version %d", l.Name, l.Version)
	}
	for _, kind := range kinds {
		target, _ := os.Readlink(filepath.Join(s.cfg.Dir, "live", name, kind+".pem"))
		if target != fmt.Sprintf("../../archive/%s/%s2.pem", name, kind) {
			t.Errorf("live %s.pem -> %s", kind, target)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(s.cfg.Dir, "archive", name, "cert1.pem")); !bytes.Equal(b, old.Cert) {
		t.Error("cert1.pem changed")
	}
	if b, _ := os.ReadFile(filepath.Join(s.cfg.Dir, "archive", name, "privkey1.pem")); !bytes.Equal(b, old.Key) {
		t.Error("privkey1.pem changed")
	}
	out := certbotCertificates(t, s.cfg.Dir)
	if !strings.Contains(out, "Certificate Name: "+name) || !strings.Contains(out, "(VALID: ") {
		t.Errorf("certbot certificates after renewal:\n%s", out)
	}
}

// setRenewalInfo sets Pebble's ARI answer for cert through its management API.
func setRenewalInfo(t *testing.T, p *testpeers.PebblePeer, cert *x509.Certificate, start, end time.Time) {
	t.Helper()
	ari, _ := json.Marshal(map[string]any{"suggestedWindow": map[string]string{
		"start": start.UTC().Format(time.RFC3339), "end": end.UTC().Format(time.RFC3339)}})
	body, _ := json.Marshal(map[string]string{
		"Certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		"ARIResponse": string(ari),
	})
	resp, err := p.Client.Post(p.ManagementURL+"/set-renewal-info/", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("set-renewal-info: %s %s", resp.Status, b)
	}
}

func TestARIWindowDecidesAndRenewalSendsReplaces(t *testing.T) {
	t.Parallel()
	orders := &orderRecorder{}
	s := setup(t, setupOptions{proxy: func(t *testing.T, s *acmeSetup) (string, string) {
		return pebbleProxy(t, s, orders.record, orders.learn)
	}})
	d := s.name(t, "ari")
	ctx := ctxT(t)
	l, err := s.m.Issue(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	start, end := now.Add(10*24*time.Hour), now.Add(12*24*time.Hour)
	setRenewalInfo(t, s.pebble, l.Leaf(), start, end)

	dec := s.m.Check(ctx, l)
	if dec.Due || dec.Source != SourceARI || dec.Window == nil || !dec.Window.Start.Equal(start.Truncate(time.Second)) {
		t.Fatalf("before the window: %+v", dec)
	}
	s.clock.Set(start.Add(-time.Second))
	if dec := s.m.Check(ctx, l); dec.Due {
		t.Fatalf("a second before the window: %+v", dec)
	}
	// The one-third rule would say not yet (day 12 of 90); ARI decides.
	s.clock.Set(end)
	dec = s.m.Check(ctx, l)
	if !dec.Due || dec.Source != SourceARI {
		t.Fatalf("at the end of the window: %+v", dec)
	}
	if dec.RenewAt.Before(dec.Window.Start) || dec.RenewAt.After(dec.Window.End) {
		t.Errorf("renewal time %s outside the window", dec.RenewAt)
	}
	res, err := sweep(ctx, s.m, false)
	if err != nil || len(res.Renewed) != 1 || res.Renewed[0].Version != 2 {
		t.Fatalf("sweep inside the window: %+v %v", res, err)
	}
	// The renewal order named the old certificate in `replaces`.
	id, _ := api.MakeARICertID(l.Leaf())
	got := orders.replaces()
	if len(got) != 2 || got[0] != "" || got[1] != id {
		t.Errorf("replaces of the new-order requests = %q, want [\"\" %q]", got, id)
	}
}

// orderRecorder records the `replaces` field of every new-order request that
// passes through a pebbleProxy.
type orderRecorder struct {
	mu       sync.Mutex
	newOrder string
	seen     []string
}

func (o *orderRecorder) learn(dir map[string]any) {
	if u, err := url.Parse(fmt.Sprint(dir["newOrder"])); err == nil {
		o.mu.Lock()
		o.newOrder = u.Path
		o.mu.Unlock()
	}
}

func (o *orderRecorder) record(_ http.ResponseWriter, r *http.Request) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != o.newOrder {
		return false
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var jws struct{ Payload string }
	_ = json.Unmarshal(body, &jws)
	payload, _ := base64.RawURLEncoding.DecodeString(jws.Payload)
	var order struct{ Replaces string }
	_ = json.Unmarshal(payload, &order)
	o.seen = append(o.seen, order.Replaces)
	return false
}

func (o *orderRecorder) replaces() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.seen)
}

// pebbleProxy is a TLS reverse proxy in front of Pebble, standing for a CA that
// behaves differently: mutate may answer a request itself. Pebble builds its
// URLs from the Host header, so every request of the client goes through it.
func pebbleProxy(t *testing.T, s *acmeSetup, mutate func(w http.ResponseWriter, r *http.Request) bool, modifyDir func(map[string]any)) (string, string) {
	t.Helper()
	target, _ := url.Parse(s.pebble.DirectoryURL)
	target.Path = ""
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = s.pebble.Client.Transport
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != "/dir" || modifyDir == nil {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		var dir map[string]any
		if err := json.Unmarshal(b, &dir); err != nil {
			return err
		}
		modifyDir(dir)
		b, _ = json.Marshal(dir)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", fmt.Sprint(len(b)))
		return nil
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mutate != nil && mutate(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	pebbleCA, _ := os.ReadFile(s.pebble.CABundle)
	bundle := append(pebbleCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})...)
	caFile := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(caFile, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL + "/dir", caFile
}

func TestWithoutARIOneThirdRuleAndProfile(t *testing.T) {
	t.Parallel()
	s := setup(t, setupOptions{
		pebble: testpeers.PebbleOptions{Profiles: map[string]time.Duration{
			"classic": 90 * 24 * time.Hour, "shortlived": 6 * 24 * time.Hour}},
		proxy: func(t *testing.T, s *acmeSetup) (string, string) {
			return pebbleProxy(t, s, nil, func(dir map[string]any) { delete(dir, "renewalInfo") })
		},
		cfg: func(c *Config) { c.Profile = "shortlived" },
	})
	d := s.name(t, "noari")
	ctx := ctxT(t)
	l, err := s.m.Issue(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	// ACME_PROFILE reached the CA: a 6-day certificate, not the 90-day default.
	if lt := l.Lifetime(); lt < 5*24*time.Hour || lt > 7*24*time.Hour {
		t.Fatalf("lifetime %s, want the shortlived profile's 6 days", lt)
	}
	renewAt := LifetimeRenewAt(l.NotBefore, l.NotAfter)
	s.clock.Set(renewAt.Add(-time.Minute))
	if dec := s.m.Check(ctx, l); dec.Due || dec.Source != SourceLifetime {
		t.Fatalf("before two thirds: %+v", dec)
	}
	s.clock.Set(renewAt.Add(time.Minute))
	dec := s.m.Check(ctx, l)
	if !dec.Due || dec.Source != SourceLifetime {
		t.Fatalf("after two thirds: %+v", dec)
	}
	res, err := sweep(ctx, s.m, true)
	if err != nil || res.Checked != 1 || len(res.Renewed) != 0 || !res.Statuses[0].Decision.Due {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	if again, _ := s.m.Store().Load(l.Name); again.Version != 1 {
		t.Errorf("dry run renewed: version %d", again.Version)
	}
}

func TestNonceRejectionsAreRetried(t *testing.T) {
	t.Parallel()
	s := setup(t, setupOptions{pebble: testpeers.PebbleOptions{NonceRejectPercent: 50}})
	d := s.name(t, "nonce")
	if _, err := s.m.Issue(ctxT(t), d); err != nil {
		t.Fatalf("issue with half the nonces rejected: %v", err)
	}
}

func TestCADownIsTransient(t *testing.T) {
	t.Parallel()
	s := setup(t, setupOptions{})
	d := s.name(t, "down")
	ctx := ctxT(t)
	l, err := s.m.Issue(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	s.pebble.Kill()
	// A fresh manager must connect: the directory is unreachable.
	m2, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m2.Issue(ctx, d)
	var te *TransientError
	if !errors.As(err, &te) || !IsTransient(err) {
		t.Fatalf("issue with the CA down: %v (%T), want *TransientError", err, err)
	}
	// The manager that was connected fails the same way on its next order.
	if _, err := s.m.Issue(ctx, d); !errors.As(err, &te) {
		t.Fatalf("issue on a connected manager with the CA down: %v, want *TransientError", err)
	}
	// Renewal checks fall back to the one-third rule and say why.
	dec := m2.Check(ctx, l)
	if dec.Source != SourceLifetime || dec.Due || !strings.Contains(dec.Reason, "ARI unavailable") {
		t.Errorf("check with the CA down: %+v", dec)
	}
	// The stored certificate is untouched.
	if again, _ := s.m.Store().Load(l.Name); again.Err != nil || again.Version != 1 {
		t.Errorf("lineage after failures: version %d, %v", again.Version, again.Err)
	}
}

func TestRateLimitCarriesRetryAfter(t *testing.T) {
	t.Parallel()
	var newOrder atomic.Pointer[string]
	s := setup(t, setupOptions{proxy: func(t *testing.T, s *acmeSetup) (string, string) {
		return pebbleProxy(t, s, func(w http.ResponseWriter, r *http.Request) bool {
			if p := newOrder.Load(); r.Method != http.MethodPost || p == nil || r.URL.Path != *p {
				return false
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates already issued for this name","status":429}`)
			return true
		}, func(dir map[string]any) {
			if u, err := url.Parse(fmt.Sprint(dir["newOrder"])); err == nil {
				newOrder.Store(&u.Path)
			}
		})
	}})
	d := s.name(t, "limited")
	_, err := s.m.Issue(ctxT(t), d)
	var rl *RateLimitedError
	if !errors.As(err, &rl) {
		t.Fatalf("issue when rate limited: %v (%T), want *RateLimitedError", err, err)
	}
	if rl.RetryAfter != time.Hour {
		t.Errorf("RetryAfter = %s, want 1h", rl.RetryAfter)
	}
	if _, err := s.m.Store().Load(NameFor(d)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a rate-limited order left a lineage: %v", err)
	}
}

func TestFailedValidationsBackOff(t *testing.T) {
	t.Parallel()
	s := setup(t, setupOptions{})
	// No A record yet: the CA cannot reach the name.
	d, err := domain.Parse("unrouted.certmgr-test.example.com")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	_, err = s.m.Issue(ctx, d)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("issue for a name that does not resolve: %v (%T), want *ValidationError", err, err)
	}
	// At once again: refused without an order, for about a minute, with the
	// CA's words on the failure; Backoff says so before anyone orders.
	_, err = s.m.Issue(ctx, d)
	var bo *BackoffError
	wait := func() time.Duration { return bo.RetryAt.Sub(s.clock.Now()) }
	if !errors.As(err, &bo) || !errors.Is(err, ErrValidationBackoff) || wait() > time.Minute || wait() < 50*time.Second ||
		bo.Failures != 1 || bo.Detail != ve.Detail {
		t.Fatalf("second attempt: %v, want a backoff of about 1 min after 1 failure (%q)", err, ve.Detail)
	}
	if err := s.m.Backoff(d); !errors.As(err, &bo) {
		t.Errorf("Backoff(%s) = %v, want *BackoffError", d, err)
	}
	if errors.As(err, new(*RateLimitedError)) {
		t.Errorf("certmgr's own backoff reads as the CA's rate limit: %v", err)
	}
	s.clock.Advance(61 * time.Second)
	if err := s.m.Backoff(d); err != nil {
		t.Errorf("Backoff after the minute: %v, want nil", err)
	}
	if _, err := s.m.Issue(ctx, d); !errors.As(err, &ve) {
		t.Fatalf("third attempt after a minute: %v, want *ValidationError", err)
	}
	if _, err := s.m.Issue(ctx, d); !errors.As(err, &bo) || wait() < 9*time.Minute || wait() > 10*time.Minute {
		t.Fatalf("after two failures: %v, want a backoff of about 10 min", err)
	}
	// Fixed DNS and ten minutes later: issued, and the record is cleared.
	s.dns.AddA(t, string(d), "127.0.0.1")
	s.clock.Advance(10 * time.Minute)
	if _, err := s.m.Issue(ctx, d); err != nil {
		t.Fatalf("after fixing DNS: %v", err)
	}
	if next, err := s.m.NextAttempt(NameFor(d)); err != nil || !next.IsZero() {
		t.Errorf("next attempt after success: %s %v", next, err)
	}
}

func TestKeyTypeIsUsedAndRecorded(t *testing.T) {
	t.Parallel()
	s := setup(t, setupOptions{cfg: func(c *Config) { c.KeyType = RSA2048 }})
	d := s.name(t, "rsa")
	l, err := s.m.Issue(ctxT(t), d)
	if err != nil {
		t.Fatal(err)
	}
	if l.KeyType != RSA2048 {
		t.Errorf("key type %s, want rsa2048", l.KeyType)
	}
	conf, err := readRenewalConf(l.RenewalConf)
	if err != nil {
		t.Fatal(err)
	}
	if conf.params["key_type"] != "rsa" || conf.params["rsa_key_size"] != "2048" {
		t.Errorf("renewalparams %v, want key_type rsa, rsa_key_size 2048", conf.params)
	}
	if out := certbotCertificates(t, s.cfg.Dir); !strings.Contains(out, "Key Type: RSA") {
		t.Errorf("certbot certificates:\n%s", out)
	}
}

func TestRenewRepairsBrokenLineage(t *testing.T) {
	t.Parallel()
	s := setup(t, setupOptions{})
	d := s.name(t, "broken")
	name := string(d) + "-0001"
	ca := newTestCA(t)
	now := time.Now()
	conf, _ := os.ReadFile("testdata/minimal_renewal.conf")
	conf = bytes.ReplaceAll(conf, []byte("/etc/letsencrypt"), []byte(s.cfg.Dir))
	conf = bytes.ReplaceAll(conf, []byte("test.example.com"), []byte(name))
	writeCertbotLineage(t, s.cfg.Dir, name, conf, ca.issue(t, now, now.Add(80*24*time.Hour), string(d)))
	if err := os.Remove(filepath.Join(s.cfg.Dir, "live", name, "privkey.pem")); err != nil {
		t.Fatal(err)
	}
	st, err := s.m.Statuses(ctxT(t), false)
	if err != nil || len(st) != 1 || st[0].Err == nil || !st[0].Decision.Due || st[0].Decision.Source != SourceBroken {
		t.Fatalf("broken lineage status: %+v %v", st, err)
	}
	l, err := s.m.Renew(ctxT(t), LineageName(name))
	if err != nil {
		t.Fatal(err)
	}
	if l.Err != nil || l.Version != 2 || !slices.Equal(l.Domains, []string{string(d)}) {
		t.Fatalf("repaired lineage: version %d domains %v err %v", l.Version, l.Domains, l.Err)
	}
}

// A certbot lineage keeps its name, its names and its key type through a
// renewal, and an Issue for any of its names renews it whole instead of
// starting a lineage for that one name.
func TestRenewKeepsLineageNamesAndKeyType(t *testing.T) {
	t.Parallel()
	s := setup(t, setupOptions{}) // ACME_KEY_TYPE ec256
	shop, www, two := s.name(t, "shop"), s.name(t, "www"), s.name(t, "two")
	ca := newTestCA(t)
	now := time.Now()
	writeCertbotLineage(t, s.cfg.Dir, "custom-name", confFor(s.cfg.Dir, "custom-name", []string{"key_type = rsa", "rsa_key_size = 2048"}, string(shop)),
		ca.issueRSA(t, 2048, now.Add(-80*24*time.Hour), now.Add(10*24*time.Hour), string(shop)))
	writeCertbotLineage(t, s.cfg.Dir, string(two), confFor(s.cfg.Dir, string(two), []string{"key_type = ecdsa"}, string(two), string(www)),
		ca.issue(t, now, now.Add(80*24*time.Hour), string(two), string(www)))

	l, err := s.m.Renew(ctxT(t), "custom-name")
	if err != nil {
		t.Fatal(err)
	}
	if l.Name != "custom-name" || l.Version != 2 || l.KeyType != RSA2048 || !slices.Equal(l.Domains, []string{string(shop)}) {
		t.Errorf("renewed custom-name: %s v%d %s %v", l.Name, l.Version, l.KeyType, l.Domains)
	}
	// issue --force for the second name of a two-name lineage.
	l, err = s.m.Issue(ctxT(t), www)
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Clone(l.Domains)
	slices.Sort(got)
	want := []string{string(two), string(www)}
	slices.Sort(want)
	if l.Name != LineageName(two) || l.Version != 2 || l.KeyType != EC256 || !slices.Equal(got, want) {
		t.Errorf("issue for %s: %s v%d %s %v", www, l.Name, l.Version, l.KeyType, l.Domains)
	}
	all, err := s.m.Store().List()
	if err != nil || len(all) != 2 {
		t.Errorf("the store has %d lineages after the renewals, want 2 (no split): %v", len(all), err)
	}
}
