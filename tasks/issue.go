package tasks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/worker"
)

func (s *Service) issueTask(ctx context.Context, t *worker.Task) error {
	ref, err := s.parseRef(t)
	if err != nil {
		return s.taskError(t, classify("", err), err)
	}
	force, err := boolKwarg(t, "force")
	if err != nil {
		return s.taskError(t, classify("", err), err)
	}
	res, err := s.issue(ctx, ref, force)
	if err != nil {
		c := classify(ref.Name, err)
		if c.transient && c.final != "" && s.lastAttempt(ctx, t) {
			s.giveUp(ctx, ref, c)
		}
		return s.taskError(t, c, err)
	}
	t.SetResult(res)
	return nil
}

// giveUp marks the row of an issue that fails for good after transient
// failures: the row said the failure would be retried, and nothing will
// retry it now (a row with a live certificate stays ssl_issued).
func (s *Service) giveUp(ctx context.Context, ref domainRef, c classified) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	row, err := s.load(wctx, ref)
	if err == nil {
		_, err = s.cfg.Domains.MarkFailed(wctx, row.ID, c.final)
	}
	if err != nil {
		s.logFor(ctx, ref.Name).Warn().Err(err).Msg("could not record on the row that the issue stopped retrying")
	}
}

// Issue runs the whole pipeline for one domain by name, as `certmgr issue`
// does: the same steps, row updates and reloads as the Celery task.
func (s *Service) Issue(ctx context.Context, name string, force bool) (IssueResult, error) {
	d, err := s.cfg.Names.Parse(name)
	if err != nil {
		return IssueResult{Domain: name}, err
	}
	return s.issue(ctx, domainRef{Name: d}, force)
}

// issue is the pipeline: load → lock → re-read → DNS → ACME (unless a valid
// certificate exists and force is false) → row → nginx → reload. A reload an
// earlier attempt did not finish (crash, failed pods) is still pending in
// nginxconf and is done now.
func (s *Service) issue(ctx context.Context, ref domainRef, force bool) (IssueResult, error) {
	res := IssueResult{Domain: ref.String(), Reloaded: []podreload.PodResult{}}
	row, err := s.load(ctx, ref)
	if err != nil {
		return res, err
	}
	res.Domain, res.Status = string(row.Domain), string(row.Status)
	log := s.logFor(ctx, row.Domain).With().Int64("domain_id", row.ID).Logger()

	unlock, err := s.cfg.Domains.Lock(ctx, row.Domain)
	if err != nil {
		return res, fmt.Errorf("lock %s: %w", row.Domain, err)
	}
	defer unlock()
	// Another worker may have finished this domain while we waited.
	if row, err = s.cfg.Domains.Get(ctx, row.ID); err != nil {
		return res, err
	}
	if err := s.pull(ctx); err != nil {
		return res, err
	}

	if _, err := s.checkDNS(ctx, row); err != nil {
		return res, err // checkDNS recorded it on the row
	}

	lineage, found, err := s.cfg.Certificates.Find(row.Domain)
	if err != nil {
		return res, fmt.Errorf("read certificate store for %s: %w", row.Domain, err)
	}
	if found {
		// A lineage with several names is renewed under the lock of its
		// first name, whichever name asked (as the sweep does).
		if names := lineage.Names(); len(names) > 0 && names[0] != row.Domain {
			unlockLineage, err := s.cfg.Domains.Lock(ctx, names[0])
			if err != nil {
				return res, fmt.Errorf("lock %s: %w", names[0], err)
			}
			defer unlockLineage()
			// The sweep renews under that lock: what was read before it
			// may be the certificate it just replaced.
			if lineage, found, err = s.cfg.Certificates.Find(row.Domain); err != nil {
				return res, fmt.Errorf("read certificate store for %s: %w", row.Domain, err)
			}
		}
	}
	reuse := false
	if found && !force {
		dec := s.cfg.Issuer.Check(ctx, lineage)
		reuse = !dec.Due
		log.Debug().Bool("due", dec.Due).Str("reason", dec.Reason).Msg("existing certificate checked")
	}
	if !reuse {
		// A name backing off after failed validations is refused before
		// any budget counts an order: the CA would not be asked.
		if err := s.cfg.Issuer.Backoff(row.Domain); err != nil {
			s.recordFailure(ctx, row, err)
			return res, err
		}
		// A lineage with other names is ordered again for those of them
		// that still have a row and point here, as the sweep does.
		var others []domaindb.CustomDomain
		var left []leftRow
		drop := false
		if found && len(lineage.Names()) > 1 {
			rows, err := s.otherRows(ctx, lineage, row.Domain)
			if err != nil {
				return res, err
			}
			if others, left, err = s.stillServed(ctx, lineage, rows); err != nil {
				return res, err
			}
			drop = len(others)+1 < len(lineage.Names())
		}
		// The budgets are checked (and the order counted) before the CA
		// sees anything: one tenant cannot spend the shared account's limits.
		orderID, err := s.reserveOrder(ctx, domaindb.OrderRequest{Name: row.Domain, Owner: row.Owner(), Forced: force && found})
		if err != nil {
			s.recordFailure(ctx, row, err)
			return res, err
		}
		start := time.Now()
		if drop {
			lineage, err = s.renew(ctx, lineage, append([]domaindb.CustomDomain{row}, others...))
		} else {
			lineage, err = s.cfg.Issuer.Issue(ctx, row.Domain)
		}
		s.finishOrder(ctx, orderID, err)
		if err != nil {
			s.recordFailure(ctx, row, err)
			return res, err
		}
		if err := s.dropped(ctx, lineage, left); err != nil {
			return res, err
		}
		res.Issued = true
		s.metrics.issued.Inc()
		s.metrics.issueSeconds.Observe(time.Since(start).Seconds())
		log.Info().Str("lineage", string(lineage.Name)).Time("not_after", lineage.NotAfter).
			Dur("took", time.Since(start)).Msg("certificate issued")
	}
	// This row passed the check just now: the certificate is its own from
	// here on (publish serves a certificate only to the row it records).
	if err := s.cfg.Domains.RecordOwner(ctx, row.Domain, row); err != nil {
		return res, err
	}
	if err := s.cfg.Domains.MarkIssued(ctx, row.ID, lineage.NotBefore, lineage.NotAfter); err != nil {
		return res, fmt.Errorf("record certificate of %s: %w", row.Domain, err)
	}
	res.Status, res.NotAfter = string(domaindb.StatusIssued), lineage.NotAfter.UTC().Format(time.RFC3339)
	s.setExpiry(lineage)

	var pub published
	if res.Issued {
		// A new certificate: share the regeneration and reload with the
		// issuances finishing about now.
		pub, err = s.shared.publish(ctx)
	} else {
		pub, err = s.publish(ctx, publishOptions{})
	}
	res.Reloaded = pub.pods()
	if err != nil {
		s.recordFailure(ctx, row, err)
		return res, err
	}
	if !pub.serves(row.Domain) {
		why := pub.skipReason(row.Domain)
		return res, fmt.Errorf("%s was issued but left out of the nginx configuration: %s", row.Domain, why)
	}
	return res, nil
}

