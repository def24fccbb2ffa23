package testpeers

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

// A CA kept in a directory is the same CA when opened again: leaves it
// issues later verify against the pool of the first.
func TestOpenCAKeepsItsKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := OpenCA(t, dir, "kept CA")
	again := OpenCA(t, dir, "ignored")
	if !again.Cert.Equal(first.Cert) {
		t.Fatalf("reopened CA is %q, want %q", again.Cert.Subject, first.Cert.Subject)
	}
	leaf := again.Issue(t, LeafOptions{Names: []string{"kept.example.com"}})
	if _, err := leaf.X509.Verify(x509.VerifyOptions{DNSName: "kept.example.com", Roots: first.Pool()}); err != nil {
		t.Fatalf("leaf of the reopened CA: %v", err)
	}
}

// WriteCertbot writes versions as certbot renews: the next archive number,
// and live/ symlinks that follow it; the files load as a key pair.
func TestWriteCertbotAddsVersions(t *testing.T) {
	t.Parallel()
	ca := NewCA(t, "certbot CA")
	dir := t.TempDir()
	if n := ca.Issue(t, LeafOptions{Names: []string{"a.example.com"}}).WriteCertbot(t, dir, "a.example.com"); n != 1 {
		t.Fatalf("first version %d", n)
	}
	second := ca.Issue(t, LeafOptions{Names: []string{"a.example.com"}})
	if n := second.WriteCertbot(t, dir, "a.example.com"); n != 2 {
		t.Fatalf("second version %d", n)
	}
	live := filepath.Join(dir, "live", "a.example.com")
	for _, f := range []string{"cert", "chain", "fullchain", "privkey"} {
		target, err := os.Readlink(filepath.Join(live, f+".pem"))
		if want := filepath.Join("..", "..", "archive", "a.example.com", f+"2.pem"); err != nil || target != want {
			t.Errorf("live/%s.pem -> %q (%v), want %q", f, target, err, want)
		}
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pair.Certificate) != 2 || !pair.Leaf.Equal(second.X509) {
		t.Fatalf("fullchain holds %d certificates, leaf current %v", len(pair.Certificate), pair.Leaf.Equal(second.X509))
	}
}
