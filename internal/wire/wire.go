package wire

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/tasks"
	"github.com/midsummer/certmgr/worker"
)

// Components are the parts a command runs, made by Build. Close releases
// them.
type Components struct {
	DB   *domaindb.Store
	DNS  *dnscheck.Checker
	ACME *acme.Manager
	// Nginx and Reloader are files mode's; nil in fleet mode, where the
	// agents render and reload.
	Nginx    *nginxconf.Generator
	Reloader *podreload.Reloader
	// Store is fleet mode's postgres store; nil in files mode.
	Store *certstore.Store
	Tasks *tasks.Service
	// Registry holds the Go and process collectors and the tasks' metrics.
	Registry *prometheus.Registry
}

// DNSConfigError is dnscheck refusing its Config; most often no resolver is
// configured and resolv.conf cannot be read.
type DNSConfigError struct {
	Servers []string // as configured (CUSTOM_DOMAIN_DNS_SERVERS)
	Err     error
}

func (e *DNSConfigError) Error() string { return e.Err.Error() }
func (e *DNSConfigError) Unwrap() error { return e.Err }

// Build makes every component of cfg.StoreKind's mode. The database pool
// opens lazily, so a database that is down fails tasks (which retry), not
// the build; fleet mode's store is opened (migrated, key checked) here.
// lego's own logger is process-wide and left to the caller
// (acme.SetLegoLogger).
func Build(ctx context.Context, cfg Config) (*Components, error) {
	c := &Components{Registry: prometheus.NewRegistry()}
	c.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var err error
	dbc := cfg.DB
	dbc.Names, dbc.Logger = cfg.Names, cfg.Logger
	if c.DB, err = domaindb.New(ctx, dbc); err != nil {
		return nil, err
	}
	dnsc := cfg.DNS
	dnsc.Logger = cfg.Logger
	if c.DNS, err = dnscheck.New(dnsc); err != nil {
		c.Close()
		return nil, &DNSConfigError{Servers: dnsc.Servers, Err: err}
	}
	if cfg.StoreKind == StorePostgres {
		err = c.buildFleet(ctx, cfg)
	} else {
		err = c.buildFiles(cfg)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// buildFiles makes files mode's components after c.DB and c.DNS: acme on
// LETSENCRYPT_DIR, nginx's generator, and the reloader of this pod's nginx
// or of every sibling pod's.
func (c *Components) buildFiles(cfg Config) error {
	var err error
	if c.ACME, err = acme.New(cfg.ACMEConfig()); err != nil {
		return err
	}
	ncfg := cfg.NginxConfig()
	if c.Nginx, err = nginxconf.New(ncfg); err != nil {
		return err
	}
	local, err := nginxconf.NewLocalReloader(ncfg)
	if err != nil {
		return err
	}
	rc := cfg.Reload
	rc.Local, rc.Logger = local, cfg.Logger
	if c.Reloader, err = podreload.New(rc); err != nil {
		return err
	}
	tc := cfg.Tasks
	tc.Issuer, tc.Certificates, tc.Nginx, tc.Reloader = c.ACME, c.ACME.Store(), c.Nginx, c.Reloader
	return c.buildTasks(cfg, tc)
}

// buildTasks makes the tasks over tc's mode-specific parts and the parts
// both modes share, with cfg's wrappers around the Issuer and Reloader.
func (c *Components) buildTasks(cfg Config, tc tasks.Config) error {
	tc.Domains, tc.DNS = c.DB, c.DNS
	tc.Names, tc.Logger, tc.Metrics = cfg.Names, cfg.Logger, c.Registry
	if cfg.WrapIssuer != nil {
		tc.Issuer = cfg.WrapIssuer(tc.Issuer)
	}
	if cfg.WrapReloader != nil {
		tc.Reloader = cfg.WrapReloader(tc.Reloader)
	}
	var err error
	c.Tasks, err = tasks.New(tc)
	return err
}

// ServeMux is the worker's handlers: the built-in control tasks and every
// task of the contract.
func (c *Components) ServeMux() *worker.ServeMux {
	mux := worker.NewServeMux()
	worker.RegisterBuiltins(mux)
	c.Tasks.Register(mux)
	return mux
}

// Close closes the store and the database pool.
func (c *Components) Close() {
	if c.Store != nil {
		c.Store.Close()
	}
	if c.DB != nil {
		c.DB.Close()
	}
}
