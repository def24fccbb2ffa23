package nginxconf

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
)

// benchSizes are the numbers of domains the benchmarks run at:
// $CERTMGR_BENCH_SIZES (comma-separated), default 1,000, 10,000 and 100,000.
func benchSizes(b *testing.B) []int {
	var sizes []int
	for f := range strings.SplitSeq(cmp.Or(os.Getenv("CERTMGR_BENCH_SIZES"), "1000,10000,100000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("CERTMGR_BENCH_SIZES: %q is not a number of domains", f)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// BenchmarkRender is the renderer alone, streaming to io.Discard from the
// vetted sites: its bytes and allocations per render stay the same from
// 1,000 to 100,000 domains (the file is never held in memory).
func BenchmarkRender(b *testing.B) {
	plans := []Plan{
		{Mode: CertModePerServer, HTTP2: HTTP2Listen},
		{Mode: CertModeVariable, HTTP2: HTTP2Listen},
		{Mode: CertModeVariable, HTTP2: HTTP2Directive, CertCache: 1},
		{Mode: CertModeLua, HTTP2: HTTP2Listen},
	}
	for _, plan := range plans {
		name := string(plan.Mode)
		if plan.CertCache > 0 {
			name += "+cache"
		}
		for _, n := range []int{1000, 10000, 100000} {
			ss := make([]Site, n)
			for i := range ss {
				ss[i] = Site{Domain: Domain{Name: benchName(i)}, CertSHA256: strings.Repeat("ab", 32)}
			}
			ss = SortSites(ss)
			if plan.CertCache > 0 {
				plan.CertCache = 2 * n
			}
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				b.ReportAllocs()
				var cw countWriter
				cw.w = io.Discard
				for b.Loop() {
					cw.n = 0
					if err := RenderTo(&cw, Config{}, plan, slices.Values(ss)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(cw.n)/1e6, "file-MB")
			})
		}
	}
}

// BenchmarkVet is a regeneration's certificate check once its cache is warm
// (one stat per lineage directory): the bytes it allocates per domain stay
// flat (the sites it returns, about 60 bytes each), its working memory does
// not grow. The store comes from cachedStore.
func BenchmarkVet(b *testing.B) {
	sizes := benchSizes(b)
	store := cachedStore(b, slices.Max(sizes))
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			v := NewVetter(Config{LetsEncryptDir: store.dir})
			ds := Domains(store.names[:n]...)
			slices.SortFunc(ds, func(a, b Domain) int { return strings.Compare(string(a.Name), string(b.Name)) })
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			v.Vet(ds) // cold: parse everything once
			runtime.GC()
			runtime.ReadMemStats(&m1)
			b.ReportAllocs()
			for b.Loop() {
				if sites, skipped := v.Vet(ds); len(sites) != n {
					b.Fatalf("%d sites, skipped %v", len(sites), skipped[:min(3, len(skipped))])
				}
			}
			// What the Vetter keeps between regenerations (its cache), after
			// the loop: b.Loop's first call resets reported metrics.
			b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/float64(n), "cache-B/domain")
		})
	}
}

// BenchmarkNginx measures a regeneration at 1,000 and 10,000 domains in each
// mode against real nginx: certmgr's own part (vetting, cold and cached;
// rendering; writing), nginx -t on the result, the reload until new workers
// serve it, and nginx's memory after the reload. bench/nginx/run.sh turns the
// metrics into a markdown table.
func BenchmarkNginx(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("nginx workers must run as root to read the benchmark's private keys")
	}
	store := cachedStore(b, 10000)
	for _, mode := range []CertMode{CertModePerServer, CertModeVariable, CertModeLua} {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("%s/%d", mode, n), func(b *testing.B) {
				benchNginx(b, store, mode, n)
			})
		}
	}
}

