package testpeers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// RedisTLS is a redis-server of the test's own that speaks only TLS, with a
// CA the test generated. Its certificate names localhost only (not
// 127.0.0.1), so connecting by address fails the host name check. It asks
// for a client certificate (signed by the same CA) and refuses clients
// without one.
type RedisTLS struct {
	Port       int
	CAFile     string // the CA that signed the server and client certificates
	ClientCert string
	ClientKey  string
	proc       *Process
}

// StartRedisTLS starts a TLS-only redis-server on a free port.
func StartRedisTLS(t testing.TB) *RedisTLS {
	t.Helper()
	bin := lookBinary(t, "redis-server")
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "certmgr redis test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("redis test CA: %v", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, eku x509.ExtKeyUsage, dns []string) (certFile, keyFile string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatalf("redis test certificate: %v", err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+".key")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	s := &RedisTLS{Port: FreePort(t), CAFile: filepath.Join(dir, "ca.pem")}
	writePEM(t, s.CAFile, "CERTIFICATE", caDER)
	serverCert, serverKey := leaf(2, "localhost", x509.ExtKeyUsageServerAuth, []string{"localhost"})
	s.ClientCert, s.ClientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth, nil)
	s.proc = startProcess(t, filepath.Join(dir, "redis.log"), nil, bin,
		"--port", "0", "--tls-port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--tls-cert-file", serverCert, "--tls-key-file", serverKey, "--tls-ca-cert-file", s.CAFile,
		"--tls-auth-clients", "yes", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", s.Port), 20*time.Second); err != nil {
		t.Fatalf("redis-server with TLS on %d: %v", s.Port, err)
	}
	return s
}

// URL is a rediss:// URL for database db with every Celery ssl_* parameter
// (CA, client certificate and key, CERT_REQUIRED).
func (s *RedisTLS) URL(db int) string {
	return fmt.Sprintf("rediss://localhost:%d/%d?ssl_cert_reqs=required&ssl_ca_certs=%s&ssl_certfile=%s&ssl_keyfile=%s",
		s.Port, db, s.CAFile, s.ClientCert, s.ClientKey)
}

// RedisSocket is a redis-server of the test's own listening on a Unix socket
// only.
type RedisSocket struct {
	Path string
	pool *redis.Pool
	proc *Process
}

// StartRedisSocket starts a redis-server on a Unix socket in a temporary
// directory, with no TCP port.
func StartRedisSocket(t testing.TB) *RedisSocket {
	t.Helper()
	bin := lookBinary(t, "redis-server")
	dir := t.TempDir()
	s := &RedisSocket{Path: filepath.Join(dir, "redis.sock")}
	s.proc = startProcess(t, filepath.Join(dir, "redis.log"), nil, bin,
		"--port", "0", "--unixsocket", s.Path, "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir)
	s.pool = &redis.Pool{MaxIdle: 2, Dial: func() (redis.Conn, error) {
		return redis.Dial("unix", s.Path, redis.DialConnectTimeout(2*time.Second))
	}}
	t.Cleanup(func() { s.pool.Close() })
	if err := waitFor(20*time.Second, func() error {
		c := s.pool.Get()
		defer c.Close()
		_, err := c.Do("PING")
		return err
	}); err != nil {
		t.Fatalf("redis-server on %s: %v", s.Path, err)
	}
	return s
}

// Pool is a connection pool on the socket's database 0.
func (s *RedisSocket) Pool() *redis.Pool { return s.pool }
