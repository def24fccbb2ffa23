package nginxconf

import (
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// sharedCA signs the test certificates; one per test binary is enough, and
// clients that trust it (testCA(t).Pool()) need not know which test wrote
// the lineage they reach.
var sharedCA struct {
	once sync.Once
	ca   *testpeers.CA
}

func testCA(t testing.TB) *testpeers.CA {
	t.Helper()
	sharedCA.once.Do(func() { sharedCA.ca = testpeers.NewCA(t, "certmgr nginxconf test CA") })
	if sharedCA.ca == nil {
		t.Fatal("the shared test CA failed in another test")
	}
	return sharedCA.ca
}

// leafOpts shape one test certificate.
type leafOpts struct {
	dnsNames []string  // default: the lineage name
	notAfter time.Time // default: a day from now
	wrongKey bool      // privkey.pem holds another key
}

// writeLineage writes a certificate for name, valid from two days ago, as
// the next version of lineage name in certbot's layout under dir. It
// returns the leaf.
func writeLineage(t testing.TB, dir, name string, o leafOpts) *x509.Certificate {
	t.Helper()
	if o.dnsNames == nil {
		o.dnsNames = []string{name}
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(24 * time.Hour)
	}
	ca := testCA(t)
	leaf := ca.Issue(t, testpeers.LeafOptions{Names: o.dnsNames, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: o.notAfter})
	if o.wrongKey {
		leaf.Key = ca.Issue(t, testpeers.LeafOptions{Names: o.dnsNames}).Key
	}
	leaf.WriteCertbot(t, dir, name)
	return leaf.X509
}
