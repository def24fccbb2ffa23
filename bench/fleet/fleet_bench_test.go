package fleetbench

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/agent"
	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/nginxconf"
)

// enableEnv gates the benchmarks: they start up to 11 nginx and write 10,000
// certificates, too long for every `go test -bench . ./...`.
const enableEnv = "CERTMGR_BENCH_FLEET"

func skipUnlessEnabled(b *testing.B) {
	if os.Getenv(enableEnv) == "" {
		b.Skipf("set %s=1 (bench/fleet/run.sh does)", enableEnv)
	}
}

// ca is the test kit's CA, with leaves as certstore lineages.
type ca struct{ *testpeers.CA }

func newCA(b *testing.B) *ca { return &ca{testpeers.NewCA(b, "fleet bench CA")} }

// lineage is version n of a one-name lineage, as the worker stores it.
func (c *ca) lineage(b *testing.B, name string, n int) certstore.Lineage {
	l := c.Issue(b, testpeers.LeafOptions{Names: []string{name}})
	return certstore.Lineage{Name: name, Domains: []string{name}, Current: n,
		RenewalConf: "version = 2.1.0\narchive_dir = /etc/letsencrypt/archive/" + name + "\n",
		Versions: []certstore.Version{{N: n, Cert: l.Cert, Chain: l.Chain, Fullchain: l.Fullchain(), Privkey: l.Key,
			Serial: hex.EncodeToString(l.X509.SerialNumber.Bytes()), NotBefore: l.X509.NotBefore, NotAfter: l.X509.NotAfter}}}
}

// benchLogger shows the agents' sync timings with CERTMGR_BENCH_LOG=1.
func benchLogger() zerolog.Logger {
	if os.Getenv("CERTMGR_BENCH_LOG") == "" {
		return zerolog.Nop()
	}
	return zerolog.New(os.Stderr).With().Timestamp().Logger()
}

