package faults

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// The ACME server is first down (nothing listens on its port), then answers
// every request with 503, then comes back. The task is retried with a
// growing countdown, the row tells the tenant the CA could not be reached,
// the worker does not crash, and the certificate is issued once the fault
// clears: one order, one certificate version.
func TestACMEServerDownThen503(t *testing.T) {
	t.Parallel()
	var proxy *acmeProxy
	s := newStack(t, stackOptions{acmeURL: func(p *testpeers.PebblePeer) (string, string) {
		proxy = startACMEProxy(t, p)
		return proxy.directoryURL(p), proxy.caFile
	}})
	d := s.domain("ca")
	id := s.pg.InsertDomain(t, d)
	w := s.startWorker("w1")

	proxy.down(t)
	task := s.celery.Send(t, sendIssue(id))
	testpeers.Until(t, 60*time.Second, "a retry while the CA is down", func() bool { return len(retryDelays(w.logText(), task)) >= 1 })
	if r := s.row(d); r.Status == "ssl_issued" || !strings.Contains(r.LastError, "certificate authority could not be reached") {
		t.Errorf("row during the outage = %+v", r)
	}
	proxy.up(t)
	proxy.set503(true)
	testpeers.Until(t, 60*time.Second, "a retry while the CA answers 503", func() bool {
		return len(retryDelays(w.logText(), task)) >= 2 && proxy.served503.Load() > 0
	})
	proxy.set503(false)

	res := s.getIssue(task, 2*time.Minute)
	if res.Status != "ssl_issued" || !res.Issued {
		t.Errorf("result = %+v", res)
	}
	delays := retryDelays(w.logText(), task)
	if len(delays) < 2 || delays[1] <= delays[0] {
		t.Errorf("retry countdowns %v do not back off", delays)
	}
	if !w.alive() {
		t.Fatal("the worker exited")
	}
	leaf := s.served(d)
	if r := s.row(d); r.Status != "ssl_issued" || r.LastError != "" || r.Expires == nil || !r.Expires.Equal(leaf.NotAfter) {
		t.Errorf("row after recovery = %+v", r)
	}
	s.oneLineage(d)
	if n := proxy.finalized.Load(); n != 1 {
		t.Errorf("%d orders were finalized at the CA, want 1", n)
	}
	s.quiet()
}

// Pebble refuses half of the good nonces with badNonce: every issuance still
// succeeds, once.
func TestACMENonceRejection(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{pebble: testpeers.PebbleOptions{NonceRejectPercent: 50}})
	var ds []string
	var ids []string
	for _, l := range []string{"nonce1", "nonce2", "nonce3"} {
		d := s.domain(l)
		ds = append(ds, d)
		ids = append(ids, s.celery.Send(t, sendIssue(s.pg.InsertDomain(t, d))))
	}
	w := s.startWorker("w1")
	for i, id := range ids {
		res := s.getIssue(id, 2*time.Minute)
		if res.Status != "ssl_issued" || !res.Issued || res.Domain != ds[i] {
			t.Errorf("result = %+v", res)
		}
	}
	if !w.alive() {
		t.Fatal("the worker exited")
	}
	for i, d := range ds {
		leaf := s.served(d)
		if r := s.row(d); r.Status != "ssl_issued" || r.Expires == nil || !r.Expires.Equal(leaf.NotAfter) {
			t.Errorf("row = %+v", r)
		}
		s.oneLineage(d)
		if n := succeeded(w.logText(), ids[i]); n != 1 {
			t.Errorf("task %s succeeded %d times", ids[i], n)
		}
	}
	s.quiet()
}

// acmeProxy is an HTTPS reverse proxy in front of Pebble that can stop
// listening (the CA is down) or answer 503 (the CA is failing). Pebble builds
// its URLs from the Host header, so clients keep talking through the proxy.
type acmeProxy struct {
	addr      string
	caFile    string
	tlsConf   *tls.Config
	handler   http.Handler
	mu        sync.Mutex
	srv       *http.Server
	fail503   atomic.Bool
	served503 atomic.Int32
	finalized atomic.Int32
}

func startACMEProxy(t *testing.T, p *testpeers.PebblePeer) *acmeProxy {
	t.Helper()
	u, err := url.Parse(p.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "https", Host: u.Host})
	rp.Transport = p.Client.Transport
	x := &acmeProxy{addr: fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t))}
	x.caFile, x.tlsConf = loopbackTLS(t)
	x.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if x.fail503.Load() {
			x.served503.Add(1)
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"type":"urn:ietf:params:acme:error:serverInternal","detail":"service unavailable (fault suite)","status":503}`)
			return
		}
		if strings.Contains(r.URL.Path, "/finalize-order/") && r.Method == http.MethodPost {
			x.finalized.Add(1)
		}
		r.Header.Set("X-Forwarded-Proto", "https")
		rp.ServeHTTP(w, r)
	})
	x.up(t)
	t.Cleanup(func() { x.down(t) })
	return x
}

func (x *acmeProxy) directoryURL(p *testpeers.PebblePeer) string {
	u, _ := url.Parse(p.DirectoryURL)
	u.Host = x.addr
	return u.String()
}

// up starts listening again on the same address.
func (x *acmeProxy) up(t *testing.T) {
	t.Helper()
	x.mu.Lock()
	defer x.mu.Unlock()
	var l net.Listener
	var err error
	for range 50 {
		if l, err = net.Listen("tcp", x.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("acme proxy listen: %v", err)
	}
	x.srv = &http.Server{Handler: x.handler}
	go func() { _ = x.srv.Serve(tls.NewListener(l, x.tlsConf)) }()
}

// down closes the listener and every connection: connection refused.
func (x *acmeProxy) down(t *testing.T) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.srv != nil {
		_ = x.srv.Close()
		x.srv = nil
	}
}

func (x *acmeProxy) set503(on bool) { x.fail503.Store(on) }

// loopbackTLS makes a CA and a certificate for 127.0.0.1 signed by it; it
// returns the CA's PEM file and a server TLS config.
func loopbackTLS(t *testing.T) (string, *tls.Config) {
	t.Helper()
	ca := testpeers.NewCA(t, "faults proxy CA")
	leaf := ca.Issue(t, testpeers.LeafOptions{Names: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	caFile := filepath.Join(t.TempDir(), "proxy-ca.pem")
	ca.WriteFile(t, caFile)
	return caFile, &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}}
}
