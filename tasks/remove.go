package tasks

import (
	"context"
	"errors"
	"fmt"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/worker"
)

func (s *Service) removeTask(ctx context.Context, t *worker.Task) error {
	var raw string
	if len(t.Args) != 1 {
		err := badArgs("%s takes one argument (domain), got %d", t.Name, len(t.Args))
		return s.taskError(t, classify("", err), err)
	}
	if err := t.Arg(0, &raw); err != nil {
		err = badArgs("domain must be a string: %v", err)
		return s.taskError(t, classify("", err), err)
	}
	purge, err := boolKwarg(t, "purge")
	if err != nil {
		return s.taskError(t, classify("", err), err)
	}
	res, err := s.Remove(ctx, raw, purge)
	if err != nil {
		return s.taskError(t, classify("", err), err)
	}
	t.SetResult(res)
	return nil
}

// Remove stops serving a domain whose row Django deleted: its server block is
// dropped and nginx reloaded. Certificate files are kept (a tenant who comes
// back gets the same certificate, after passing the DNS check again) unless
// purge. purge is refused with an *InUseError while a row for the name
// exists, before anything changes.
func (s *Service) Remove(ctx context.Context, raw string, purge bool) (RemoveResult, error) {
	res := RemoveResult{Domain: raw, Reloaded: []podreload.PodResult{}}
	name, err := s.cfg.Names.Parse(raw)
	if err != nil {
		return res, err
	}
	res.Domain = string(name)
	s.logFor(ctx, name) // the task's lines name the domain from here on
	unlock, err := s.cfg.Domains.Lock(ctx, name)
	if err != nil {
		return res, fmt.Errorf("lock %s: %w", name, err)
	}
	defer unlock()
	row, err := s.cfg.Domains.GetByName(ctx, name)
	if err == nil && purge {
		// The certificate serves a live row: deleting it would take the
		// tenant's site down (or, for a domain Django re-added, another owner's).
		return res, &InUseError{Domain: name, ID: row.ID}
	}
	if err == nil {
		s.logFor(ctx, name).Warn().Int64("domain_id", row.ID).
			Msg("remove task for a domain whose row still exists; it is left out of nginx until the next issue")
	} else if !errors.Is(err, domaindb.ErrNotFound) {
		return res, err
	}
	pub, err := s.publish(ctx, publishOptions{exclude: name})
	res.Reloaded = pub.pods()
	if err != nil {
		return res, err
	}
	res.Removed = !pub.serves(name)
	if res.Removed {
		s.metrics.expiry.DeleteLabelValues(string(name))
	}
	if purge {
		if err := s.pull(ctx); err != nil {
			return res, err
		}
		l, found, err := s.cfg.Certificates.Find(name)
		if err != nil {
			return res, fmt.Errorf("find certificate of %s: %w", name, err)
		}
		if found && len(l.Names()) > 1 {
			// The lineage serves other names too: deleting it would take
			// their certificate away.
			s.logFor(ctx, name).Warn().Str("lineage", string(l.Name)).Strs("domains", l.Domains).
				Msg("purge skipped: the certificate also serves other names")
			found = false
		}
		if found {
			if err := s.cfg.Certificates.Remove(l.Name); err != nil {
				return res, fmt.Errorf("purge certificate of %s: %w", name, err)
			}
		}
		res.Purged = found
	}
	return res, nil
}

// InUseError refuses to purge the certificate of a domain that still has a row.
type InUseError struct {
	Domain domain.Name
	ID     int64
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("%s still has custom domain row %d; delete the row before purging its certificate", e.Domain, e.ID)
}
