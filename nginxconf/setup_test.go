package nginxconf

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
)

// fixture is one test's real nginx, certificate store and upstream.
type fixture struct {
	peer     *testpeers.NginxPeer
	cfg      Config
	le       string // LETSENCRYPT_DIR
	upstream *upstream
	gen      *Generator
	reloader *LocalReloader
	roots    *x509.CertPool // the test CA, which signs every lineage
}

func setup(t *testing.T, mode CertMode, opts ...func(*Config)) *fixture {
	t.Helper()
	return setupNginx(t, mode, "", opts...)
}

// setupNginx is setup with another nginx binary ("" for Debian's).
func setupNginx(t *testing.T, mode CertMode, binary string, opts ...func(*Config)) *fixture {
	t.Helper()
	// lua mode needs the lua module loaded; the other modes run on an nginx
	// without it, where auto never picks lua.
	return setupPeer(t, mode, testpeers.NginxOptions{Binary: binary, Lua: mode == CertModeLua}, opts...)
}

// setupPeer is setup on an nginx made with popts.
func setupPeer(t *testing.T, mode CertMode, popts testpeers.NginxOptions, opts ...func(*Config)) *fixture {
	t.Helper()
	peer := testpeers.Nginx(t, popts)
	peer.StopOnCleanup(t)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(peer.ErrorLog)
			t.Logf("nginx error log:\n%s", b[max(0, len(b)-4000):])
		}
	})
	up := newUpstream(t)
	le := t.TempDir()
	// A default certificate of the test's own, so the test does not depend on
	// Debian's snakeoil pair being installed.
	writeLineage(t, le, "default.invalid", leafOpts{})
	cfg := Config{
		ConfPath:       filepath.Join(peer.ConfDir, "custom-domains.conf"),
		Binary:         peer.Binary,
		MainConf:       peer.MainConf,
		Prefix:         peer.Prefix,
		Upstream:       up.addr,
		HTTPSPort:      peer.HTTPSPort,
		HTTPPort:       peer.HTTPPort,
		CertMode:       mode,
		DefaultCert:    filepath.Join(le, "live", "default.invalid", "fullchain.pem"),
		DefaultKey:     filepath.Join(le, "live", "default.invalid", "privkey.pem"),
		ACMEWebroot:    peer.Webroot,
		LetsEncryptDir: le,
		Timeout:        time.Minute,
	}
	for _, o := range opts {
		o(&cfg)
	}
	gen, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := NewLocalReloader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{peer: peer, cfg: cfg, le: le, upstream: up, gen: gen, reloader: rl, roots: testCA(t).Pool()}
}

// newerNginx is an nginx with ssl_certificate_cache (≥ 1.27.4) when one is
// present: $CERTMGR_TEST_NGINX, or one the bench built under
// $HOME/.cache/certmgr-nginx/<version>/sbin/nginx. make test itself runs only
// Debian's 1.22; these are extra runs.
func newerNginx(t testing.TB) string {
	t.Helper()
	cands := []string{os.Getenv("CERTMGR_TEST_NGINX")}
	if home, err := os.UserHomeDir(); err == nil {
		m, _ := filepath.Glob(filepath.Join(home, ".cache", "certmgr-nginx", "*", "sbin", "nginx"))
		slices.Sort(m)
		slices.Reverse(m)
		cands = append(cands, m...)
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		out, err := exec.Command(c, "-V").CombinedOutput()
		if err != nil {
			continue
		}
		if info, err := ParseNginxV(string(out)); err == nil && info.CertificateCache() {
			return c
		}
	}
	return ""
}

// regenerate applies names and, when the file changed, reloads nginx and
// waits until new workers serve it.
func (f *fixture) regenerate(t *testing.T, names ...string) Result {
	t.Helper()
	var ns []domain.Name
	for _, n := range names {
		d, err := domain.Parse(n)
		if err != nil {
			t.Fatal(err)
		}
		ns = append(ns, d)
	}
	before := f.workers(t)
	res, err := f.gen.Regenerate(context.Background(), Domains(ns...))
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed {
		if err := f.reloader.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		f.peer.WaitWorkersReplaced(t, before)
	}
	return res
}

