package fleet

import (
	"context"
	"encoding/hex"
	"testing"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/internal/testpeers"
)

// version is a new certificate for name from ca, as version n.
func version(t *testing.T, ca *testpeers.CA, n int, name string) certstore.Version {
	t.Helper()
	l := ca.Issue(t, testpeers.LeafOptions{Names: []string{name}})
	return certstore.Version{N: n, Cert: l.Cert, Chain: l.Chain, Fullchain: l.Fullchain(), Privkey: l.Key,
		Serial: hex.EncodeToString(l.X509.SerialNumber.Bytes()), NotBefore: l.X509.NotBefore, NotAfter: l.X509.NotAfter}
}

// putStored stores lineage name with versions vs, the last one current.
func putStored(t *testing.T, st *certstore.Store, name string, vs ...certstore.Version) {
	t.Helper()
	conf := "version = 2.1.0\narchive_dir = /etc/letsencrypt/archive/" + name + "\n"
	for _, k := range []string{"cert", "privkey", "chain", "fullchain"} {
		conf += k + " = /etc/letsencrypt/live/" + name + "/" + k + ".pem\n"
	}
	l := certstore.Lineage{Name: name, Domains: []string{name}, Current: vs[len(vs)-1].N, RenewalConf: conf, Versions: vs}
	if _, err := st.PutLineages(context.Background(), []certstore.Lineage{l}); err != nil {
		t.Fatal(err)
	}
}

// issueLocally saves a new certificate for name into m as acme's Issuer does
// (the next version of the lineage, made live) and returns its serial. It
// does not push.
func issueLocally(t *testing.T, m *Mirror, ca *testpeers.CA, name string) string {
	t.Helper()
	leaf := ca.Issue(t, testpeers.LeafOptions{Names: []string{name}})
	mgr, err := acme.New(acme.Config{DirectoryURL: "https://ca.invalid/directory", Webroot: "/var/www/acme", Dir: m.Dir(), Journal: m})
	if err != nil {
		t.Fatal(err)
	}
	l, err := mgr.Store().Save(acme.LineageName(name), acme.Issued{Cert: leaf.Cert, Chain: leaf.Chain, Key: leaf.Key},
		acme.RenewalParams{Server: "https://ca.invalid/directory", Webroot: "/var/www/acme", KeyType: acme.DefaultKeyType, Domains: []string{name}})
	if err != nil {
		t.Fatal(err)
	}
	if l.Err != nil {
		t.Fatal(l.Err)
	}
	return hex.EncodeToString(leaf.X509.SerialNumber.Bytes())
}

// purge is remove_custom_domain_task(name, purge=True) on the worker of m.
func purge(t *testing.T, st *certstore.Store, m *Mirror, name string) {
	t.Helper()
	c := Certificates{Store: acme.NewStore(m.Dir()), DB: st, Mirror: m}
	if err := c.Remove(acme.LineageName(name)); err != nil {
		t.Fatal(err)
	}
}

// serials are the serials of lineage name's versions in dir and of its live
// one; none when dir does not hold it.
func localSerials(t *testing.T, dir, name string) (all []string, live string) {
	t.Helper()
	l, err := certstore.ReadLineage(dir, name)
	if err != nil {
		return nil, ""
	}
	for _, v := range l.Versions {
		all = append(all, v.Serial)
		if v.N == l.Current {
			live = v.Serial
		}
	}
	return all, live
}

// storedSerials are the serials of every stored version of name and of its
// current one.
func storedSerials(t *testing.T, st *certstore.Store, name string) (all []string, current string) {
	t.Helper()
	ls, err := st.Lineages(context.Background(), certstore.LineageFilter{Names: []string{name}, AllVersions: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		for _, v := range l.Versions {
			all = append(all, v.Serial)
			if v.N == l.Current {
				current = v.Serial
			}
		}
	}
	return all, current
}
