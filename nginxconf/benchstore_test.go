package nginxconf

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
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
	have, ca := 0, (*testpeers.CA)(nil)
	if meta, err := os.ReadFile(filepath.Join(dir, "meta")); err == nil {
		var count int
		var made int64
		if _, err := fmt.Sscanf(string(meta), "%d %d", &count, &made); err == nil && time.Since(time.Unix(made, 0)) < 60*24*time.Hour {
			ca, have = testpeers.OpenCA(b, dir, "certmgr benchmark CA"), count
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
		ca = testpeers.OpenCA(b, dir, "certmgr benchmark CA")
		writeBenchLineage(b, dir, "default.invalid", ca, made)
	} else if meta, err := os.ReadFile(filepath.Join(dir, "meta")); err == nil {
		if f := strings.Fields(string(meta)); len(f) == 2 {
			sec, _ := strconv.ParseInt(f[1], 10, 64)
			made = time.Unix(sec, 0)
		}
	}
	if have < n {
		start := time.Now()
		parallel(n-have, func(i int) { writeBenchLineage(b, dir, string(benchName(have+i)), ca, made) })
		if err := os.WriteFile(filepath.Join(dir, "meta"), fmt.Appendf(nil, "%d %d\n", n, made.Unix()), 0o644); err != nil {
			b.Fatal(err)
		}
		b.Logf("benchmark store: minted %d certificates in %s (%s)", n-have, time.Since(start).Round(time.Millisecond), dir)
	}
	s := &benchStore{dir: dir, pool: ca.Pool()}
	for i := range n {
		s.names = append(s.names, benchName(i))
	}
	return s
}

// writeBenchLineage writes one lineage, a leaf for name made at made:
// archive/<name>/{fullchain1,privkey1}.pem and the live/<name>/ symlinks to
// them (half the files of testpeers.Leaf.WriteCertbot, for 100,000 of them).
func writeBenchLineage(b testing.TB, dir, name string, ca *testpeers.CA, made time.Time) {
	leaf := ca.Issue(b, testpeers.LeafOptions{Names: []string{name}, NotBefore: made.Add(-time.Hour), NotAfter: made.Add(90 * 24 * time.Hour)})
	archive := filepath.Join(dir, "archive", name)
	live := filepath.Join(dir, "live", name)
	for _, d := range []string{archive, live} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	for f, data := range map[string][]byte{"fullchain": leaf.Fullchain(), "privkey": leaf.Key} {
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
