package tasks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
)

// publishOptions shape one regeneration.
type publishOptions struct {
	reload   bool        // reload even when no reload is pending (a new certificate version)
	exclude  domain.Name // leave this domain out (its row is being deleted)
	noReload bool        // never reload (the init container: nginx is not running yet)
}

// published is what a regeneration did.
type published struct {
	generated nginxconf.Result
	reloaded  podreload.Result
}

// pods are the per-pod reload outcomes, an empty list (never null in a
// result) when nothing was reloaded.
func (p published) pods() []podreload.PodResult {
	if p.reloaded.Pods == nil {
		return []podreload.PodResult{}
	}
	return p.reloaded.Pods
}

func (p published) serves(d domain.Name) bool { return slices.Contains(p.generated.Served, d) }

func (p published) skipReason(d domain.Name) string {
	for _, s := range p.generated.Skipped {
		if s.Name == d {
			return s.Reason
		}
	}
	return "not in the database's servable domains"
}

// linkRow records on row the certificate of lineage l, which serves its
// domain, when the row does not have it yet (rows migrated from certbot).
func (s *Service) linkRow(ctx context.Context, row domaindb.CustomDomain, l acme.Lineage) {
	if l.Err != nil || l.NotAfter.IsZero() || row.CertExpiresAt.Equal(l.NotAfter) {
		return
	}
	wrote, err := s.cfg.Domains.LinkCertificate(ctx, row.ID, l.NotBefore, l.NotAfter)
	if err != nil {
		s.log.Warn().Err(err).Str("domain", string(row.Domain)).Msg("could not record the certificate on the row")
		return
	}
	if wrote {
		s.log.Info().Str("domain", string(row.Domain)).Str("lineage", string(l.Name)).Time("not_after", l.NotAfter).
			Msg("row linked to its certificate")
	}
}

// pull brings the local copy of the certificate store up to date, when there
// is one (fleet mode).
func (s *Service) pull(ctx context.Context) error {
	if s.cfg.Sync == nil {
		return nil
	}
	if err := s.cfg.Sync.Pull(ctx); err != nil {
		return fmt.Errorf("read the certificate store: %w", err)
	}
	return nil
}

// publish regenerates custom-domains.conf from the database and, when it
// changed (or o.reload), reloads nginx everywhere. Domains the generator left
// out get the reason in their row's last_error.
func (s *Service) publish(ctx context.Context, o publishOptions) (published, error) {
	var p published
	// Workers publish one at a time across the platform, from reading the
	// rows to storing what is served: otherwise one that read the rows
	// before another's change (a removal, a new certificate) could store
	// its older set last, and it would stay until the next publication.
	// The reload (or the wait for fleet agents) runs after the lock.
	unlock, err := s.cfg.Domains.LockName(ctx, s.PublishLock())
	if err != nil {
		return p, fmt.Errorf("wait for another worker's publication: %w", err)
	}
	unlockOnce := sync.OnceFunc(unlock)
	defer unlockOnce()
	rows, bad, err := s.cfg.Domains.ListServable(ctx)
	if err != nil {
		return p, fmt.Errorf("list domains to serve: %w", err)
	}
	for _, b := range bad {
		s.log.Warn().Int64("domain_id", b.ID).Err(b.Err).Msg("row left out of nginx config: unusable domain name")
		if msg := notServedReason(b); b.LastError != msg {
			if werr := s.cfg.Domains.SetLastError(ctx, b.ID, msg); werr != nil {
				s.log.Warn().Err(werr).Int64("domain_id", b.ID).Msg("could not record why the domain is not served")
			}
		}
	}
	lineages, err := s.cfg.Certificates.Serving()
	if err != nil {
		return p, fmt.Errorf("read certificate store: %w", err)
	}
	owners, err := s.cfg.Domains.CertOwners(ctx)
	if err != nil {
		return p, fmt.Errorf("read certificate owners: %w", err)
	}
	byName := make(map[domain.Name]domaindb.CustomDomain, len(rows))
	sites := make([]nginxconf.Domain, 0, len(rows))
	for _, r := range rows {
		if r.Domain == o.exclude {
			continue
		}
		if own, ok := owners[r.Domain]; ok && own.RowID != r.ID {
			// The stored certificate was issued for another row (a tenant
			// who deleted the name): this row gets it only after passing
			// the check itself, in an issue task.
			if r.LastError != notOwnerReason {
				if werr := s.cfg.Domains.SetLastError(ctx, r.ID, notOwnerReason); werr != nil {
					s.log.Warn().Err(werr).Str("domain", string(r.Domain)).Msg("could not record why the domain is not served")
				}
			}
			continue
		}
		byName[r.Domain] = r
		// A domain without a lineage is still passed on: the generator leaves
		// it out and says why, and the row gets that reason.
		sites = append(sites, nginxconf.Domain{Name: r.Domain, Lineage: string(lineages[r.Domain].Name)})
	}
	start := time.Now()
	p.generated, err = s.cfg.Nginx.Regenerate(ctx, sites)
	s.metrics.regenSeconds.Observe(time.Since(start).Seconds())
	if pl := p.generated.Plan; pl.Mode != "" {
		s.metrics.certMode.Reset()
		s.metrics.certMode.WithLabelValues(string(pl.Mode), string(pl.Rule), string(pl.HTTP2)).Set(1)
		s.metrics.certCache.Set(float64(pl.CertCache))
		s.metrics.luaCache.Set(float64(pl.LuaCache))
	}
	for _, sk := range p.generated.Skipped {
		if r, ok := byName[sk.Name]; ok {
			if sk.Kind == nginxconf.SkipExpired && r.LastError != "" {
				// An expired certificate whose row already says why (a
				// failed renewal's cause, in the tenant's words) keeps that:
				// "expired" alone would hide what to fix.
				continue
			}
			if werr := s.cfg.Domains.SetLastError(ctx, r.ID, tenantSkipReason(sk)); werr != nil {
				s.log.Warn().Err(werr).Str("domain", string(sk.Name)).Msg("could not record why the domain is not served")
			}
		}
	}
	if err != nil {
		s.metrics.regenerations.WithLabelValues("rejected").Inc()
		return p, err
	}
	for _, d := range p.generated.Served {
		if r, ok := byName[d]; ok {
			s.linkRow(ctx, r, lineages[d])
		}
	}
	unlockOnce()
	result := "unchanged"
	if p.generated.Changed {
		result = "changed"
	}
	s.metrics.regenerations.WithLabelValues(result).Inc()
	if o.noReload || !(p.generated.ReloadPending || o.reload) {
		return p, nil
	}
	p.reloaded, err = s.cfg.Reloader.Reload(ctx)
	for _, pod := range p.reloaded.Pods {
		s.metrics.reloads.WithLabelValues(string(pod.Outcome)).Inc()
	}
	if err != nil {
		// The marker stays: the next task reloads again.
		return p, fmt.Errorf("reload nginx: %w", err)
	}
	if err := s.cfg.Nginx.Reloaded(); err != nil {
		s.log.Warn().Err(err).Msg("nginx reloaded; the next regeneration will reload again")
	}
	return p, nil
}

