package main

import (
	"cmp"
	"context"
	"fmt"
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

// components are the parts a subcommand runs, built from Settings.
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

// acmeConfig, nginxConfig etc. turn Settings into each component's Config.
func acmeConfig(a *app) (acme.Config, error) {
	s := a.settings
	kt, err := acme.ParseKeyType(s.ACMEKeyType)
	if err != nil {
		return acme.Config{}, &ConfigError{Name: EnvACMEKeyType, Value: s.ACMEKeyType, Expect: err.Error()}
	}
	return acme.Config{
		DirectoryURL: s.ACMEDirectoryURL,
		Email:        s.ACMEEmail,
		CABundle:     s.ACMECABundle,
		KeyType:      kt,
		Profile:      s.ACMEProfile,
		Webroot:      s.ACMEWebroot,
		Dir:          s.LetsEncryptDir,
		Logger:       a.log,
	}, nil
}

func nginxConfig(a *app) nginxconf.Config {
	s := a.settings
	return nginxconf.Config{
		ConfPath:       s.NginxConfPath,
		Binary:         s.NginxBinary,
		MainConf:       s.NginxMainConf,
		Prefix:         s.NginxPrefix,
		Upstream:       s.NginxUpstream,
		HTTPSPort:      s.NginxHTTPSPort,
		HTTPPort:       s.NginxHTTPPort,
		CertMode:       nginxconf.CertMode(s.NginxCertMode),
		DefaultCert:    s.NginxDefaultCert,
		DefaultKey:     s.NginxDefaultKey,
		ACMEWebroot:    s.ACMEWebroot,
		LetsEncryptDir: s.LetsEncryptDir,
		HashMode:       nginxconf.HashMode(s.NginxNamesHash),
		ReloadMethod:   nginxconf.ReloadMethod(s.NginxReload),
		Timeout:        s.NginxTimeout,
		Logger:         a.log,
	}
}

// build makes every component; the database pool opens lazily, so a
// database that is down fails tasks (which retry), not the start.
func build(ctx context.Context, a *app) (*components, error) {
	s := a.settings
	c := &components{names: domain.Policy{CNAMETarget: s.CNAMETarget, ReservedZones: s.ReservedZones,
		AllowPrivateSuffixes: s.AllowPrivateSuffixes}, registry: prometheus.NewRegistry()}
	c.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := (domain.Policy{CNAMETarget: s.CNAMETarget}).Validate(); err != nil {
		return nil, &ConfigError{Name: EnvCNAMETarget, Value: s.CNAMETarget, Expect: err.Error()}
	}
	if err := (domain.Policy{ReservedZones: s.ReservedZones}).Validate(); err != nil {
		return nil, &ConfigError{Name: EnvReservedZones, Value: strings.Join(s.ReservedZones, ","), Expect: "comma-separated domain names: " + err.Error()}
	}
	if err := (domain.Policy{AllowPrivateSuffixes: s.AllowPrivateSuffixes}).Validate(); err != nil {
		return nil, &ConfigError{Name: EnvAllowPrivateSuffixes, Value: strings.Join(s.AllowPrivateSuffixes, ","), Expect: "comma-separated suffixes such as test: " + err.Error()}
	}
	var err error
	c.db, err = domaindb.New(ctx, domaindb.Config{URL: s.DBURL, Names: c.names, Logger: a.log})
	if err != nil {
		return nil, err
	}
	c.dns, err = dnscheck.New(dnscheck.Config{Servers: s.DNSServers, Target: s.CNAMETarget, CheckTimeout: s.DNSTimeout,
		Ownership: dnscheck.Ownership(s.Ownership), VerifySecret: s.VerifySecret, TXTLabel: s.TXTLabel, Logger: a.log})
	if err != nil {
		c.close()
		return nil, &ConfigError{Name: EnvDNSServers, Value: fmt.Sprint(s.DNSServers), Expect: err.Error()}
	}
	acfg, err := acmeConfig(a)
	if err != nil {
		c.close()
		return nil, err
	}
	acme.SetLegoLogger(a.log)
	if s.Store == "postgres" {
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
	mode, err := podreload.ParseMode(s.ReloadMode)
	if err != nil {
		c.close()
		return nil, &ConfigError{Name: EnvReloadMode, Value: s.ReloadMode, Expect: err.Error()}
	}
	c.reloader, err = podreload.New(podreload.Config{
		Mode: mode, Local: local, DeploymentName: s.DeploymentName, Namespace: s.PodNamespace,
		PodName: s.PodName, Container: s.NginxContainer, Kubeconfig: s.Kubeconfig,
		Logger: a.log,
	})
	if err != nil {
		c.close()
		return nil, err
	}
	c.tasks, err = tasks.New(tasks.Config{
		Domains: c.db, DNS: c.dns, Issuer: c.acme, Certificates: c.acme.Store(),
		Nginx: c.nginx, Reloader: c.reloader, Names: c.names, Logger: a.log, Metrics: c.registry,
		RetryBase: s.RetryBase, RetryMax: s.RetryMax,
	})
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// workerConfig is the Celery worker's Config.
func workerConfig(a *app) worker.Config {
	s := a.settings
	return worker.Config{
		BrokerURL:        s.BrokerURL,
		ResultBackendURL: s.ResultBackendURL,
		DatabaseURL:      s.DBURL,
		Queue:            s.Queue,
		// CELERY_BROKER_TRANSPORT_OPTIONS and CERTMGR_MAX_MESSAGE_BYTES (0 there: no limit).
		BrokerTransportOptions:        s.BrokerOptions,
		ResultBackendTransportOptions: s.BackendOptions,
		MaxMessageBytes:               cmp.Or(s.MaxMessageBytes, -1),
		VisibilityTimeout:             s.VisibilityTimeout,
		Concurrency:                   s.Concurrency,
		// Issue tasks take seconds (an ACME order); a replica holding many
		// waiting messages would starve its siblings. Celery's default is 4×.
		Prefetch:      s.Concurrency,
		ResultExpires: s.ResultExpires,
		ShutdownGrace: s.ShutdownGrace,
		// Transient failures back off from CERTMGR_RETRY_BASE (10 s) to
		// CERTMGR_RETRY_MAX (10 min): with the defaults ten retries cover
		// about an hour of a database, DNS or CA outage.
		MaxRetries: 10,
		// Celery has no default time limit; a task stuck on a peer that
		// accepts connections and never answers would hold its lock forever.
		DefaultTimeLimit: s.TaskTimeLimit,
		Logger:           a.log,
	}
}
