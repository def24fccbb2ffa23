package acmebench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
)

// enableEnv gates the comparison: it issues 150 certificates and takes minutes,
// too long for every `go test -bench . ./...`.
const enableEnv = "CERTMGR_BENCH_ACME"

type peers struct {
	nginx  *testpeers.NginxPeer
	dns    *testpeers.ChallTestSrvPeer
	pebble *testpeers.PebblePeer
	next   atomic.Int64
}

// name is a fresh domain resolving to nginx, for one certificate.
func (p *peers) name(b *testing.B, tool string) domain.Name {
	d, err := domain.Parse(fmt.Sprintf("%s-%d.bench.example.com", tool, p.next.Add(1)))
	if err != nil {
		b.Fatal(err)
	}
	p.dns.AddA(b, string(d), "127.0.0.1")
	return d
}

// BenchmarkIssue50 issues certificates (one per op; run.sh uses -benchtime
// 50x) with certmgr one after another, with certmgr 16 at a time, and with
// certbot certonly --webroot one after another, as the Celery task ran it.
func BenchmarkIssue50(b *testing.B) {
	if os.Getenv(enableEnv) == "" {
		b.Skipf("set %s=1 (bench/acme/run.sh does) to run the certmgr/certbot comparison", enableEnv)
	}
	acme.SetLegoLogger(zerolog.Nop())
	p := &peers{dns: testpeers.ChallTestSrv(b)}
	p.nginx = testpeers.Nginx(b, testpeers.NginxOptions{})
	conf := fmt.Sprintf("server {\n    listen 127.0.0.1:%d;\n    location /.well-known/acme-challenge/ { root %s; default_type text/plain; }\n}\n",
		p.nginx.HTTPPort, p.nginx.Webroot)
	if err := os.WriteFile(filepath.Join(p.nginx.ConfDir, "webroot.conf"), []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	p.nginx.ReloadAndWait(b)
	p.pebble = testpeers.Pebble(b, testpeers.PebbleOptions{HTTPPort: p.nginx.HTTPPort, DNS: p.dns})

	newManager := func(b *testing.B) *acme.Manager {
		m, err := acme.New(acme.Config{
			DirectoryURL: p.pebble.DirectoryURL,
			CABundle:     p.pebble.CABundle,
			Webroot:      p.nginx.Webroot,
			Dir:          filepath.Join(b.TempDir(), "letsencrypt"),
		})
		if err != nil {
			b.Fatal(err)
		}
		return m
	}

	b.Run("certmgr-sequential", func(b *testing.B) {
		m := newManager(b)
		ctx := context.Background()
		start := time.Now()
		for b.Loop() {
			if _, err := m.Issue(ctx, p.name(b, "seq")); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(time.Since(start).Seconds(), "wall-s")
	})

	b.Run("certmgr-concurrent", func(b *testing.B) {
		m := newManager(b)
		ctx := context.Background()
		start := time.Now()
		b.SetParallelism(8) // 8 × GOMAXPROCS goroutines
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := m.Issue(ctx, p.name(b, "par")); err != nil {
					b.Error(err)
				}
			}
		})
		b.ReportMetric(time.Since(start).Seconds(), "wall-s")
	})

	b.Run("certbot", func(b *testing.B) {
		bin, err := exec.LookPath("certbot")
		if err != nil {
			b.Skip("certbot missing: apt-get install certbot")
		}
		dir := b.TempDir()
		start := time.Now()
		for b.Loop() {
			d := p.name(b, "certbot")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			cmd := exec.CommandContext(ctx, bin, "certonly", "--webroot", "-w", p.nginx.Webroot, "-d", string(d),
				"--server", p.pebble.DirectoryURL, "--non-interactive", "--agree-tos",
				"--register-unsafely-without-email", "--key-type", "ecdsa",
				"--config-dir", filepath.Join(dir, "config"), "--work-dir", filepath.Join(dir, "work"),
				"--logs-dir", filepath.Join(dir, "logs"))
			cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+p.pebble.CABundle)
			out, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				b.Fatalf("certbot certonly %s: %v\n%s", d, err, out)
			}
		}
		b.ReportMetric(time.Since(start).Seconds(), "wall-s")
	})
}
