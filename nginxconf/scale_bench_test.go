package nginxconf

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
)

// BenchmarkScale is the issue-17 benchmark, run by bench/nginx/scale.sh (not
// by the plain Go benchmark pass of make bench): for each nginx binary
// (Debian's, and one with ssl_certificate_cache when present, see
// benchNginxBinaries) and each size (CERTMGR_BENCH_SIZES), one nginx per mode
// (per-server, which is also the static baseline; variable, with the
// certificate cache where nginx has it; lua, on Debian's nginx with its lua
// module), measuring for each
//
//   - nginx -t on the configuration of n domains: time and peak RSS;
//   - a new domain from "row issued" (its certificate in the store) to
//     served: Regenerate (vet, render, write, nginx -t, swap), the reload
//     (NGINX_RELOAD_METHOD=auto, a SIGHUP here) and polling handshakes with
//     its SNI until nginx presents its certificate;
//   - full TLS handshakes per second (no resumption) from
//     CERTMGR_BENCH_CLIENTS clients (default 4), each with an SNI drawn at
//     random from all n names, in one-second windows alternating between
//     the nginx (so that load from other work hits all alike), for
//     CERTMGR_BENCH_HANDSHAKE_SECONDS (default 10) each; with a cache (lua,
//     or ssl_certificate_cache), once right after the reload (cache empty)
//     and again after one handshake per name;
//   - nginx's memory after those handshakes (master RSS, worker RSS, PSS).
//
// Metrics are prefixed ps- (per-server), var- (variable) and lua-. nginx runs one
// worker process (testpeers); the clients share the machine's cores.
func BenchmarkScale(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("nginx workers must run as root to read the benchmark's private keys")
	}
	sizes := benchSizes(b)
	store := cachedStore(b, slices.Max(sizes))
	for _, bin := range benchNginxBinaries(b) {
		out, err := exec.Command(bin, "-V").CombinedOutput()
		if err != nil {
			b.Fatalf("%s -V: %v", bin, err)
		}
		info, err := ParseNginxV(string(out))
		if err != nil {
			b.Fatal(err)
		}
		for _, n := range sizes {
			b.Run(fmt.Sprintf("nginx-%s/%d", info.Version, n), func(b *testing.B) {
				for b.Loop() {
					benchScale(b, store, bin, info, n)
				}
			})
		}
	}
}

// benchNginxBinaries are the nginx binaries BenchmarkScale runs:
// $CERTMGR_BENCH_NGINX (comma-separated), default Debian's and, when
// present, one with ssl_certificate_cache (newerNginx).
func benchNginxBinaries(b *testing.B) []string {
	if v := os.Getenv("CERTMGR_BENCH_NGINX"); v != "" {
		return strings.Split(v, ",")
	}
	bins := []string{"/usr/sbin/nginx"}
	if n := newerNginx(b); n != "" {
		bins = append(bins, n)
	}
	return bins
}

// scaleNginx is one nginx of BenchmarkScale, set up and serving n domains.
type scaleNginx struct {
	prefix string // of its metrics
	peer   *testpeers.NginxPeer
	plan   Plan
	names  []domain.Name // served
}