// memDir is a directory in memory (/dev/shm), as the fleet overlay's
// letsencrypt emptyDir (medium: Memory) is; a disk directory where there is
// no /dev/shm.
func memDir(b *testing.B) string {
	d, err := os.MkdirTemp("/dev/shm", "certmgr-fleet-bench-")
	if err != nil {
		return b.TempDir()
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func openStore(b *testing.B, url, key string) *certstore.Store {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := certstore.Open(ctx, certstore.Config{URL: url, Key: key})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s
}

// startAgent runs an agent with its own nginx and directory until the
// benchmark ends.
func startAgent(b *testing.B, url, key, pod string, c *ca) *agent.Agent {
	ng := testpeers.Nginx(b, testpeers.NginxOptions{})
	def := c.lineage(b, "default.invalid", 1).Versions[0]
	dd := b.TempDir()
	if err := os.WriteFile(filepath.Join(dd, "cert.pem"), def.Fullchain, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dd, "key.pem"), def.Privkey, 0o600); err != nil {
		b.Fatal(err)
	}
	cfg := nginxconf.Config{ConfPath: filepath.Join(ng.ConfDir, "custom-domains.conf"), Binary: ng.Binary,
		MainConf: ng.MainConf, Prefix: ng.Prefix, Upstream: "127.0.0.1:9", HTTPSPort: ng.HTTPSPort, HTTPPort: ng.HTTPPort,
		DefaultCert: filepath.Join(dd, "cert.pem"), DefaultKey: filepath.Join(dd, "key.pem"), ACMEWebroot: ng.Webroot,
		ACMEChallengeProxy: "127.0.0.1:9", LetsEncryptDir: memDir(b), Timeout: 5 * time.Minute,
		ReloadMethod: nginxconf.ReloadSignal}
	gen, err := nginxconf.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	rl, err := nginxconf.NewLocalReloader(cfg)
	if err != nil {
		b.Fatal(err)
	}
	a, err := agent.New(agent.Config{Store: openStore(b, url, key), Nginx: gen, Local: rl, Dir: cfg.LetsEncryptDir,
		Pod: pod, ReloadTimeout: 5 * time.Minute, Logger: benchLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return a
}

func waitApplied(b *testing.B, agents []*agent.Agent, v int64, timeout time.Duration) time.Duration {
	start := time.Now()
	for {
		all := true
		for _, a := range agents {
			if a.Applied() < v {
				all = false
				break
			}
		}
		if all {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			b.Fatalf("agents did not reach version %d within %s", v, timeout)
		}
		time.Sleep(time.Millisecond) // polling the agents' state
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

// BenchmarkPropagation: a renewal committed to the store (a new version of
// one of 20 served lineages), until every agent's nginx serves it (the
// agent's applied version, which it records once nginx's new workers
// replaced the old ones). One op is one commit.
func BenchmarkPropagation(b *testing.B) {
	skipUnlessEnabled(b)
	for _, n := range []int{1, 3, 10} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			pg := testpeers.Postgres(b)
			key := testpeers.StoreKey()
			st := openStore(b, pg.URL, key)
			c := newCA(b)
			ctx := context.Background()
			var ls []certstore.Lineage
			var served []certstore.Served
			for i := range 20 {
				name := fmt.Sprintf("site-%d.bench.example.com", i)
				ls = append(ls, c.lineage(b, name, 1))
				served = append(served, certstore.Served{Domain: name, Lineage: name})
			}
			if _, err := st.PutLineages(ctx, ls); err != nil {
				b.Fatal(err)
			}
			_, v, err := st.SetServed(ctx, served)
			if err != nil {
				b.Fatal(err)
			}
			var agents []*agent.Agent
			for i := range n {
				agents = append(agents, startAgent(b, pg.URL, key, fmt.Sprintf("pod-%d", i), c))
			}
			waitApplied(b, agents, v, 2*time.Minute)
			// Prepared versions, so that key generation is not timed.
			version := 1
			next := func() certstore.Lineage { version++; return c.lineage(b, "site-0.bench.example.com", version) }
			for range 3 { // warm-up: LISTEN connections up, nginx reloaded once
				v, err := st.PutLineages(ctx, []certstore.Lineage{next()})
				if err != nil {
					b.Fatal(err)
				}
				waitApplied(b, agents, v, time.Minute)
			}
			var took []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				l := next()
				b.StartTimer()
				start := time.Now()
				v, err := st.PutLineages(ctx, []certstore.Lineage{l})
				if err != nil {
					b.Fatal(err)
				}
				waitApplied(b, agents, v, time.Minute)
				took = append(took, time.Since(start))
			}
			b.StopTimer()
			b.ReportMetric(float64(percentile(took, 0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(percentile(took, 0.99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(slices.Max(took).Microseconds())/1000, "max-ms")
		})
	}
}

// BenchmarkColdSync10k: 10,000 served certificates in the store; a new
// agent with an empty directory starts, until its first full sync is done
// (every certificate written, custom-domains.conf rendered, nginx -t, reload
// confirmed). Also reports the tables' size.
func BenchmarkColdSync10k(b *testing.B) {
	skipUnlessEnabled(b)
	const total = 10000
	pg := testpeers.Postgres(b)
	key := testpeers.StoreKey()
	st := openStore(b, pg.URL, key)
	c := newCA(b)
	ctx := context.Background()
	// Generate in parallel, store in batches.
	ls := make([]certstore.Lineage, total)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 4 {
				ls[i] = c.lineage(b, fmt.Sprintf("tenant-%05d.bench.example.com", i), 1)
			}
		}()
	}
	wg.Wait()
	served := make([]certstore.Served, total)
	for i := 0; i < total; i += 500 {
		if _, err := st.PutLineages(ctx, ls[i:i+500]); err != nil {
			b.Fatal(err)
		}
	}
	for i, l := range ls {
		served[i] = certstore.Served{Domain: l.Name, Lineage: l.Name}
	}
	if _, _, err := st.SetServed(ctx, served); err != nil {
		b.Fatal(err)
	}
	var size int64
	if err := pg.Conn(b).QueryRow(ctx, `SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE 'certmgr_%'`).Scan(&size); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		a := startAgent(b, pg.URL, key, fmt.Sprintf("cold-%d", i), c)
		for !a.Ready() {
			if time.Since(start) > 10*time.Minute {
				b.Fatal("no first sync in 10 minutes")
			}
			time.Sleep(5 * time.Millisecond) // polling the agent's state
		}
		b.ReportMetric(time.Since(start).Seconds(), "sync-s")
	}
	b.ReportMetric(float64(size)/(1<<20), "tables-MiB")
}
