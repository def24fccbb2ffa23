package agent

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/nginxconf"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func openStore(t testing.TB, url, key string) *certstore.Store {
	t.Helper()
	s, err := certstore.Open(ctxT(t), certstore.Config{URL: url, Key: key})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// testCA is the test kit's CA (testpeers.CA), with leaves as certstore
// versions.
type testCA struct{ *testpeers.CA }

func newTestCA(t testing.TB) *testCA { return &testCA{testpeers.NewCA(t, "agent test CA")} }

// version makes version n of a lineage for name.
func (ca *testCA) version(t testing.TB, n int, name string) certstore.Version {
	t.Helper()
	l := ca.Issue(t, testpeers.LeafOptions{Names: []string{name}})
	return certstore.Version{
		N: n, Cert: l.Cert, Chain: l.Chain, Fullchain: l.Fullchain(), Privkey: l.Key,
		Serial: hex.EncodeToString(l.X509.SerialNumber.Bytes()), NotBefore: l.X509.NotBefore, NotAfter: l.X509.NotAfter,
	}
}

// bundle is one agent test's world: its own PostgreSQL schema, a store key,
// the store opened with it (the worker's side) and a CA.
type bundle struct {
	pg  *testpeers.PostgresPeer
	key string
	st  *certstore.Store
	ca  *testCA
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{pg: testpeers.Postgres(t), key: testpeers.StoreKey(), ca: newTestCA(t)}
	b.st = openStore(t, b.pg.URL, b.key)
	return b
}

// put stores version n of lineage name (for the domain of the same name)
// and returns its serial.
func (b *bundle) put(t testing.TB, name string, n int) string {
	t.Helper()
	v := b.ca.version(t, n, name)
	if _, err := b.st.PutLineages(ctxT(t), []certstore.Lineage{{Name: name, Domains: []string{name}, Current: n,
		RenewalConf: "version = 2.1.0\n", Versions: []certstore.Version{v}}}); err != nil {
		t.Fatal(err)
	}
	return v.Serial
}