func benchScale(b *testing.B, store *benchStore, bin string, info NginxInfo, n int) {
	names := store.names[:n]
	// The per-server baseline serves at most CERTMGR_BENCH_BASELINE_MAX
	// names (default 10,000): at 100,000 it would need about 10 GB and
	// minutes per reload here, and its handshake rate does not depend on the
	// number of names (a hash lookup of the SNI; 1,000 and 10,000 measured
	// alike).
	psNames := names[:min(n, envInt(b, "CERTMGR_BENCH_BASELINE_MAX", 10000))]
	b.ReportMetric(float64(len(psNames)), "ps-domains")
	modes := []CertMode{CertModePerServer, CertModeVariable}
	if luaNginx(bin) {
		modes = append(modes, CertModeLua)
	}
	var ngs []*scaleNginx
	for _, mode := range modes {
		ns := names
		if mode == CertModePerServer {
			ns = psNames
		}
		ng := setupScale(b, store, bin, mode, ns)
		ng.names = ns
		ngs = append(ngs, ng)
		// What auto picks on this nginx: without the lua module for the
		// per-server and variable rows, with it loaded for the lua row.
		li := info
		li.Lua = mode == CertModeLua
		auto := Choose(Config{CertMode: CertModeAuto, CertCacheMax: benchCertCacheMax(b)}, li, n, nil)
		picked := 0.0
		if auto.Mode == ng.plan.Mode && (auto.CertCache > 0) == (ng.plan.CertCache > 0) {
			picked = 1
		}
		b.ReportMetric(picked, ng.prefix+"auto-picks")
		b.ReportMetric(float64(ng.plan.CertCache), ng.prefix+"cert-cache-max")
		b.ReportMetric(float64(ng.plan.LuaCache), ng.prefix+"lua-cache-max")
	}
	secs := envInt(b, "CERTMGR_BENCH_HANDSHAKE_SECONDS", 10)
	rates := alternate(b, ngs, secs)
	for i, ng := range ngs {
		b.ReportMetric(rates[i], ng.prefix+"handshakes/s")
	}
	// A certificate cache (ssl_certificate_cache, or lua's per-worker
	// cache) starts empty in the workers a reload starts: visit every name
	// once, then measure all of them again.
	warmed := false
	for _, ng := range ngs[1:] {
		if ng.plan.CertCache == 0 && ng.plan.Mode != CertModeLua {
			continue
		}
		t0 := time.Now()
		if bad := warm(b, ng.peer.HTTPSPort, names); bad > 0 {
			b.Errorf("%s: %d handshakes failed while warming the cache", ng.prefix, bad)
		}
		b.ReportMetric(time.Since(t0).Seconds(), ng.prefix+"cache-warmup-s")
		warmed = true
	}
	if warmed {
		rates = alternate(b, ngs, secs)
		for i, ng := range ngs {
			b.ReportMetric(rates[i], ng.prefix+"handshakes-warm/s")
		}
	}
	for _, ng := range ngs {
		m, pss := nginxMemory(b, ng.peer)
		var workers float64
		for _, pid := range ng.peer.WorkerPIDs(b) {
			workers += procField(b, fmt.Sprintf("/proc/%d/status", pid), "VmRSS:") / 1024
		}
		b.ReportMetric(m, ng.prefix+"master-rss-MB")
		b.ReportMetric(workers, ng.prefix+"worker-rss-MB")
		b.ReportMetric(pss, ng.prefix+"nginx-pss-MB")
	}
}