// workers returns nginx's worker pids once there are any: right after start
// a forked worker may not have renamed itself yet, and an empty "before"
// list would make WaitWorkersReplaced pass at once.
func (f *fixture) workers(t *testing.T) []int { return waitWorkers(t, f.peer) }

func waitWorkers(t testing.TB, peer *testpeers.NginxPeer) []int {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		if pids := peer.WorkerPIDs(t); len(pids) > 0 {
			return pids
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("nginx has no worker processes")
		}
	}
}

// waitReplaced waits until new workers replaced all of before; unlike
// testpeers' WaitWorkersReplaced it takes a deadline, for reloads of 10,000
// certificates.
func waitReplaced(t testing.TB, peer *testpeers.NginxPeer, before []int, timeout time.Duration) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		now := peer.WorkerPIDs(t)
		if len(now) > 0 && !slices.ContainsFunc(now, func(p int) bool { return slices.Contains(before, p) }) {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("nginx workers %v not replaced after %s", before, timeout)
		}
	}
}

// response is what a client saw.
type response struct {
	status int
	body   string
	header http.Header
	proto  int
	leaf   *x509.Certificate
	chain  int // certificates the server sent
}

// get requests https://host/path from nginx's HTTPS port with the given SNI.
// verify checks the chain against the test CA for sni.
func (f *fixture) get(sni, host, path string, verify bool) (response, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(f.peer.HTTPSPort))
		},
		TLSClientConfig:   &tls.Config{ServerName: sni, RootCAs: f.roots, InsecureSkipVerify: !verify},
		ForceAttemptHTTP2: true,
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	return do(tr, "https://"+host+path)
}

// serial is the serial number of the certificate nginx presents for name,
// verified against the test CA, on a request that got 200.
func (f *fixture) serial(t *testing.T, name string) string {
	t.Helper()
	r, err := f.get(name, name, "/", true)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 {
		t.Fatalf("%s: status %d; want 200", name, r.status)
	}
	return r.leaf.SerialNumber.String()
}

// getHTTP requests http://host/path from nginx's HTTP port.
func (f *fixture) getHTTP(host, path string) (response, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(f.peer.HTTPPort))
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	return do(tr, "http://"+host+path)
}

func do(tr *http.Transport, url string) (response, error) {
	c := &http.Client{
		Transport:     tr,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Get(url)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	r := response{status: resp.StatusCode, body: string(b), header: resp.Header, proto: resp.ProtoMajor}
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		r.leaf = resp.TLS.PeerCertificates[0]
		r.chain = len(resp.TLS.PeerCertificates)
	}
	return r, nil
}

// upstream stands in for Hypercorn: it records the headers of every request
// and answers with the Host it saw. /ws answers a WebSocket upgrade and then
// echoes bytes.
type upstream struct {
	addr string
	mu   sync.Mutex
	last map[string]http.Header // by Host
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{last: map[string]http.Header{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		u.last[r.Host] = h
		u.mu.Unlock()
		if r.URL.Path == "/ws" && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			conn, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			rw.Flush()
			io.Copy(conn, rw)
			return
		}
		fmt.Fprintf(w, "upstream %s %s", r.Host, r.URL.RequestURI())
	}))
	t.Cleanup(srv.Close)
	u.addr = strings.TrimPrefix(srv.URL, "http://")
	return u
}

func (u *upstream) headers(host string) http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last[host]
}

// websocket upgrades https://host/ws through nginx (HTTP/1.1) and checks
// that bytes come back.
func (f *fixture) websocket(host string) error {
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(f.peer.HTTPSPort),
		&tls.Config{ServerName: host, RootCAs: f.roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("status %s", resp.Status)
	}
	if _, err := conn.Write([]byte("hello through nginx")); err != nil {
		return err
	}
	buf := make([]byte, len("hello through nginx"))
	if _, err := io.ReadFull(br, buf); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if string(buf) != "hello through nginx" {
		return fmt.Errorf("echo %q", buf)
	}
	return nil
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