// serve sets the served domains (each by the lineage of the same name) and
// returns the store's version.
func (b *bundle) serve(t testing.TB, domains ...string) int64 {
	t.Helper()
	var sv []certstore.Served
	for _, d := range domains {
		sv = append(sv, certstore.Served{Domain: d, Lineage: d})
	}
	_, v, err := b.st.SetServed(ctxT(t), sv)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// pod is one agent with its own nginx and certificate directory.
type pod struct {
	b        *bundle
	name     string
	nginx    *testpeers.NginxPeer
	defaults string // the default server's certificate and key
	dir      string
	agent    *Agent
	http     string // the agent's address
	cancel   context.CancelFunc
	done     chan error
	srv      *http.Server
	cut      *testpeers.TCPProxy // cut after the store is opened, before the agent runs
}

type podOptions struct {
	storeURL    string // default: the test's schema
	resync      time.Duration
	syncTimeout time.Duration
	listenPing  time.Duration
}

// startPod starts nginx and an agent with a pod name of its own on the
// test's store (or o.storeURL).
func (b *bundle) startPod(t *testing.T, o podOptions) *pod {
	t.Helper()
	return b.startPodCut(t, o, nil)
}

// startPodCut is startPod, cutting proxy (when not nil) after the agent's
// store is opened and before the agent runs.
func (b *bundle) startPodCut(t *testing.T, o podOptions, proxy *testpeers.TCPProxy) *pod {
	t.Helper()
	peer := testpeers.Nginx(t, testpeers.NginxOptions{})
	peer.StopOnCleanup(t)
	defaults := t.TempDir()
	def := b.ca.version(t, 1, "default.invalid")
	os.WriteFile(filepath.Join(defaults, "cert.pem"), def.Fullchain, 0o644)
	os.WriteFile(filepath.Join(defaults, "key.pem"), def.Privkey, 0o600)
	p := &pod{b: b, name: "pod-" + testpeers.RandomHex(4), nginx: peer, dir: t.TempDir(), defaults: defaults}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.http = ln.Addr().String()
	p.cut = proxy
	p.start(t, o, ln)
	p.cut = nil
	return p
}

// restart starts a new agent on the same nginx, directory and address, as
// a restarted sidecar container does.
func (p *pod) restart(t *testing.T, o podOptions) {
	t.Helper()
	ln, err := net.Listen("tcp", p.http)
	if err != nil {
		t.Fatal(err)
	}
	p.start(t, o, ln)
}

// httpGet sends GET url with the Host header host.
func httpGet(t testing.TB, rawURL, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *pod) start(t *testing.T, o podOptions, ln net.Listener) {
	t.Helper()
	cfg := nginxconf.Config{
		ConfPath: filepath.Join(p.nginx.ConfDir, "custom-domains.conf"), Binary: p.nginx.Binary,
		MainConf: p.nginx.MainConf, Prefix: p.nginx.Prefix, Upstream: "127.0.0.1:9", HTTPSPort: p.nginx.HTTPSPort,
		HTTPPort: p.nginx.HTTPPort, DefaultCert: filepath.Join(p.defaults, "cert.pem"), DefaultKey: filepath.Join(p.defaults, "key.pem"),
		ACMEWebroot: p.nginx.Webroot, ACMEChallengeProxy: p.http, LetsEncryptDir: p.dir, Timeout: time.Minute,
	}
	gen, err := nginxconf.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := nginxconf.NewLocalReloader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	url := o.storeURL
	if url == "" {
		url = p.b.pg.URL
	}
	st := openStore(t, url, p.b.key)
	if p.cut != nil {
		p.cut.Cut()
	}
	reg := prometheus.NewRegistry()
	a, err := New(Config{Store: st, Nginx: gen, Local: rl, Dir: p.dir, Pod: p.name, Resync: o.resync,
		SyncTimeout: o.syncTimeout, ListenPing: o.listenPing, HeartbeatEvery: 500 * time.Millisecond, RetryMax: time.Second, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	p.agent = a
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan error, 1)
	srv := &http.Server{Handler: a.Handler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))}
	go srv.Serve(ln)
	go func() { p.done <- a.Run(ctx) }()
	p.srv = srv
	t.Cleanup(p.stop)
}

func (p *pod) stop() {
	if p.cancel != nil {
		p.cancel()
		<-p.done
		p.srv.Close()
		p.cancel = nil
	}
}

// serial is the serial of the certificate nginx presents for sni, or
// "421"/"default" when it presents the default server's.
func (p *pod) handshake(sni string) (serial string, status int, err error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp",
		net.JoinHostPort("127.0.0.1", strconv.Itoa(p.nginx.HTTPSPort)),
		&tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return "", 0, err
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
	b, _ := io.ReadAll(conn)
	if f := strings.Fields(string(b)); len(f) > 1 {
		status, _ = strconv.Atoi(f[1])
	}
	return hex.EncodeToString(leaf.SerialNumber.Bytes()), status, nil
}

// waitServes waits until nginx presents serial for sni (serial "" means: the
// name is answered 421 by the default server).
func (p *pod) waitServes(t testing.TB, sni, serial string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < timeout {
		got, status, err := p.handshake(sni)
		if err == nil && ((serial != "" && got == serial) || (serial == "" && status == 421)) {
			return time.Since(start)
		}
		last = fmt.Sprintf("serial %s status %d err %v", got, status, err)
		time.Sleep(20 * time.Millisecond) // polling a condition, not guessing a duration
	}
	b, _ := os.ReadFile(p.nginx.ErrorLog)
	t.Fatalf("%s: %s not served with %q after %s (last: %s)\nnginx log tail:\n%s", p.name, sni, serial, timeout, last, b[max(0, len(b)-2000):])
	return 0
}

func (p *pod) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.http + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
