package tasks

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/worker"
)

// SweepLock is the advisory lock that makes one replica of a platform sweep
// at a time: "renewal-sweep/" and the CNAME target. (Advisory locks are
// database-wide; two platforms, or two tests, sharing a PostgreSQL server
// sweep independently. Per-domain locks still keep any two sweeps from
// renewing one lineage twice.)
func (s *Service) SweepLock() string { return "renewal-sweep/" + s.cfg.Names.CNAMETarget }

func (s *Service) renewTask(ctx context.Context, t *worker.Task) error {
	dry, err := boolKwarg(t, "dry_run")
	if err != nil {
		return s.taskError(t, classify("", err), err)
	}
	res, err := s.Sweep(ctx, dry)
	if err != nil {
		return s.taskError(t, classify("", err), err)
	}
	t.SetResult(res)
	return nil
}

// Sweep renews every certificate that is due, one replica at a time (a
// Postgres advisory lock), each under its domain's lock, then regenerates and
// reloads once. A failing renewal does not stop the others; it is written on
// the domain's row (which stays ssl_issued while its certificate is live).
func (s *Service) Sweep(ctx context.Context, dryRun bool) (RenewResult, error) {
	res := RenewResult{DryRun: dryRun, Renewed: []string{}, Failed: []RenewFailed{}, Deferred: []string{},
		Certificates: []SweepEntry{}, Reloaded: []podreload.PodResult{}, RowsWithoutCertificate: []string{}}
	if !dryRun {
		unlock, ok, err := s.cfg.Domains.TryLock(ctx, s.SweepLock())
		if err != nil {
			return res, fmt.Errorf("take the renewal sweep lock: %w", err)
		}
		if !ok {
			res.Skipped = true
			return res, nil
		}
		defer unlock()
	}
	if err := s.pull(ctx); err != nil {
		return res, err
	}
	statuses, err := s.cfg.Issuer.Statuses(ctx, true)
	if err != nil {
		return res, fmt.Errorf("list certificates: %w", err)
	}
	rows, _, err := s.cfg.Domains.ListAll(ctx)
	if err != nil {
		return res, fmt.Errorf("list domains: %w", err)
	}
	byName := make(map[domain.Name]domaindb.CustomDomain, len(rows))
	for _, r := range rows {
		byName[r.Domain] = r
	}
	serving, err := s.cfg.Certificates.Serving()
	if err != nil {
		return res, fmt.Errorf("read certificate store: %w", err)
	}
	res.Checked = len(statuses)
	res.RowsWithoutCertificate = RowsWithoutCertificate(rows, serving)
	progress := s.sweepProgress(len(statuses), dryRun)
	// Once the account's order budget refuses a renewal, the rest of the
	// sweep orders nothing (every order would be refused too) and leaves
	// the rows alone: no tenant asked for anything.
	var budgetOut *domaindb.BudgetError
	deferred := func(e *SweepEntry, n acme.LineageName) {
		e.Action = "deferred"
		e.Reason += "; deferred: " + budgetOut.Error()
		res.Deferred = append(res.Deferred, string(n))
	}
	for i, st := range statuses {
		progress(i)
		s.setExpiry(st.Lineage)
		e := entryOf(st)
		names := st.Lineage.Names()
		// The rows of this lineage: those of its names it serves (a name in
		// two lineages belongs to the one that serves it).
		var linked []domaindb.CustomDomain
		for _, d := range names {
			if r, ok := byName[d]; ok && serving[d].Name == st.Name {
				linked = append(linked, r)
			}
		}
		if !dryRun {
			for _, r := range linked {
				s.linkRow(ctx, r, st.Lineage)
			}
		}
		switch {
		case len(names) > 0 && len(linked) == 0:
			// Only domains Django still has are renewed: a removed tenant's
			// certificate (kept on disk without purge) is left to expire.
			e.Action = "no row"
			e.Reason += "; not renewed: no custom domain row for " + joinNames(names)
		case !st.Decision.Due:
			e.Action = "kept"
		case len(names) == 0:
			e.Action = "broken"
		case dryRun:
			e.Action = "would renew"
		case budgetOut != nil:
			deferred(&e, st.Name)
		default:
			var left *leftPlatformError
			var budget *domaindb.BudgetError
			if err := s.renewOne(ctx, st.Lineage, names[0], linked); errors.As(err, &left) {
				e.Action = "not renewed"
				e.Reason += "; not renewed: " + left.detail
			} else if errors.As(err, &budget) && budget.Budget == domaindb.BudgetAccount {
				budgetOut = budget
				s.log.Warn().Err(err).Msg("renewal sweep: the account's order budget is used up; the remaining due certificates wait for the next sweep")
				deferred(&e, st.Name)
			} else if err != nil {
				e.Action = "failed"
				res.Failed = append(res.Failed, RenewFailed{Name: string(st.Name), Error: err.Error()})
			} else {
				e.Action = "renewed"
				res.Renewed = append(res.Renewed, string(st.Name))
			}
		}
		res.Certificates = append(res.Certificates, e)
	}
	s.metrics.sweeps.Inc()
	if len(res.Renewed) == 0 {
		return res, nil
	}
	pub, err := s.publish(ctx, publishOptions{reload: true})
	res.Reloaded = pub.pods()
	return res, err
}