// setupScale starts an nginx serving names[:n-1] in mode, measures nginx -t
// on it, then issues names[n-1] and measures until it is served.
func setupScale(b *testing.B, store *benchStore, bin string, mode CertMode, names []domain.Name) *scaleNginx {
	ng := &scaleNginx{prefix: map[CertMode]string{CertModePerServer: "ps-", CertModeVariable: "var-", CertModeLua: "lua-"}[mode]}
	peer := testpeers.Nginx(b, testpeers.NginxOptions{Binary: bin, Lua: mode == CertModeLua})
	peer.StopOnCleanup(b)
	ng.peer = peer
	le := store.dir
	cfg := Config{
		ConfPath: filepath.Join(peer.ConfDir, "custom-domains.conf"), Binary: peer.Binary,
		MainConf: peer.MainConf, Prefix: peer.Prefix, HTTPSPort: peer.HTTPSPort, HTTPPort: peer.HTTPPort,
		CertMode: mode, LetsEncryptDir: le, ACMEWebroot: peer.Webroot, Timeout: 60 * time.Minute,
		CertCacheMax: benchCertCacheMax(b),
		DefaultCert:  filepath.Join(le, "live", "default.invalid", "fullchain.pem"),
		DefaultKey:   filepath.Join(le, "live", "default.invalid", "privkey.pem"),
	}
	gen, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	rl, err := NewLocalReloader(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	n := len(names)
	initial, issued := Domains(names[:n-1]...), string(names[n-1])

	// The fleet before the new row: put live without the measured parts
	// (render and rename), then nginx -t measured alone, then a reload.
	sites, skipped := gen.vetter.Vet(initial)
	if len(skipped) != 0 {
		b.Fatalf("skipped %v", skipped[:min(3, len(skipped))])
	}
	plan, err := gen.plan(ctx, sites)
	if err != nil {
		b.Fatal(err)
	}
	ng.plan = plan
	if _, err := gen.applier.ApplyFunc(ctx, func(w io.Writer) error {
		return RenderTo(w, cfg, plan, slices.Values(sites))
	}); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(cfg.ConfPath)
	b.ReportMetric(float64(st.Size())/1e6, ng.prefix+"file-MB")

	// Peak RSS through GNU time (a peer package): a child exec'd straight
	// from this process inherits its high-water mark at exec (Go starts
	// children with CLONE_VM), so its own rusage would report the test
	// process's RSS (about 110 MB at 100,000 names) as nginx's.
	t0 := time.Now()
	cmd := exec.Command("/usr/bin/time", "-f", "maxrss-KB %M", bin, "-t", "-q", "-p", peer.Prefix, "-c", peer.MainConf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("nginx -t: %v\n%s", err, out)
	}
	b.ReportMetric(float64(time.Since(t0).Milliseconds()), ng.prefix+"nginx-t-ms")
	var maxKB float64
	if i := strings.LastIndex(string(out), "maxrss-KB "); i < 0 {
		b.Fatalf("no peak RSS from /usr/bin/time in %q", out)
	} else if _, err := fmt.Sscan(string(out[i+len("maxrss-KB "):]), &maxKB); err != nil {
		b.Fatalf("peak RSS from /usr/bin/time: %v in %q", err, out)
	}
	b.ReportMetric(maxKB/1024, ng.prefix+"nginx-t-maxrss-MB")

	before := waitWorkers(b, peer)
	if err := rl.Reload(ctx); err != nil {
		b.Fatal(err)
	}
	waitReplaced(b, peer, before, 60*time.Minute)

	// A row is issued: its certificate is in the store; from here to nginx
	// presenting it.
	t0 = time.Now()
	res, err := gen.Regenerate(ctx, append(slices.Clone(initial), Domain{Name: domain.Name(issued)}))
	if err != nil || !res.Changed {
		b.Fatalf("Regenerate = %v, changed %v", err, res.Changed)
	}
	regen := time.Since(t0)
	if err := rl.Reload(ctx); err != nil {
		b.Fatal(err)
	}
	waitServed(b, peer.HTTPSPort, issued, 60*time.Minute)
	served := time.Since(t0)
	b.ReportMetric(float64(served.Milliseconds()), ng.prefix+"issued-to-served-ms")
	b.ReportMetric(float64(regen.Milliseconds()), ng.prefix+"regenerate-ms")
	b.ReportMetric(float64((served - regen).Milliseconds()), ng.prefix+"reload-to-served-ms")
	if rl.signals != 2 || rl.commands != 0 {
		b.Errorf("reloads by signal %d, by command %d; want 2 and 0", rl.signals, rl.commands)
	}
	// Wait until the old workers (still finishing the waitServed
	// connections) are gone, so that memory and handshakes see one worker.
	waitWorkerCount(b, peer, 1)
	return ng
}

// waitWorkerCount waits until nginx has n worker processes.
func waitWorkerCount(b *testing.B, peer *testpeers.NginxPeer, n int) {
	deadline := time.Now().Add(5 * time.Minute)
	for len(peer.WorkerPIDs(b)) != n {
		if time.Now().After(deadline) {
			b.Fatalf("nginx still has workers %v", peer.WorkerPIDs(b))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alternate measures handshakes per second on each nginx in one-second
// windows, taking turns, secs windows each.
func alternate(b *testing.B, ngs []*scaleNginx, secs int) []float64 {
	done := make([]int64, len(ngs))
	for range secs {
		for i, ng := range ngs {
			ok, bad := handshakes(b, ng.peer.HTTPSPort, ng.names, time.Second)
			if bad > 0 {
				b.Errorf("%s: %d handshakes failed or got another certificate", ng.prefix, bad)
			}
			done[i] += ok
		}
	}
	rates := make([]float64, len(ngs))
	for i := range done {
		rates[i] = float64(done[i]) / float64(secs)
	}
	return rates
}

// waitServed polls full handshakes with SNI name until nginx presents a
// certificate for it.
func waitServed(b *testing.B, port int, name string, timeout time.Duration) {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(timeout)
	for {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err == nil {
			certs := conn.ConnectionState().PeerCertificates
			conn.Close()
			if len(certs) > 0 && slices.Contains(certs[0].DNSNames, name) {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not served after %s (last error %v)", name, timeout, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// handshakes runs full TLS handshakes with random SNI over names for dur
// from CERTMGR_BENCH_CLIENTS clients and returns how many succeeded and how
// many failed or got another name's certificate.
func handshakes(b *testing.B, port int, names []domain.Name, dur time.Duration) (ok, failed int64) {
	return testpeers.Handshakes("127.0.0.1:"+strconv.Itoa(port), len(names), func(i int) string { return string(names[i]) },
		envInt(b, "CERTMGR_BENCH_CLIENTS", 4), dur, testpeers.Served)
}

// warm makes one full handshake per name, from CERTMGR_BENCH_CLIENTS
// clients, and returns how many failed.
func warm(b *testing.B, port int, names []domain.Name) (failed int64) {
	connected := func(tls.ConnectionState, string) bool { return true }
	return testpeers.WarmNames("127.0.0.1:"+strconv.Itoa(port), len(names), func(i int) string { return string(names[i]) },
		envInt(b, "CERTMGR_BENCH_CLIENTS", 4), connected)
}

// luaNginx reports whether bin can load Debian's lua module, which is built
// for Debian's nginx only.
func luaNginx(bin string) bool {
	return bin == "/usr/sbin/nginx" && testpeers.LuaMissing() == nil
}

// benchCertCacheMax is NGINX_CERT_CACHE_MAX for the benchmark:
// $CERTMGR_BENCH_CERT_CACHE_MAX, default DefaultCertCacheMax (to measure a
// cache that holds every name, or a smaller one).
func benchCertCacheMax(b *testing.B) int {
	return envInt(b, "CERTMGR_BENCH_CERT_CACHE_MAX", DefaultCertCacheMax)
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
