package worker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
	"github.com/midsummer/certmgr/worker/internal/amqpbroker"
)

// testCA is a CA of the test's own, written to dir.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // PEM
	dir  string
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+".pem"), dir: dir}
	writePEMFile(t, ca.file, "CERTIFICATE", der)
	return ca
}

// leaf issues a certificate for cn with one extended key usage and writes
// it and its key to files.
func (ca *testCA) leaf(t *testing.T, cn string, eku x509.ExtKeyUsage, dns ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, cn+".pem"), filepath.Join(ca.dir, cn+".key")
	writePEMFile(t, certFile, "CERTIFICATE", der)
	writePEMFile(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEMFile(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsProxy terminates TLS in front of the shared RabbitMQ, as a managed
// RabbitMQ or a TLS sidecar does: it requires a client certificate signed
// by its CA and forwards the plain AMQP stream to 127.0.0.1:5672.
type tlsProxy struct {
	addr    string
	clients atomic.Int32 // connections that completed the TLS handshake with a client certificate
}

func startTLSProxy(t *testing.T, ca *testCA, certFile, keyFile string) *tlsProxy {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{pair}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsProxy{addr: ln.Addr().String()}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c, true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer track(c, false)
				defer c.Close()
				tc := c.(*tls.Conn)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := tc.HandshakeContext(ctx)
				cancel()
				if err != nil {
					return
				}
				if len(tc.ConnectionState().PeerCertificates) > 0 {
					p.clients.Add(1)
				}
				up, err := net.Dial("tcp", testpeers.SharedRabbitMQAddr)
				if err != nil {
					return
				}
				track(up, true)
				defer track(up, false)
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, tc); done <- struct{}{} }()
				go func() { _, _ = io.Copy(tc, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return p
}

// amqps:// with Celery's ssl_* parameters, through a TLS-terminating proxy
// in front of RabbitMQ that requires a client certificate: the broker's
// ping connects, Python's `inspect ping` is answered over certmgr's TLS
// connection and a task Python sends (over plain AMQP, as the Django app
// on the inside would) comes back with its rpc:// result. A wrong CA, or no
// client certificate, is refused with an error that names the certificate
// problem and does not print the password.
func TestAMQPSThroughTLSProxy(t *testing.T) {
	t.Parallel()
	rb := testpeers.RabbitMQ(t)
	testpeers.Celery(t, rb.URL)
	dir := t.TempDir()
	ca := newTestCA(t, dir, "amqps-ca")
	serverCert, serverKey := ca.leaf(t, "localhost", x509.ExtKeyUsageServerAuth, "localhost")
	clientCert, clientKey := ca.leaf(t, "client", x509.ExtKeyUsageClientAuth)
	proxy := startTLSProxy(t, ca, serverCert, serverKey)
	_, port, _ := net.SplitHostPort(proxy.addr)

	amqps := func(password, query string) string {
		return fmt.Sprintf("amqps://guest:%s@localhost:%s/%s?%s", password, port, url.PathEscape(rb.VHost), query)
	}
	good := url.Values{"ssl_cert_reqs": {"CERT_REQUIRED"}, "ssl_ca_certs": {ca.file},
		"ssl_certfile": {clientCert}, "ssl_keyfile": {clientKey}}.Encode()

	ping := func(rawURL string) error {
		b, err := amqpbroker.New(amqpbroker.Config{URL: rawURL, Queue: "certmgr", Hostname: "certmgr@" + t.Name()})
		if err != nil {
			return err
		}
		defer b.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return b.Ping(ctx)
	}
	if err := ping(amqps("guest", good)); err != nil {
		t.Fatalf("ping over amqps: %v", err)
	}

	runServerMux(t, worker.Config{BrokerURL: amqps("guest", good), ResultBackendURL: "rpc://"}, func() *worker.ServeMux {
		mux := worker.NewServeMux()
		worker.RegisterBuiltins(mux)
		return mux
	}())
	py := pyOptions{broker: rb.URL, backend: "rpc://", options: "{}"}
	py.inspectPing(t, "certmgr@"+t.Name())
	if res := py.call(t, "certmgr.ping", "[]"); res.State != "SUCCESS" || string(res.Result) != `"pong"` {
		t.Errorf("task through the amqps worker: %+v", res)
	}
	if n := proxy.clients.Load(); n < 2 {
		t.Errorf("%d connections through the TLS proxy with a client certificate, want the ping's and the worker's", n)
	}

	const secret = "s3cret-not-shown"
	other := newTestCA(t, t.TempDir(), "other-ca")
	for _, c := range []struct{ name, query, want string }{
		{"wrong CA", url.Values{"ssl_cert_reqs": {"required"}, "ssl_ca_certs": {other.file},
			"ssl_certfile": {clientCert}, "ssl_keyfile": {clientKey}}.Encode(), "certificate signed by unknown authority"},
		{"no client certificate", url.Values{"ssl_ca_certs": {ca.file}}.Encode(), "certificate required"},
	} {
		err := ping(amqps(secret, c.query))
		switch {
		case err == nil:
			t.Errorf("%s: amqps connected", c.name)
		case strings.Contains(err.Error(), secret):
			t.Errorf("%s: the error prints the password: %v", c.name, err)
		case !strings.Contains(err.Error(), c.want):
			t.Errorf("%s: %v, want it to say %q", c.name, err, c.want)
		}
	}
}