// PublishLock is the advisory lock a publication holds from reading the
// rows to storing the configuration: "nginx-publish/" and the CNAME target
// (one platform's workers exclude each other, as SweepLock's do).
func (s *Service) PublishLock() string { return "nginx-publish/" + s.cfg.Names.CNAMETarget }

// notServedReason is the last_error of a row the validator refuses, in words for
// the tenant: the name's reason when the name is refused, else a row the
// platform has to repair.
func notServedReason(b *domaindb.BadRowError) string {
	var rej *domain.RejectedError
	if errors.As(b.Err, &rej) {
		return fmt.Sprintf("This domain is not served: %s.", rej.Reason)
	}
	return "This domain is not served: its record is inconsistent; the platform team has to repair it."
}

// tenantSkipReason says why the generator left a domain out, in words for the
// tenant: sk.Reason names files of the certificate store, for operators (the
// regen result and logs carry it).
func tenantSkipReason(sk nginxconf.Skipped) string {
	switch sk.Kind {
	case nginxconf.SkipMissing:
		return "This domain is not served yet: its certificate has not been issued."
	case nginxconf.SkipExpired:
		return "This domain is not served: its " + sk.Reason + "."
	case nginxconf.SkipNotCovered:
		return "This domain is not served: its certificate does not cover the name and must be issued again."
	case nginxconf.SkipInvalidName:
		return "This domain is not served: the name is not valid."
	}
	return "This domain is not served: its certificate files are damaged and must be issued again."
}

// notOwnerReason is the last_error of a row whose name's certificate was
// issued for another row.
const notOwnerReason = "This domain is not served yet: its DNS must be verified for this account; issue SSL again."

// sharedPublish folds the publications of issue tasks that finish close
// together into one regeneration and one reload per pod (nginxconf.Coalesce:
// a task arriving while one runs waits for the next, which covers its
// change), and spaces them at least ReloadMinInterval apart: tasks arriving
// during the wait join the same round. Every task gets the outcome of the
// round that covered it (or of a later one, which covers it too).
type sharedPublish struct {
	s        *Service
	coalesce *nginxconf.Coalescer

	mu      sync.Mutex
	lastRun time.Time
	last    published
}

func newSharedPublish(s *Service) *sharedPublish {
	sp := &sharedPublish{s: s}
	sp.coalesce = nginxconf.Coalesce(sp.round)
	return sp
}

// sharedPublishTimeout bounds one shared round: it runs detached from the
// task that started it, since the others share it.
const sharedPublishTimeout = 5 * time.Minute

func (sp *sharedPublish) round(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, sharedPublishTimeout)
	defer cancel()
	sp.mu.Lock()
	wait := time.Until(sp.lastRun.Add(sp.s.cfg.ReloadMinInterval))
	sp.mu.Unlock()
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	p, err := sp.s.publish(ctx, publishOptions{reload: true})
	sp.mu.Lock()
	sp.lastRun, sp.last = time.Now(), p
	sp.mu.Unlock()
	sp.s.metrics.sharedPublishes.Inc()
	return err
}

func (sp *sharedPublish) publish(ctx context.Context) (published, error) {
	err := sp.coalesce.Reload(ctx)
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.last, err
}
