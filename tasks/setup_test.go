package tasks_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/internal/wire"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/tasks"
	"github.com/midsummer/certmgr/worker"
)

// bundle is one test's whole certmgr: real Redis, Postgres, Pebble,
// challtestsrv and nginx, and the components wired by package wire, as
// cmd/certmgr wires them.
type bundle struct {
	t        *testing.T
	redis    *testpeers.RedisPeer
	pg       *testpeers.PostgresPeer
	pebble   *testpeers.PebblePeer
	nginx    *testpeers.NginxPeer
	celery   *testpeers.CeleryClient
	target   string
	suffix   string // random label that keeps this test's names (and advisory locks) its own
	names    domain.Policy
	parts    *wire.Components
	db       *domaindb.Store
	acme     *acme.Manager
	acmeCfg  acme.Config
	issuer   *countingIssuer
	reloader *countingReloader
	svc      *tasks.Service
	registry *prometheus.Registry
	clock    *testpeers.Clock
	logs     *testpeers.LogBuffer // the service's JSON log lines
}

// countingIssuer counts ACME orders: the test's own count of what reached the CA.
type countingIssuer struct {
	tasks.Issuer
	mu     sync.Mutex
	issued map[domain.Name]int
	renews map[acme.LineageName]int
}

func (c *countingIssuer) Issue(ctx context.Context, d domain.Name) (acme.Lineage, error) {
	c.mu.Lock()
	c.issued[d]++
	c.mu.Unlock()
	return c.Issuer.Issue(ctx, d)
}

func (c *countingIssuer) Renew(ctx context.Context, n acme.LineageName) (acme.Lineage, error) {
	c.mu.Lock()
	c.renews[n]++
	c.mu.Unlock()
	return c.Issuer.Renew(ctx, n)
}

func (c *countingIssuer) RenewFor(ctx context.Context, n acme.LineageName, names []domain.Name) (acme.Lineage, error) {
	c.mu.Lock()
	c.renews[n]++
	c.mu.Unlock()
	return c.Issuer.RenewFor(ctx, n, names)
}

func (c *countingIssuer) orders(d domain.Name) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.issued[d]
}

func (c *countingIssuer) renewals() map[acme.LineageName]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[acme.LineageName]int{}
	for k, v := range c.renews {
		out[k] = v
	}
	return out
}

// countingReloader counts reloads of the real nginx.
type countingReloader struct {
	tasks.Reloader
	n atomic.Int32
}

func (c *countingReloader) Reload(ctx context.Context) (podreload.Result, error) {
	c.n.Add(1)
	return c.Reloader.Reload(ctx)
}

// setupOpt adjusts the wiring's Config before the build (ownership mode,
// budgets, another wrapper around the counting ones).
type setupOpt func(*wire.Config)

