package acme

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// testCA is the test kit's CA (testpeers.CA) for store and policy tests that
// need no ACME server, with leaves in acme's Issued shape.
type testCA struct{ *testpeers.CA }

func newTestCA(t testing.TB) *testCA { return &testCA{testpeers.NewCA(t, "certmgr test intermediate")} }

// issue makes a leaf for names valid from notBefore to notAfter, with a new
// P-256 key, PEM encoded as lego returns them.
func (ca *testCA) issue(t testing.TB, notBefore, notAfter time.Time, names ...string) Issued {
	t.Helper()
	return ca.issueWith(t, nil, notBefore, notAfter, names...)
}

// issueRSA is issue with a new RSA key of bits.
func (ca *testCA) issueRSA(t testing.TB, bits int, notBefore, notAfter time.Time, names ...string) Issued {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return ca.issueWith(t, key, notBefore, notAfter, names...)
}

func (ca *testCA) issueWith(t testing.TB, key crypto.Signer, notBefore, notAfter time.Time, names ...string) Issued {
	t.Helper()
	l := ca.Issue(t, testpeers.LeafOptions{Names: names, NotBefore: notBefore, NotAfter: notAfter, Key: key})
	return Issued{Cert: l.Cert, Chain: l.Chain, Key: l.Key}
}
