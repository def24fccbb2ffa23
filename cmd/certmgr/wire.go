package main

import (
	"errors"
	"strings"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/internal/wire"
	"github.com/midsummer/certmgr/worker"
)

// build makes every component with package wire, from the environment's
// Configs and the process's logger (which also takes lego's lines). A DNS
// checker without a usable resolver is a configuration error (exit 2).
func build(a *app) (*wire.Components, error) {
	acme.SetLegoLogger(a.log)
	c, err := wire.Build(a.ctx, a.cfg.Config)
	var de *wire.DNSConfigError
	if errors.As(err, &de) {
		return nil, &ConfigError{Name: EnvDNSServers, Value: strings.Join(de.Servers, ","), Expect: de.Err.Error()}
	}
	return c, err
}

// workerConfig is the Celery worker's Config.
func workerConfig(a *app) worker.Config {
	c := a.cfg.Worker
	c.Logger = a.log
	return c
}