// otherRows are the rows of lineage l's names other than except that l
// serves (a name without a row, or served by another lineage, is not one).
func (s *Service) otherRows(ctx context.Context, l acme.Lineage, except domain.Name) ([]domaindb.CustomDomain, error) {
	var rows []domaindb.CustomDomain
	for _, d := range l.Names() {
		if d == except {
			continue
		}
		r, err := s.cfg.Domains.GetByName(ctx, d)
		if errors.Is(err, domaindb.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the row of %s, a name of lineage %s: %w", d, l.Name, err)
		}
		serving, ok, err := s.cfg.Certificates.Find(d)
		if err != nil {
			return nil, fmt.Errorf("read certificate store for %s: %w", d, err)
		}
		if ok && serving.Name == l.Name {
			rows = append(rows, r)
		}
	}
	return rows, nil
}

// load finds the row a task refers to.
func (s *Service) load(ctx context.Context, ref domainRef) (domaindb.CustomDomain, error) {
	if ref.Name != "" {
		return s.cfg.Domains.GetByName(ctx, ref.Name)
	}
	return s.cfg.Domains.Get(ctx, ref.ID)
}

// recordFailure is the one place a failure reaches the row, in words for
// the tenant (DNS, ACME, nginx alike): a permanent one marks the row failed
// (a live certificate keeps it ssl_issued), a transient one only sets
// last_error. It returns the row's status afterwards.
func (s *Service) recordFailure(ctx context.Context, row domaindb.CustomDomain, err error) domaindb.Status {
	c := classify(row.Domain, err)
	s.metrics.failures.WithLabelValues(c.excType).Inc()
	if c.tenant == "" {
		return row.Status
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	st, werr := row.Status, error(nil)
	if c.transient {
		werr = s.cfg.Domains.SetLastError(wctx, row.ID, c.tenant)
	} else {
		st, werr = s.cfg.Domains.MarkFailed(wctx, row.ID, c.tenant)
	}
	if werr != nil {
		s.logFor(ctx, row.Domain).Warn().Err(werr).Msg("could not record the failure on the row")
		return row.Status
	}
	return st
}

// reserveOrder takes one unit of every budget the order counts against.
func (s *Service) reserveOrder(ctx context.Context, req domaindb.OrderRequest) (int64, error) {
	id, rem, err := s.cfg.Domains.ReserveOrder(ctx, req, s.cfg.Budgets)
	var be *domaindb.BudgetError
	if errors.As(err, &be) {
		s.metrics.budgetRefusals.WithLabelValues(be.Budget).Inc()
		return 0, err
	}
	if err != nil {
		return 0, err
	}
	s.metrics.accountOrdersLeft.Set(float64(rem.AccountOrders))
	return id, nil
}

// finishOrder records how the order ended, for the budgets that count
// certificates and failed validations.
func (s *Service) finishOrder(ctx context.Context, id int64, err error) {
	outcome := domaindb.OrderIssued
	var valid *acme.ValidationError
	switch {
	case errors.As(err, &valid):
		outcome = domaindb.OrderFailedValidation
	case err != nil:
		outcome = domaindb.OrderFailed
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if ferr := s.cfg.Domains.FinishOrder(wctx, id, outcome); ferr != nil {
		s.log.Warn().Err(ferr).Int64("order", id).Msg("could not record the order's outcome")
	}
}
