package nginxconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/domain"
)

// benchStore is a certbot-layout store of lineages named benchName(0..n-1)
// plus default.invalid, signed by one CA (pool).
type benchStore struct {
	dir   string
	names []domain.Name
	pool  *x509.CertPool
}

func benchName(i int) domain.Name {
	// Names of a realistic length and spread: tenant-chosen hosts.
	return domain.Name(fmt.Sprintf("shop%06d.tenant-%d.example-store.com", i, i%97))
}

// benchCacheDir is where benchmarks keep what is slow to make, outside the
// repository and between runs: $CERTMGR_BENCH_CACHE, default
// $HOME/.cache/certmgr-bench.
func benchCacheDir(b testing.TB) string {
	if d := os.Getenv("CERTMGR_BENCH_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		b.Fatalf("no cache directory for the benchmark store: %v (set CERTMGR_BENCH_CACHE)", err)
	}
	return filepath.Join(home, ".cache", "certmgr-bench")
}

// cachedStore returns a store of at least n lineages from the benchmark
// cache, minting what is missing: one CA (ca.pem and ca.key at the store's
// root), ECDSA P-256 leafs valid 90 days, made in parallel (100,000 take
// about a minute on 2 cores). A store whose leafs expire within 30 days is
// made anew. Only fullchain.pem and privkey.pem are written (archive/<name>/
// files, live/<name>/ symlinks): all that nginx and the Vetter read.
func cachedStore(b testing.TB, n int) *benchStore {
	b.Helper()
	dir := filepath.Join(benchCacheDir(b), "nginx-store")
	have, ca, caKey := 0, (*x509.Certificate)(nil), (*ecdsa.PrivateKey)(nil)
	if meta, err := os.ReadFile(filepath.Join(dir, "meta")); err == nil {
		var count int
		var made int64
		if _, err := fmt.Sscanf(string(meta), "%d %d", &count, &made); err == nil && time.Since(time.Unix(made, 0)) < 60*24*time.Hour {
			ca, caKey = loadCA(dir)
			if ca != nil {
				have = count
			}
		}
	}
	made := time.Now()
	if ca == nil {
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		ca, caKey = newCA(b, dir)
		mintLeaf(b, dir, "default.invalid", ca, caKey, made)
	} else if meta, err := os.ReadFile(filepath.Join(dir, "meta")); err == nil {
		if f := strings.Fields(string(meta)); len(f) == 2 {
			sec, _ := strconv.ParseInt(f[1], 10, 64)
			made = time.Unix(sec, 0)
		}
	}
	if have < n {
		start := time.Now()
		parallel(n-have, func(i int) { mintLeaf(b, dir, string(benchName(have+i)), ca, caKey, made) })
		if err := os.WriteFile(filepath.Join(dir, "meta"), fmt.Appendf(nil, "%d %d\n", n, made.Unix()), 0o644); err != nil {
			b.Fatal(err)
		}
		b.Logf("benchmark store: minted %d certificates in %s (%s)", n-have, time.Since(start).Round(time.Millisecond), dir)
	}
	s := &benchStore{dir: dir, pool: x509.NewCertPool()}
	s.pool.AddCert(ca)
	for i := range n {
		s.names = append(s.names, benchName(i))
	}
	return s
}

func newCA(b testing.TB, dir string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "certmgr benchmark CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		b.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey) {
	cb, err1 := os.ReadFile(filepath.Join(dir, "ca.pem"))
	kb, err2 := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err1 != nil || err2 != nil {
		return nil, nil
	}
	c, _ := pem.Decode(cb)
	k, _ := pem.Decode(kb)
	if c == nil || k == nil {
		return nil, nil
	}
	cert, err := x509.ParseCertificate(c.Bytes)
	if err != nil {
		return nil, nil
	}
	key, err := x509.ParsePKCS8PrivateKey(k.Bytes)
	if err != nil {
		return nil, nil
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil
	}
	return cert, ek
}

// mintLeaf writes one lineage: archive/<name>/{fullchain1,privkey1}.pem and
// the live/<name>/ symlinks to them.
func mintLeaf(b testing.TB, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, made time.Time) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	sn, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 96))
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: made.Add(-time.Hour), NotAfter: made.Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		b.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})...)
	archive := filepath.Join(dir, "archive", name)
	live := filepath.Join(dir, "live", name)
	for _, d := range []string{archive, live} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	for f, data := range map[string][]byte{"fullchain": chain, "privkey": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})} {
		if err := os.WriteFile(filepath.Join(archive, f+"1.pem"), data, 0o600); err != nil {
			b.Fatal(err)
		}
		link := filepath.Join(live, f+".pem")
		os.Remove(link)
		if err := os.Symlink(filepath.Join("..", "..", "archive", name, f+"1.pem"), link); err != nil {
			b.Fatal(err)
		}
	}
}
