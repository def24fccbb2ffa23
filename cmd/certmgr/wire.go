package main

import (
	"context"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/tasks"
	"github.com/midsummer/certmgr/worker"
)

// components are the parts a subcommand runs, built from Configs.
type components struct {
	names    domain.Policy
	db       *domaindb.Store
	dns      *dnscheck.Checker
	acme     *acme.Manager
	nginx    *nginxconf.Generator
	reloader *podreload.Reloader
	tasks    *tasks.Service
	registry *prometheus.Registry
	store    *certstore.Store // fleet mode
}

func (c *components) close() {
	if c.store != nil {
		c.store.Close()
	}
	if c.db != nil {
		c.db.Close()
	}
}

// acmeConfig and nginxConfig are the environment's Configs with the
// process's logger.
func acmeConfig(a *app) acme.Config {
	c := a.cfg.ACME
	c.Logger = a.log
	return c
}

func nginxConfig(a *app) nginxconf.Config {
	c := a.cfg.Nginx
	c.Logger = a.log
	return c
}

// build makes every component; the database pool opens lazily, so a
// database that is down fails tasks (which retry), not the start.
func build(ctx context.Context, a *app) (*components, error) {
	cfg := a.cfg
	c := &components{names: cfg.Names, registry: prometheus.NewRegistry()}
	c.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var err error
	dbc := cfg.DB
	dbc.Names, dbc.Logger = c.names, a.log
	if c.db, err = domaindb.New(ctx, dbc); err != nil {
		return nil, err
	}
	dnsc := cfg.DNS
	dnsc.Logger = a.log
	if c.dns, err = dnscheck.New(dnsc); err != nil {
		c.close()
		return nil, &ConfigError{Name: EnvDNSServers, Value: strings.Join(dnsc.Servers, ","), Expect: err.Error()}
	}
	acme.SetLegoLogger(a.log)
	acfg := acmeConfig(a)
	if cfg.StoreKind == storePostgres {
		if err := c.buildFleet(ctx, a, acfg); err != nil {
			c.close()
			return nil, err
		}
		return c, nil
	}
	if c.acme, err = acme.New(acfg); err != nil {
		c.close()
		return nil, err
	}
	ncfg := nginxConfig(a)
	if c.nginx, err = nginxconf.New(ncfg); err != nil {
		c.close()
		return nil, err
	}
	local, err := nginxconf.NewLocalReloader(ncfg)
	if err != nil {
		c.close()
		return nil, err
	}
	rc := cfg.Reload
	rc.Local, rc.Logger = local, a.log
	if c.reloader, err = podreload.New(rc); err != nil {
		c.close()
		return nil, err
	}
	tc := cfg.Tasks
	tc.Domains, tc.DNS, tc.Issuer, tc.Certificates = c.db, c.dns, c.acme, c.acme.Store()
	tc.Nginx, tc.Reloader, tc.Names, tc.Logger, tc.Metrics = c.nginx, c.reloader, c.names, a.log, c.registry
	if c.tasks, err = tasks.New(tc); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// workerConfig is the Celery worker's Config.
func workerConfig(a *app) worker.Config {
	c := a.cfg.Worker
	c.Logger = a.log
	return c
}