func benchNginx(b *testing.B, store *benchStore, mode CertMode, n int) {
	peer := testpeers.Nginx(b, testpeers.NginxOptions{Lua: mode == CertModeLua})
	peer.StopOnCleanup(b)
	le := store.dir
	cfg := Config{
		ConfPath: filepath.Join(peer.ConfDir, "custom-domains.conf"), Binary: peer.Binary,
		MainConf: peer.MainConf, Prefix: peer.Prefix, HTTPSPort: peer.HTTPSPort, HTTPPort: peer.HTTPPort,
		CertMode: mode, LetsEncryptDir: le, ACMEWebroot: peer.Webroot, Timeout: 5 * time.Minute,
		DefaultCert: filepath.Join(le, "live", "default.invalid", "fullchain.pem"),
		DefaultKey:  filepath.Join(le, "live", "default.invalid", "privkey.pem"),
	}
	a, err := NewApplier(cfg)
	if err != nil {
		b.Fatal(err)
	}
	rl, err := NewLocalReloader(cfg)
	if err != nil {
		b.Fatal(err)
	}
	sigCfg := cfg
	sigCfg.ReloadMethod = ReloadSignal
	sig, err := NewLocalReloader(sigCfg)
	if err != nil {
		b.Fatal(err)
	}
	ds := Domains(store.names[:n]...)
	ctx := context.Background()

	var vetCold, vetWarm, render, write, test, reloadCmd, reload, reloadSig time.Duration
	var size int
	var masterRSS, totalPSS float64
	for i := 0; b.Loop(); i++ {
		v := NewVetter(cfg)
		t0 := time.Now()
		v.Vet(ds)
		vetCold += time.Since(t0)

		t0 = time.Now()
		sites, skipped := v.Vet(ds)
		vetWarm += time.Since(t0)
		if len(sites) != n || len(skipped) != 0 {
			b.Fatalf("vetted %d sites, skipped %v", len(sites), skipped)
		}

		t0 = time.Now()
		text, err := Render(cfg, sites)
		render += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		// Each round differs, so that it is written and reloaded.
		text = append(text, fmt.Sprintf("# round %d\n", i)...)
		size = len(text)

		t0 = time.Now()
		if err := writeFileSync(a.CandidatePath(), text); err != nil {
			b.Fatal(err)
		}
		write += time.Since(t0)

		t0 = time.Now()
		if err := a.Test(ctx, a.CandidatePath()); err != nil {
			b.Fatal(err)
		}
		test += time.Since(t0)

		t0 = time.Now()
		if err := os.Rename(a.CandidatePath(), cfg.ConfPath); err != nil {
			b.Fatal(err)
		}
		write += time.Since(t0)

		before := waitWorkers(b, peer)
		t0 = time.Now()
		if err := rl.Reload(ctx); err != nil {
			b.Fatal(err)
		}
		reloadCmd += time.Since(t0)
		waitReplaced(b, peer, before, 10*time.Minute)
		reload += time.Since(t0)

		m, p := nginxMemory(b, peer)
		masterRSS += m
		totalPSS += p

		// The same reload by SIGHUP, without nginx -s's own parse.
		before = waitWorkers(b, peer)
		t0 = time.Now()
		if err := sig.Reload(ctx); err != nil {
			b.Fatal(err)
		}
		waitReplaced(b, peer, before, 10*time.Minute)
		reloadSig += time.Since(t0)
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(per(vetCold), "vet-cold-ms")
	b.ReportMetric(per(vetWarm), "vet-ms")
	b.ReportMetric(per(render), "render-ms")
	b.ReportMetric(per(write), "write-ms")
	b.ReportMetric(per(test), "nginx-t-ms")
	b.ReportMetric(per(reload), "reload-ms")
	b.ReportMetric(per(reloadCmd), "reload-cmd-ms")
	b.ReportMetric(per(reloadSig), "reload-signal-ms")
	b.ReportMetric(masterRSS/float64(b.N), "master-rss-MB")
	b.ReportMetric(totalPSS/float64(b.N), "nginx-pss-MB")
	b.ReportMetric(float64(size)/1e6, "file-MB")
	b.ReportMetric(100*(per(render)+per(write))/per(test), "own-%-of-nginx-t")
}

// nginxMemory returns the master's RSS and the PSS of master and workers
// together (PSS splits pages shared after fork fairly), in MB.
func nginxMemory(b *testing.B, peer *testpeers.NginxPeer) (masterRSS, pss float64) {
	master := peer.MasterPID(b)
	masterRSS = procField(b, fmt.Sprintf("/proc/%d/status", master), "VmRSS:")
	for _, pid := range append([]int{master}, peer.WorkerPIDs(b)...) {
		pss += procField(b, fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
	}
	return masterRSS / 1024, pss / 1024
}

// procField reads a "Name: N kB" line.
func procField(b *testing.B, path, field string) float64 {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, err := strconv.ParseFloat(f[0], 64)
				if err == nil {
					return v
				}
			}
		}
	}
	b.Fatalf("%s: no %s", path, field)
	return 0
}

// BenchmarkHandshake is the price of variable mode: one full TLS handshake
// (no session resumption) per iteration against real nginx, SNI cycling over
// 100 domains. In per-server mode the certificate is in memory; in variable
// mode nginx reads and parses it from disk at each handshake.
func BenchmarkHandshake(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("nginx workers must run as root to read the benchmark's private keys")
	}
	le := b.TempDir()
	writeLineage(b, le, "default.invalid", leafOpts{})
	var names []domain.Name
	for i := range 100 {
		n := domain.Name(fmt.Sprintf("shop%05d.tenant-%d.example-store.com", i, i%97))
		writeLineage(b, le, string(n), leafOpts{})
		names = append(names, n)
	}
	for _, mode := range []CertMode{CertModePerServer, CertModeVariable} {
		b.Run(string(mode), func(b *testing.B) {
			peer := testpeers.Nginx(b, testpeers.NginxOptions{})
			peer.StopOnCleanup(b)
			cfg := Config{
				ConfPath: filepath.Join(peer.ConfDir, "custom-domains.conf"), Binary: peer.Binary,
				MainConf: peer.MainConf, Prefix: peer.Prefix, HTTPSPort: peer.HTTPSPort, HTTPPort: peer.HTTPPort,
				CertMode: mode, LetsEncryptDir: le, ACMEWebroot: peer.Webroot,
				DefaultCert: filepath.Join(le, "live", "default.invalid", "fullchain.pem"),
				DefaultKey:  filepath.Join(le, "live", "default.invalid", "privkey.pem"),
			}
			gen, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			rl, _ := NewLocalReloader(cfg)
			before := waitWorkers(b, peer)
			if _, err := gen.Regenerate(context.Background(), Domains(names...)); err != nil {
				b.Fatal(err)
			}
			if err := rl.Reload(context.Background()); err != nil {
				b.Fatal(err)
			}
			waitReplaced(b, peer, before, time.Minute)
			addr := "127.0.0.1:" + strconv.Itoa(peer.HTTPSPort)
			roots := testCA(b).Pool()
			i := 0
			for b.Loop() {
				n := string(names[i%len(names)])
				i++
				conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: n, RootCAs: roots})
				if err != nil {
					b.Fatal(err)
				}
				conn.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}
