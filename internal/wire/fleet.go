package wire

import (
	"context"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/fleet"
)

// buildFleet makes fleet mode's components after c.DB and c.DNS: the
// store, its mirror in LETSENCRYPT_DIR, acme on the mirror with HTTP-01
// through the store, and the tasks publishing to the store and waiting for
// the agents instead of rendering and reloading nginx.
func (c *Components) buildFleet(ctx context.Context, cfg Config) error {
	st, err := cfg.OpenStore(ctx)
	if err != nil {
		return err
	}
	c.Store = st
	mirror := fleet.NewMirror(st, cfg.ACME.Dir)
	acfg := cfg.ACMEConfig()
	acfg.HTTP01 = fleet.Challenges{Store: st}
	acfg.Journal = mirror
	if c.ACME, err = acme.New(acfg); err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := mirror.Pull(pctx); err != nil {
		return err
	}
	tc := cfg.Tasks
	tc.Issuer = fleet.Issuer{Manager: c.ACME, Mirror: mirror}
	tc.Certificates = fleet.Certificates{Store: c.ACME.Store(), DB: st, Mirror: mirror}
	tc.Nginx = fleet.NewPublisher(st, mirror, cfg.NginxConfig(), cfg.Logger)
	w := cfg.Waiter
	w.Store, w.Log = st, cfg.Logger
	tc.Reloader = w
	tc.Sync = mirror
	return c.buildTasks(cfg, tc)
}