// setup builds the bundle: real peers, and the components wired by package
// wire as cmd/certmgr wires them, the Issuer and Reloader wrapped to count.
func setup(t *testing.T, opts ...setupOpt) *bundle {
	t.Helper()
	suffix := testpeers.RandomHex(4)
	bd := &bundle{t: t, suffix: suffix, target: "custom.platform-" + suffix + ".test", clock: &testpeers.Clock{}}
	bd.names = domain.Policy{CNAMETarget: bd.target, AllowPrivateSuffixes: []string{"test"}}
	bd.redis = testpeers.Redis(t)
	bd.pg = testpeers.Postgres(t)
	bd.nginx = testpeers.Nginx(t, testpeers.NginxOptions{})
	dns := testpeers.ChallTestSrv(t)
	dns.AddA(t, bd.target, "127.0.0.1")
	bd.pebble = testpeers.Pebble(t, testpeers.PebbleOptions{HTTPPort: bd.nginx.HTTPPort, DNS: dns,
		Profiles: map[string]time.Duration{"classic": 90 * 24 * time.Hour, "shortlived": 6 * 24 * time.Hour}})
	bd.celery = testpeers.Celery(t, bd.redis.URL)
	bd.logs = &testpeers.LogBuffer{}
	log := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), bd.logs)).Level(zerolog.InfoLevel)
	ctx := context.Background()

	store := t.TempDir()
	cfg := wire.Config{
		Names: bd.names,
		DB:    domaindb.Config{URL: bd.pg.URL},
		DNS:   dnscheck.Config{Servers: []string{dns.DNSAddr}, Target: bd.target, Timeout: 2 * time.Second},
		ACME: acme.Config{
			DirectoryURL: bd.pebble.DirectoryURL, CABundle: bd.pebble.CABundle, Profile: "classic",
			Webroot: bd.nginx.Webroot, Dir: store, Now: bd.clock.Now,
		},
		Nginx: nginxconf.Config{
			ConfPath: filepath.Join(bd.nginx.ConfDir, "custom-domains.conf"), Binary: bd.nginx.Binary,
			MainConf: bd.nginx.MainConf, Prefix: bd.nginx.Prefix, Upstream: "127.0.0.1:9",
			HTTPSPort: bd.nginx.HTTPSPort, HTTPPort: bd.nginx.HTTPPort,
			ACMEWebroot: bd.nginx.Webroot, LetsEncryptDir: store, Now: bd.clock.Now,
		},
		Reload:    podreload.Config{Mode: podreload.ModeLocal},
		Tasks:     tasks.Config{RetryBase: 200 * time.Millisecond, RetryMax: time.Second},
		StoreKind: wire.StoreFiles,
		Logger:    log,
		WrapIssuer: func(i tasks.Issuer) tasks.Issuer {
			bd.issuer = &countingIssuer{Issuer: i, issued: map[domain.Name]int{}, renews: map[acme.LineageName]int{}}
			return bd.issuer
		},
		WrapReloader: func(r tasks.Reloader) tasks.Reloader {
			bd.reloader = &countingReloader{Reloader: r}
			return bd.reloader
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := wire.Build(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	bd.parts, bd.db, bd.acme, bd.svc, bd.registry = c, c.DB, c.ACME, c.Tasks, c.Registry
	bd.acmeCfg = cfg.ACMEConfig()
	// The ACME HTTP-01 server block must be live before the first order.
	if _, err := c.Nginx.Regenerate(ctx, nil); err != nil {
		t.Fatal(err)
	}
	bd.nginx.ReloadAndWait(t)
	return bd
}

// domain makes a tenant domain name of this test, CNAMEd to the target.
func (b *bundle) domain(label string) domain.Name {
	d := domain.Name(label + "-" + b.suffix + ".example.com")
	b.pebble.DNS.SetCNAME(b.t, string(d), b.target)
	return d
}

// startWorker runs a certmgr worker on the test's Redis database.
func (b *bundle) startWorker(name string) *worker.Server {
	b.t.Helper()
	srv, err := worker.NewServer(worker.Config{
		BrokerURL: b.redis.URL, Queue: "certmgr", Concurrency: 2, Hostname: name + "@test",
		MaxRetries: 5, ShutdownGrace: 5 * time.Second,
		Logger: zerolog.New(zerolog.NewTestWriter(b.t)).Level(zerolog.WarnLevel),
	}, b.parts.ServeMux())
	if err != nil {
		b.t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	return srv
}

// row reads a domain's row.
func (b *bundle) row(d domain.Name) domaindb.CustomDomain {
	b.t.Helper()
	r, err := b.db.GetByName(context.Background(), d)
	if err != nil {
		b.t.Fatalf("row of %s: %v", d, err)
	}
	return r
}

// handshake connects to nginx's HTTPS port with SNI d and returns the leaf
// it serves, verified against Pebble's root, or the handshake error.
func (b *bundle) handshake(d domain.Name) (*x509.Certificate, error) {
	pool := x509.NewCertPool()
	for rest := b.pebble.RootPEM(b.t); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err == nil {
			pool.AddCert(c)
		}
	}
	conn, err := tls.DialWithDialer(&netDialer, "tcp", fmt.Sprintf("127.0.0.1:%d", b.nginx.HTTPSPort),
		&tls.Config{ServerName: string(d), RootCAs: pool})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// waitServed waits until nginx serves d a certificate for which ok is true.
func (b *bundle) waitServed(d domain.Name, ok func(*x509.Certificate) bool) *x509.Certificate {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		leaf, err := b.handshake(d)
		if err == nil && ok(leaf) {
			return leaf
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("nginx does not serve the expected certificate for %s: last %v", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sweep runs a renewal sweep, again while another test's sweep holds the
// sweep lock (an advisory lock of the whole Postgres server, not of the
// test's schema): tests sweep in parallel.
func (b *bundle) sweep(ctx context.Context) (tasks.RenewResult, error) {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := b.svc.Sweep(ctx, false)
		if err != nil || !res.Skipped || time.Now().After(deadline) {
			return res, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
