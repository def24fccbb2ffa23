package testpeers

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// CA is the test kit's certificate authority, for tests that need
// certificates but no ACME server (stores, policies, nginx vetting). Pebble
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

// LeafOptions shape a leaf. Zero fields take the defaults in the comments.
type LeafOptions struct {
	Names     []string      // DNSNames; the first is the CommonName
	NotBefore time.Time     // default an hour ago
	NotAfter  time.Time     // default NotBefore + 90 days
	Key       crypto.Signer // default a new P-256 key
}

// Leaf is a certificate the CA signed, PEM encoded as lego returns it and
// certbot stores it (the key in PKCS#8).
type Leaf struct {
	Cert, Key, Chain []byte
	X509             *x509.Certificate
}

// Fullchain is the leaf followed by the chain, as in fullchain.pem.
func (l Leaf) Fullchain() []byte { return append(append([]byte{}, l.Cert...), l.Chain...) }

// Issue signs a server certificate for o.Names.
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
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, DNSNames: o.Names, NotBefore: o.NotBefore, NotAfter: o.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(o.Names) > 0 {
		tmpl.Subject = pkix.Name{CommonName: o.Names[0]}
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
		Cert:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		Chain: ca.PEM,
		X509:  leaf,
	}
}
