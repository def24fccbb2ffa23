package fleet

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
)

// Issuer is acme.Manager whose new certificates are pushed to the store.
type Issuer struct {
	*acme.Manager
	Mirror *Mirror
}

// Issue orders a certificate for d (acme.Manager.Issue) and stores it.
func (i Issuer) Issue(ctx context.Context, d domain.Name) (acme.Lineage, error) {
	l, err := i.Manager.Issue(ctx, d)
	if err != nil {
		return l, err
	}
	return l, i.Mirror.Push(ctx, string(l.Name))
}

// Renew renews lineage n (acme.Manager.Renew) and stores it.
func (i Issuer) Renew(ctx context.Context, n acme.LineageName) (acme.Lineage, error) {
	l, err := i.Manager.Renew(ctx, n)
	if err != nil {
		return l, err
	}
	return l, i.Mirror.Push(ctx, string(l.Name))
}

// Certificates is the mirror's acme.Store; Remove deletes from the store too.
type Certificates struct {
	*acme.Store
	DB Store
	// Mirror, when set, forgets the lineage's unpushed certificates on
	// Remove, so that no later Pull pushes them back.
	Mirror *Mirror
	// Timeout bounds the store call of Remove, whose signature has no
	// context. Default 30s.
	Timeout time.Duration
}

// Remove deletes lineage n from the certificate store, then from the mirror.
func (c Certificates) Remove(n acme.LineageName) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmp.Or(c.Timeout, 30*time.Second))
	defer cancel()
	if err := c.DB.DeleteLineage(ctx, string(n)); err != nil {
		return err
	}
	if c.Mirror != nil {
		if err := c.Mirror.Forget(string(n)); err != nil {
			return err
		}
	}
	return c.Store.Remove(n)
}

// Challenges solves HTTP-01 through the store: every agent answers it.
type Challenges struct{ Store Store }

var _ acme.ChallengeSolver = Challenges{}

// Present records the key authorization.
func (c Challenges) Present(ctx context.Context, domain, token, keyAuth string) error {
	return c.Store.PutChallenge(ctx, domain, token, keyAuth)
}

// CleanUp removes it.
func (c Challenges) CleanUp(ctx context.Context, _, token, _ string) error {
	return c.Store.DeleteChallenge(ctx, token)
}

// Publisher writes the served set where files mode writes
// custom-domains.conf.
type Publisher struct {
	store  Store
	mirror *Mirror
	vetter *nginxconf.Vetter
	log    zerolog.Logger
}

// NewPublisher vets with cfg's clock against the mirror's directory.
func NewPublisher(store Store, mirror *Mirror, cfg nginxconf.Config, log zerolog.Logger) *Publisher {
	cfg.LetsEncryptDir = mirror.Dir()
	return &Publisher{store: store, mirror: mirror, vetter: nginxconf.NewVetter(cfg),
		log: log.With().Str("component", "fleet").Logger()}
}

// Regenerate makes the served set ds minus the domains whose certificates
// fail the generator's checks (returned as Skipped, as the generator does).
// Changed and ReloadPending say whether the set changed.
func (p *Publisher) Regenerate(ctx context.Context, ds []nginxconf.Domain) (nginxconf.Result, error) {
	if err := p.mirror.Pull(ctx); err != nil {
		return nginxconf.Result{}, err
	}
	sites, skipped := p.vetter.Vet(ds)
	res := nginxconf.Result{Skipped: skipped}
	served := make([]certstore.Served, 0, len(sites))
	for _, s := range sites {
		l := cmp.Or(s.Lineage, string(s.Name))
		served = append(served, certstore.Served{Domain: string(s.Name), Lineage: l})
		res.Served = append(res.Served, s.Name)
	}
	changed, version, err := p.store.SetServed(ctx, served)
	if err != nil {
		return res, err
	}
	p.log.Debug().Bool("changed", changed).Int64("version", version).Int("domains", len(served)).Msg("served set published")
	res.Changed, res.ReloadPending = changed, changed
	return res, nil
}

// Reloaded does nothing: agents reload themselves.
func (p *Publisher) Reloaded() error { return nil }

// Waiter waits for the agents where files mode reloads pods.
type Waiter struct {
	Store Store
	// Wait is how long Reload waits for every agent (CERTMGR_AGENT_WAIT).
	// Default 10s.
	Wait time.Duration
	// Alive is how recent a heartbeat must be for its pod to count. Default
	// 30s (agents beat every 5s).
	Alive time.Duration
	// Poll is the heartbeat polling period. Default 50ms.
	Poll time.Duration
	Log  zerolog.Logger
}

// Reload waits until every live agent has applied the store's current
// version, or Wait passes, and says per pod which: reloaded (serves it) or
// timed_out (with the version it serves). It fails only when the store
// cannot be read: a slow pod is reported, not retried.
func (w Waiter) Reload(ctx context.Context) (podreload.Result, error) {
	wait, alive, poll := cmp.Or(w.Wait, 10*time.Second), cmp.Or(w.Alive, 30*time.Second), cmp.Or(w.Poll, 50*time.Millisecond)
	start := time.Now()
	target, err := w.Store.StoreVersion(ctx)
	if err != nil {
		return podreload.Result{}, fmt.Errorf("wait for agents: %w", err)
	}
	reached := map[string]time.Duration{}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var agents []certstore.Agent
	for {
		agents, err = w.Store.Agents(ctx, alive)
		if err != nil {
			return podreload.Result{}, fmt.Errorf("wait for agents: %w", err)
		}
		all := true
		for _, a := range agents {
			if a.AppliedVersion >= target {
				if _, ok := reached[a.Pod]; !ok {
					reached[a.Pod] = time.Since(start)
				}
			} else {
				all = false
			}
		}
		if all || time.Since(start) >= wait {
			break
		}
		select {
		case <-ctx.Done():
			return podreload.Result{}, fmt.Errorf("wait for agents: %w", ctx.Err())
		case <-tick.C:
		}
	}
	res := podreload.Result{Pods: []podreload.PodResult{}}
	for _, a := range agents {
		pr := podreload.PodResult{Pod: a.Pod, Attempts: 1}
		if d, ok := reached[a.Pod]; ok {
			pr.Outcome, pr.Duration = podreload.OutcomeReloaded, d
		} else {
			pr.Outcome, pr.Duration = podreload.OutcomeTimedOut, time.Since(start)
			pr.Detail = fmt.Sprintf("serves store version %d, not yet %d, after %s", a.AppliedVersion, target, wait)
			if a.Detail != "" {
				pr.Detail += ": " + a.Detail
			}
		}
		res.Pods = append(res.Pods, pr)
	}
	if len(agents) == 0 {
		w.Log.Warn().Msg("no certmgr agent has sent a heartbeat recently: no pod serves the change yet")
	}
	return res, nil
}
