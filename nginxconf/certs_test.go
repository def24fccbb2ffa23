package nginxconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testCA signs leaf certificates for tests; one per test binary is enough.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

var caOnce = sync.OnceValue(func() *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "certmgr nginxconf test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: pool}
})

// leafOpts shape one test certificate.
type leafOpts struct {
	dnsNames []string  // default: the lineage name
	notAfter time.Time // default: a day from now
	wrongKey bool      // privkey.pem holds another key
}

var serial struct {
	sync.Mutex
	n int64
}

// writeLineage writes a certificate for name in certbot's layout under dir:
// archive/<name>/{cert,chain,fullchain,privkey}1.pem and live/<name>/*.pem
// symlinks to them. It returns the leaf.
func writeLineage(t testing.TB, dir, name string, o leafOpts) *x509.Certificate {
	t.Helper()
	ca := caOnce()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.dnsNames == nil {
		o.dnsNames = []string{name}
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(24 * time.Hour)
	}
	serial.Lock()
	serial.n++
	sn := serial.n + 1
	serial.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(sn),
		Subject:      pkix.Name{CommonName: o.dnsNames[0]},
		DNSNames:     o.dnsNames,
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     o.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	if o.wrongKey {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	files := map[string][]byte{
		"cert":      certPEM,
		"chain":     ca.pem,
		"fullchain": append(append([]byte{}, certPEM...), ca.pem...),
		"privkey":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	archive := filepath.Join(dir, "archive", name)
	live := filepath.Join(dir, "live", name)
	for _, d := range []string{archive, live} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The next free archive number, as certbot counts renewals.
	n := 1
	for ; ; n++ {
		if _, err := os.Stat(filepath.Join(archive, "cert"+itoa(n)+".pem")); err != nil {
			break
		}
	}
	for f, b := range files {
		target := filepath.Join(archive, f+itoa(n)+".pem")
		if err := os.WriteFile(target, b, 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(live, f+".pem")
		tmp := link + ".tmp"
		os.Remove(tmp)
		if err := os.Symlink(filepath.Join("..", "..", "archive", name, f+itoa(n)+".pem"), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, link); err != nil {
			t.Fatal(err)
		}
	}
	return leaf
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }
