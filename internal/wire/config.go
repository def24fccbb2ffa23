package wire

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/fleet"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/tasks"
)

// Config is what Build assembles the components from: each component's own
// Config, as cmd/certmgr's environment table fills them, and the settings of
// the assembly itself. Build sets what the environment does not reach: the
// logger, the metrics registry, and the parts each Config names (the tasks'
// Domains, DNS, Issuer, …; the DNS checker's and domaindb's name policy).
type Config struct {
	DB     domaindb.Config
	Names  domain.Policy
	DNS    dnscheck.Config
	ACME   acme.Config
	Nginx  nginxconf.Config
	Reload podreload.Config
	Tasks  tasks.Config
	// Store is the postgres store of fleet mode.
	Store certstore.Config

	// StoreKind is the certificate store the tasks run on (CERTMGR_STORE).
	// Default StoreFiles.
	StoreKind StoreKind
	// Waiter is how a fleet-mode task waits for the agents to serve its
	// change: Wait (CERTMGR_AGENT_WAIT) and Alive (CERTMGR_AGENT_ALIVE);
	// Build sets its Store and Log. Defaults: fleet.Waiter's.
	Waiter fleet.Waiter

	// Logger is every component's logger. Default: none.
	Logger zerolog.Logger

	// WrapIssuer and WrapReloader, when set, wrap the Issuer and the
	// Reloader the tasks are given, in either mode: tests count the orders
	// that reach the CA and the reloads that reach nginx with them.
	// Default: none.
	WrapIssuer   func(tasks.Issuer) tasks.Issuer
	WrapReloader func(tasks.Reloader) tasks.Reloader
}

// StoreKind is the certificate store the commands run on (CERTMGR_STORE).
type StoreKind string

const (
	// StoreFiles is the certbot-layout directory LETSENCRYPT_DIR.
	StoreFiles StoreKind = "files"
	// StorePostgres is fleet mode: certmgr's tables in PostgreSQL, served
	// by a certmgr agent beside every nginx.
	StorePostgres StoreKind = "postgres"
)

// ParseStoreKind parses CERTMGR_STORE, in any case.
func ParseStoreKind(s string) (StoreKind, error) {
	switch k := StoreKind(strings.ToLower(s)); k {
	case StoreFiles, StorePostgres:
		return k, nil
	}
	return "", errors.New("files or postgres")
}

// ACMEConfig is c.ACME with c.Logger: the Config acme.New gets.
func (c Config) ACMEConfig() acme.Config {
	a := c.ACME
	a.Logger = c.Logger
	return a
}

// NginxConfig is c.Nginx with c.Logger: the Config nginxconf.New gets.
func (c Config) NginxConfig() nginxconf.Config {
	n := c.Nginx
	n.Logger = c.Logger
	return n
}

// OpenStore opens the postgres store of fleet mode, migrating it and
// checking its key, within a minute. A missing or wrong key is a
// *certstore.KeyError.
func (c Config) OpenStore(ctx context.Context) (*certstore.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s := c.Store
	s.Logger = c.Logger
	return certstore.Open(ctx, s)
}
