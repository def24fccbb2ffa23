package certstore

import (
	"context"
	"testing"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/internal/testpeers"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func openStore(t testing.TB, url, key string) *Store {
	t.Helper()
	s, err := Open(ctxT(t), Config{URL: url, Key: key})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func newPG(t testing.TB) *testpeers.PostgresPeer { return testpeers.Postgres(t) }

// testCA is the test kit's CA (testpeers.CA), with leaves in acme's Issued
// shape.
type testCA struct{ *testpeers.CA }

func newTestCA(t testing.TB) *testCA { return &testCA{testpeers.NewCA(t, "certstore test CA")} }

func (ca *testCA) issue(t testing.TB, names ...string) acme.Issued {
	t.Helper()
	l := ca.Issue(t, testpeers.LeafOptions{Names: names})
	return acme.Issued{Cert: l.Cert, Chain: l.Chain, Key: l.Key}
}

// filesStore makes a certbot-layout directory the way certmgr's files mode
// writes it: lineage name → number of versions.
func filesStore(t testing.TB, ca *testCA, dir string, lineages map[string]int) {
	t.Helper()
	st := acme.NewStore(dir)
	for name, n := range lineages {
		d := name
		if m := len(name); m > 5 && name[m-5] == '-' {
			d = name[:m-5]
		}
		for range n {
			if _, err := st.Save(acme.LineageName(name), ca.issue(t, d), acme.RenewalParams{
				Server: "https://acme.test/directory", Account: "0123", Webroot: "/var/www/letsencrypt",
				KeyType: acme.EC256, Domains: []string{d}}); err != nil {
				t.Fatal(err)
			}
		}
	}
}