// sweepProgress logs the start of a sweep and then, every progressEvery
// lineages or every progressInterval, "N of M" at info level, so a long sweep
// is seen to move. It returns the function the loop calls before lineage i.
func (s *Service) sweepProgress(total int, dryRun bool) func(i int) {
	s.log.Info().Int("lineages", total).Bool("dry_run", dryRun).Msg("renewal sweep started")
	last := time.Now()
	return func(i int) {
		if i == 0 || (i%progressEvery != 0 && time.Since(last) < progressInterval) {
			return
		}
		last = time.Now()
		s.log.Info().Int("done", i).Int("lineages", total).
			Msgf("renewal sweep: %s of %s", thousands(i), thousands(total))
	}
}

// A sweep logs its progress every progressEvery lineages, or every
// progressInterval when lineages are slow (renewals).
const (
	progressEvery    = 500
	progressInterval = 30 * time.Second
)

// thousands writes n with comma separators: 3,300.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// renewOne renews one lineage, with all its names, under the lock of its
// first name (issue takes the same lock for any name of a lineage), after
// checking again that it is still due (another replica or an issue task may
// have renewed it). A broken lineage (files missing or mismatched) is due,
// and renewing repairs it. rows are the rows of the names it serves.
func (s *Service) renewOne(ctx context.Context, l acme.Lineage, primary domain.Name, rows []domaindb.CustomDomain) error {
	unlock, err := s.cfg.Domains.Lock(ctx, primary)
	if err != nil {
		return fmt.Errorf("lock %s: %w", primary, err)
	}
	defer unlock()
	fresh, err := s.cfg.Certificates.Load(l.Name)
	if err != nil {
		return err
	}
	if !s.cfg.Issuer.Check(ctx, fresh).Due {
		return nil
	}
	keep, left, err := s.stillServed(ctx, fresh, rows)
	if err != nil {
		return err
	}
	if len(keep) == 0 {
		var lefts []string
		for _, lr := range left {
			lefts = append(lefts, lr.detail)
		}
		return &leftPlatformError{detail: strings.Join(lefts, " ")}
	}
	failed := func(err error) error {
		var budget *domaindb.BudgetError
		if errors.As(err, &budget) && budget.Budget == domaindb.BudgetAccount {
			// The platform's limit, not the tenant's doing: the sweep
			// defers the renewal and says so in its result and log.
			return err
		}
		for _, r := range keep {
			s.recordFailure(ctx, r, err)
		}
		// The sweep goes on with the other lineages: this is the one line
		// that says this renewal failed, for alerting on errors.
		s.log.Error().Err(err).Str("domain", string(primary)).Strs("domains", l.Domains).Str("lineage", string(l.Name)).
			Str("last_error", classify(primary, err).tenant).Msg("certificate renewal failed")
		return err
	}
	if err := s.cfg.Issuer.Backoff(primary); err != nil {
		return failed(err)
	}
	orderID, err := s.reserveOrder(ctx, domaindb.OrderRequest{Name: primary, Owner: keep[0].Owner(), Renewal: true})
	if err != nil {
		return failed(err)
	}
	renewed, err := s.renew(ctx, fresh, keep)
	s.finishOrder(ctx, orderID, err)
	if err != nil {
		return failed(err)
	}
	s.metrics.renewed.Inc()
	s.setExpiry(renewed)
	s.log.Info().Str("domain", string(primary)).Str("lineage", string(l.Name)).Strs("domains", renewed.Domains).Time("not_after", renewed.NotAfter).Msg("certificate renewed")
	errs := []error{s.dropped(ctx, renewed, left)}
	for _, r := range keep {
		if err := s.cfg.Domains.RecordOwner(ctx, r.Domain, r); err != nil {
			errs = append(errs, err)
		}
		if err := s.cfg.Domains.MarkIssued(ctx, r.ID, renewed.NotBefore, renewed.NotAfter); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stillServed checks, before lineage l is renewed, the rows of its names:
// authorizations may still be cached at the CA, and without this check a
// name that left the platform (its CNAME now points elsewhere) would be
// renewed. It returns the rows that pass (their names are ordered) and those
// that do not, each with the check's words, which are written on the row at
// once (its current certificate still serves it). A name of the lineage
// without a row is not among rows and is not ordered either: certmgr renews
// only the domains Django still has.
func (s *Service) stillServed(ctx context.Context, l acme.Lineage, rows []domaindb.CustomDomain) (keep []domaindb.CustomDomain, left []leftRow, err error) {
	for _, row := range rows {
		check, err := s.cfg.DNS.CheckOwner(ctx, row.Domain, row.Owner())
		if err != nil {
			s.recordFailure(ctx, row, err)
			return nil, nil, fmt.Errorf("re-check dns of %s before renewal: %w", row.Domain, err)
		}
		if check.OK {
			keep = append(keep, row)
			continue
		}
		lr := leftRow{row: row, why: strings.TrimSuffix(check.Detail, ".")}
		detail := fmt.Sprintf("%s. Its certificate is not renewed and stops working on %s.", lr.why, l.NotAfter.UTC().Format("2006-01-02"))
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		werr := s.cfg.Domains.SetLastError(wctx, row.ID, detail)
		cancel()
		if werr != nil {
			return nil, nil, fmt.Errorf("record that %s is not renewed: %w", row.Domain, werr)
		}
		lr.detail = detail
		left = append(left, lr)
	}
	return keep, left, nil
}

// leftRow is a row whose name no longer points at the platform.
type leftRow struct {
	row    domaindb.CustomDomain
	why    string // the DNS check's words
	detail string // what its row says
}

// dropped records on the rows that left the platform that the renewed
// lineage no longer names them: they are not served any more.
func (s *Service) dropped(ctx context.Context, l acme.Lineage, left []leftRow) error {
	var errs []error
	for _, lr := range left {
		if slices.Contains(l.Names(), lr.row.Domain) {
			continue
		}
		msg := fmt.Sprintf("%s. It was left out of the renewed certificate it shared with %s and is no longer served; point it to the platform and issue SSL again.",
			lr.why, joinNames(l.Names()))
		if err := s.cfg.Domains.MarkDropped(ctx, lr.row.ID, msg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// renew orders lineage l again for the names of rows: all its names, or
// (RenewFor) only those, when some have no row or left the platform.
func (s *Service) renew(ctx context.Context, l acme.Lineage, rows []domaindb.CustomDomain) (acme.Lineage, error) {
	all := l.Names()
	var names []domain.Name
	for _, r := range rows {
		if slices.Contains(all, r.Domain) && !slices.Contains(names, r.Domain) {
			names = append(names, r.Domain)
		}
	}
	if len(names) == len(all) {
		return s.cfg.Issuer.Renew(ctx, l.Name)
	}
	var dropped []string
	for _, d := range all {
		if !slices.Contains(names, d) {
			dropped = append(dropped, string(d))
		}
	}
	s.logFor(ctx, names[0]).Info().Str("lineage", string(l.Name)).Strs("dropped", dropped).
		Msg("renewing the lineage without the names that have no row or left the platform")
	return s.cfg.Issuer.RenewFor(ctx, l.Name, names)
}

// RowsWithoutCertificate lists the domains of rows that record a served
// certificate (status ssl_issued, or cert_expires_at set) while no lineage in
// serving names them, sorted. A row whose lineage is broken is not listed:
// the broken lineage is reported itself.
func RowsWithoutCertificate(rows []domaindb.CustomDomain, serving map[domain.Name]acme.Lineage) []string {
	out := []string{}
	for _, r := range rows {
		if r.Status != domaindb.StatusIssued && r.CertExpiresAt.IsZero() {
			continue
		}
		if _, ok := serving[r.Domain]; !ok {
			out = append(out, string(r.Domain))
		}
	}
	slices.Sort(out)
	return out
}

// NeedsOperator says what in a sweep's result an operator must look at: failed
// renewals, broken lineages, lineages without a row, rows without a
// certificate. "" when nothing.
func (r RenewResult) NeedsOperator() string {
	var broken, noRow int
	for _, e := range r.Certificates {
		if e.Source == acme.SourceBroken && e.Action != "renewed" {
			broken++ // a renewal repairs it; until then nginx leaves its names out
		}
		if e.Action == "no row" {
			noRow++
		}
	}
	var parts []string
	add := func(n int, one, many string) {
		switch {
		case n == 1:
			parts = append(parts, "1 "+one)
		case n > 1:
			parts = append(parts, fmt.Sprintf("%d %s", n, many))
		}
	}
	add(len(r.Failed), "renewal failed", "renewals failed")
	add(broken, "broken lineage", "broken lineages")
	add(noRow, "lineage with no custom domain row", "lineages with no custom domain row")
	add(len(r.RowsWithoutCertificate), "row with no certificate ("+strings.Join(r.RowsWithoutCertificate, ", ")+")",
		"rows with no certificate ("+strings.Join(r.RowsWithoutCertificate, ", ")+")")
	return strings.Join(parts, ", ")
}

func joinNames(ds []domain.Name) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = string(d)
	}
	return strings.Join(s, ", ")
}

func entryOf(st acme.Status) SweepEntry {
	e := SweepEntry{Name: string(st.Name), Domains: st.Domains, Due: st.Decision.Due,
		Source: st.Decision.Source, Reason: st.Decision.Reason}
	if e.Domains == nil {
		e.Domains = []string{}
	}
	if !st.NotAfter.IsZero() {
		e.NotAfter = st.NotAfter.UTC().Format(time.RFC3339)
	}
	if !st.Decision.RenewAt.IsZero() {
		e.RenewAt = st.Decision.RenewAt.UTC().Format(time.RFC3339)
	}
	if st.Err != nil {
		e.Reason = strings.TrimSpace(st.Err.Error())
	}
	return e
}

// RunSweeps runs the renewal sweep every SweepEvery plus up to SweepJitter,
// starting after a random part of SweepJitter, until ctx ends. Replicas
// started together spread out; the sweep lock keeps them from overlapping.
func (s *Service) RunSweeps(ctx context.Context) {
	wait := time.Duration(rand.Int64N(int64(s.cfg.SweepJitter) + 1))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		res, err := s.Sweep(ctx, false)
		ev := s.log.Info()
		if err != nil {
			ev = s.log.Error().Err(err)
		}
		ev.Int("checked", res.Checked).Int("renewed", len(res.Renewed)).Int("failed", len(res.Failed)).
			Bool("skipped", res.Skipped).Msg("renewal sweep")
		wait = s.cfg.SweepEvery + time.Duration(rand.Int64N(int64(s.cfg.SweepJitter)+1))
	}
}

// leftPlatformError is a due certificate not renewed because its name no
// longer points at the platform; detail is the row's last_error.
type leftPlatformError struct{ detail string }

func (e *leftPlatformError) Error() string { return e.detail }
