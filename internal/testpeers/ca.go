package testpeers

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// CA is the test kit's certificate authority, the one place tests and
// benchmarks mint certificates: leaves for stores, policies and nginx
// vetting, certbot-layout lineages, and the TLS certificates of the peers
// the kit starts (Pebble, Redis over TLS) and of tests' own proxies. Pebble
// is the CA of the tests that order.
type CA struct {
	Cert *x509.Certificate
	PEM  []byte // the CA certificate: the chain of every leaf
	key  crypto.Signer
}

// NewCA makes a CA with a new P-256 key, valid from an hour ago for a year.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		SubjectKeyId: []byte{1, 2, 3, 4},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
}

// OpenCA is the CA kept in dir (ca.pem and ca.key), made and written there
// by the first call: for caches of minted certificates that outlive one
// test process, such as a benchmark's store of thousands of lineages.
func OpenCA(t testing.TB, dir, name string) *CA {
	t.Helper()
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	certPEM, err := os.ReadFile(certFile)
	if errors.Is(err, fs.ErrNotExist) {
		ca := NewCA(t, name)
		keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
		ca.WriteFile(t, certFile)
		return ca
	}
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := parseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("open the CA in %s: %v", dir, err)
	}
	return ca
}

func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	c, _ := pem.Decode(certPEM)
	k, _ := pem.Decode(keyPEM)
	if c == nil || k == nil {
		return nil, errors.New("no PEM block")
	}
	cert, err := x509.ParseCertificate(c.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	key, err := x509.ParsePKCS8PrivateKey(k.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key is a %T", key)
	}
	return &CA{Cert: cert, PEM: pem.EncodeToMemory(c), key: signer}, nil
}

// Pool is a certificate pool holding the CA only, for clients of the
// servers its leaves serve.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteFile writes the CA certificate to path, for peers and clients that
// take a CA file.
func (ca *CA) WriteFile(t testing.TB, path string) {
	t.Helper()
	writeFile(t, path, ca.PEM, 0o644)
}

// LeafOptions shape a leaf. Zero fields take the defaults in the comments.
type LeafOptions struct {
	Names      []string         // DNSNames
	IPs        []net.IP         // IPAddresses
	CommonName string           // default the first of Names
	Usage      x509.ExtKeyUsage // default server auth (the zero value, Any, is never meant)
	NotBefore  time.Time        // default an hour ago
	NotAfter   time.Time        // default NotBefore + 90 days
	Key        crypto.Signer    // default a new P-256 key
}

// Leaf is a certificate the CA signed, PEM encoded as lego returns it and
// certbot stores it (the key in PKCS#8).
type Leaf struct {
	Cert, Key, Chain []byte
	X509             *x509.Certificate
	Signer           crypto.Signer // the private key in Key
}

// Fullchain is the leaf followed by the chain, as in fullchain.pem.
func (l Leaf) Fullchain() []byte { return append(append([]byte{}, l.Cert...), l.Chain...) }

// TLS is the leaf and its key for a tls.Config.
func (l Leaf) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{l.X509.Raw}, PrivateKey: l.Signer, Leaf: l.X509}
}

// WriteFiles writes the certificate (without the chain) to certFile and
// the key to keyFile, for servers configured with files.
func (l Leaf) WriteFiles(t testing.TB, certFile, keyFile string) {
	t.Helper()
	writeFile(t, certFile, l.Cert, 0o644)
	writeFile(t, keyFile, l.Key, 0o600)
}

// WriteCertbot writes the leaf as the next version of lineage name in
// certbot's layout under dir, the way certbot renews:
// archive/<name>/{cert,chain,fullchain,privkey}N.pem, N one past the last,
// and live/<name>/*.pem relative symlinks to them, each swapped in by a
// rename. It returns N.
func (l Leaf) WriteCertbot(t testing.TB, dir, name string) int {
	t.Helper()
	archive := filepath.Join(dir, "archive", name)
	live := filepath.Join(dir, "live", name)
	for _, d := range []string{archive, live} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n := 1
	for ; ; n++ {
		if _, err := os.Stat(filepath.Join(archive, "cert"+strconv.Itoa(n)+".pem")); err != nil {
			break
		}
	}
	files := map[string][]byte{"cert": l.Cert, "chain": l.Chain, "fullchain": l.Fullchain(), "privkey": l.Key}
	for f, b := range files {
		base := f + strconv.Itoa(n) + ".pem"
		writeFile(t, filepath.Join(archive, base), b, 0o600)
		link := filepath.Join(live, f+".pem")
		tmp := link + ".tmp"
		_ = os.Remove(tmp)
		if err := os.Symlink(filepath.Join("..", "..", "archive", name, base), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, link); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// Issue signs a certificate for o.Names and o.IPs.
func (ca *CA) Issue(t testing.TB, o LeafOptions) Leaf {
	t.Helper()
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = o.NotBefore.Add(90 * 24 * time.Hour)
	}
	if o.Key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		o.Key = k
	}
	if o.CommonName == "" && len(o.Names) > 0 {
		o.CommonName = o.Names[0]
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: o.CommonName},
		DNSNames: o.Names, IPAddresses: o.IPs, NotBefore: o.NotBefore, NotAfter: o.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{cmp.Or(o.Usage, x509.ExtKeyUsageServerAuth)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, o.Key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(o.Key)
	if err != nil {
		t.Fatal(err)
	}
	return Leaf{
		Cert:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		Chain:  ca.PEM,
		X509:   leaf,
		Signer: o.Key,
	}
}

func writeFile(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}
