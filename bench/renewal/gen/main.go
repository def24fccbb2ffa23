// Command gen fills a certbot-layout store with N lineages (the test kit's
// CA, ECDSA P-256 leaves with varied lifetimes), for the renewal-scan
// benchmark.
//
//	go run ./bench/renewal/gen -dir /tmp/store -n 10000
package main

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
)

func main() {
	dir := flag.String("dir", "", "store directory (created)")
	n := flag.Int("n", 10000, "lineages to create")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "gen: -dir is required")
		os.Exit(2)
	}
	if err := run(*dir, *n); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// exitTB lets a command use the test kit's CA outside a test: it has the
// only methods testpeers.CA calls (Helper, Fatal, Fatalf), and a failure
// ends the command. Any other method would panic on the nil TB.
type exitTB struct{ testing.TB }

func (exitTB) Helper() {}

func (exitTB) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"gen:"}, args...)...)
	os.Exit(1)
}

func (exitTB) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gen: "+format+"\n", args...)
	os.Exit(1)
}

func run(dir string, n int) error {
	var t exitTB
	ca := testpeers.NewCA(t, "bench CA")
	now := time.Now()
	store := acme.NewStore(dir)
	for i := range n {
		name, err := domain.Parse(fmt.Sprintf("tenant-%05d.example.com", i))
		if err != nil {
			return err
		}
		// Issued between 0 and 89 days ago, 90-day lifetime: a third are due.
		issued := now.Add(-time.Duration(i%90) * 24 * time.Hour)
		l := ca.Issue(t, testpeers.LeafOptions{Names: []string{string(name)}, NotBefore: issued, NotAfter: issued.Add(90 * 24 * time.Hour)})
		_, err = store.Save(acme.NameFor(name), acme.Issued{Cert: l.Cert, Chain: l.Chain, Key: l.Key},
			acme.RenewalParams{Server: "https://acme-staging-v02.api.letsencrypt.org/directory",
				Account: "0123456789abcdef0123456789abcdef", Webroot: "/var/www/letsencrypt",
				KeyType: acme.EC256, Domains: []string{string(name)}})
		if err != nil {
			return fmt.Errorf("save %s: %w", name, err)
		}
	}
	return nil
}
