package agent

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/nginxconf"
)

// Store is what the agent reads and writes in the certificate store
// (*certstore.Store).
type Store interface {
	Snapshot(ctx context.Context) (certstore.Snapshot, error)
	Lineages(ctx context.Context, f certstore.LineageFilter) ([]certstore.Lineage, error)
	Heartbeat(ctx context.Context, a certstore.Agent) error
	RemoveAgent(ctx context.Context, pod string) error
	KeyAuth(ctx context.Context, token string) (string, error)
	// ConnConfig is for the LISTEN connection.
	ConnConfig() *pgx.ConnConfig
}

// Nginx renders, proves and swaps custom-domains.conf (*nginxconf.Generator).
type Nginx interface {
	Regenerate(ctx context.Context, ds []nginxconf.Domain) (nginxconf.Result, error)
	Reloaded() error
}

// LocalReloader reloads this pod's nginx (*nginxconf.LocalReloader).
type LocalReloader interface {
	Reload(ctx context.Context) error
}

var (
	_ Store         = (*certstore.Store)(nil)
	_ Nginx         = (*nginxconf.Generator)(nil)
	_ LocalReloader = (*nginxconf.LocalReloader)(nil)
)

// Config configures an Agent. Store, Nginx, Local, Dir and Pod are
// required.
type Config struct {
	Store Store
	Nginx Nginx
	Local LocalReloader
	// Dir is the pod-local certbot-layout directory nginx reads
	// (LETSENCRYPT_DIR); it must be the Nginx generator's LetsEncryptDir.
	Dir string
	// Pod names this agent's heartbeat row (POD_NAME, else the hostname).
	Pod string
	// Resumed says that this pod's nginx already serves a configuration an
	// earlier run of the agent put live (the agent restarted, the pod did
	// not; see Resumes): /readyz answers ok before the first sync of this
	// run, saying so, and the pod stays in the Service while the store is
	// unreachable. Heartbeats still wait for that sync. Default false.
	Resumed bool
	// Resync is the period of the full reconcile (CERTMGR_AGENT_RESYNC).
	// Default 5m.
	Resync time.Duration
	// SyncTimeout bounds one sync, from the store snapshot to the reload
	// (CERTMGR_AGENT_SYNC_TIMEOUT): a sync still waiting on the store then
	// (a silent network partition) fails, is reported and retried, instead
	// of holding up every later one. Default 1m.
	SyncTimeout time.Duration
	// ListenPing is how long the LISTEN connection waits for a notification
	// before it pings the store, and how long it waits for the answer; with
	// none it reconnects (and resyncs). Default 30s.
	ListenPing time.Duration
	// HeartbeatEvery is how often the heartbeat row is refreshed while
	// nothing changes. Default 5s.
	HeartbeatEvery time.Duration
	// RetryMin and RetryMax bound the wait before a failed sync or a lost
	// LISTEN connection is retried (doubling). Defaults 250ms and 10s.
	RetryMin, RetryMax time.Duration
	// ReloadTimeout bounds the wait for nginx's new workers after a reload
	// (see PIDFiler). Default 30s.
	ReloadTimeout time.Duration
	// FetchBatch is how many lineages one query reads. Default 500.
	FetchBatch int
	// Logger receives the agent's logs (component=agent). Default: none.
	Logger zerolog.Logger
	// Metrics registers the agent's gauges. Default: not registered.
	Metrics prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	c.Resync = cmp.Or(c.Resync, 5*time.Minute)
	c.SyncTimeout = cmp.Or(c.SyncTimeout, time.Minute)
	c.ListenPing = cmp.Or(c.ListenPing, 30*time.Second)
	c.HeartbeatEvery = cmp.Or(c.HeartbeatEvery, 5*time.Second)
	c.RetryMin = cmp.Or(c.RetryMin, 250*time.Millisecond)
	c.RetryMax = cmp.Or(c.RetryMax, 10*time.Second)
	c.FetchBatch = cmp.Or(c.FetchBatch, 500)
	c.ReloadTimeout = cmp.Or(c.ReloadTimeout, 30*time.Second)
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("agent config: Store is required")
	case c.Nginx == nil:
		return errors.New("agent config: Nginx is required")
	case c.Local == nil:
		return errors.New("agent config: Local is required")
	case c.Dir == "":
		return errors.New("agent config: Dir (LETSENCRYPT_DIR) is required")
	case c.Pod == "":
		return errors.New("agent config: Pod (POD_NAME) is required")
	case c.Resync < 0 || c.SyncTimeout < 0 || c.ListenPing < 0 || c.HeartbeatEvery < 0 || c.RetryMin < 0 || c.RetryMax < c.RetryMin:
		return errors.New("agent config: negative or inverted durations")
	}
	return nil
}
