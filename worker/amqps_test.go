package worker_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/url"
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

// writeCA makes a CA (the test kit's) and writes it to dir/name.pem.
func writeCA(t *testing.T, dir, name string) (*testpeers.CA, string) {
	t.Helper()
	ca := testpeers.NewCA(t, name)
	file := filepath.Join(dir, name+".pem")
	ca.WriteFile(t, file)
	return ca, file
}

// writeLeaf issues a certificate (o) and writes it and its key to
// dir/<base>.pem and dir/<base>.key.
func writeLeaf(t *testing.T, ca *testpeers.CA, dir, base string, o testpeers.LeafOptions) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, base+".pem"), filepath.Join(dir, base+".key")
	ca.Issue(t, o).WriteFiles(t, certFile, keyFile)
	return certFile, keyFile
}

// tlsProxy terminates TLS in front of the shared RabbitMQ, as a managed
// RabbitMQ or a TLS sidecar does: it requires a client certificate signed
// by its CA and forwards the plain AMQP stream to 127.0.0.1:5672.
type tlsProxy struct {
	addr    string
	clients atomic.Int32 // connections that completed the TLS handshake with a client certificate
}

func startTLSProxy(t *testing.T, ca *testpeers.CA, certFile, keyFile string) *tlsProxy {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{pair}, ClientCAs: ca.Pool(),
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
	ca, caFile := writeCA(t, dir, "amqps-ca")
	serverCert, serverKey := writeLeaf(t, ca, dir, "localhost", testpeers.LeafOptions{Names: []string{"localhost"}})
	clientCert, clientKey := writeLeaf(t, ca, dir, "client", testpeers.LeafOptions{CommonName: "client", Usage: x509.ExtKeyUsageClientAuth})
	proxy := startTLSProxy(t, ca, serverCert, serverKey)
	_, port, _ := net.SplitHostPort(proxy.addr)

	amqps := func(password, query string) string {
		return fmt.Sprintf("amqps://guest:%s@localhost:%s/%s?%s", password, port, url.PathEscape(rb.VHost), query)
	}
	good := url.Values{"ssl_cert_reqs": {"CERT_REQUIRED"}, "ssl_ca_certs": {caFile},
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
	_, otherFile := writeCA(t, t.TempDir(), "other-ca")
	// Under TLS 1.3 the proxy's "certificate required" alert comes after
	// the client's handshake has ended, racing amqp091's first write: the
	// refusal is tried several times so that a lost alert shows.
	for _, c := range []struct {
		name, query, want string
		tries             int
	}{
		{"wrong CA", url.Values{"ssl_cert_reqs": {"required"}, "ssl_ca_certs": {otherFile},
			"ssl_certfile": {clientCert}, "ssl_keyfile": {clientKey}}.Encode(), "certificate signed by unknown authority", 1},
		{"no client certificate", url.Values{"ssl_ca_certs": {caFile}}.Encode(), "certificate required", 20},
	} {
		for try := range c.tries {
			err := ping(amqps(secret, c.query))
			switch {
			case err == nil:
				t.Errorf("%s, try %d: amqps connected", c.name, try)
			case strings.Contains(err.Error(), secret):
				t.Errorf("%s, try %d: the error prints the password: %v", c.name, try, err)
			case !strings.Contains(err.Error(), c.want):
				t.Errorf("%s, try %d: %v, want it to say %q", c.name, try, err, c.want)
			}
		}
	}
}
