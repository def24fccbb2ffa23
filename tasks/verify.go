package tasks

import (
	"context"
	"errors"
	"fmt"

	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/worker"
)

func (s *Service) verifyTask(ctx context.Context, t *worker.Task) error {
	ref, err := s.parseRef(t)
	if err != nil {
		return s.taskError(t, classify("", err), err)
	}
	v, err := s.verify(ctx, ref)
	if err != nil {
		return s.taskError(t, classify(ref.Name, err), err)
	}
	t.SetResult(v)
	return nil
}

// VerifyDNS checks one domain's DNS and records the outcome on its row, as
// `certmgr verify-dns` does. A domain that does not point at the platform is
// a result with DNSOK false, not an error.
func (s *Service) VerifyDNS(ctx context.Context, name string) (VerifyResult, error) {
	d, err := s.cfg.Names.Parse(name)
	if err != nil {
		return VerifyResult{Domain: name}, err
	}
	return s.verify(ctx, domainRef{Name: d})
}

func (s *Service) verify(ctx context.Context, ref domainRef) (VerifyResult, error) {
	row, err := s.load(ctx, ref)
	if err != nil {
		return VerifyResult{Domain: ref.String()}, err
	}
	s.logFor(ctx, row.Domain) // the task's lines name the domain from here on
	// Under the domain's lock, as an issue runs: what a running issue
	// writes on the row is read, not overwritten with an older view.
	unlock, err := s.cfg.Domains.Lock(ctx, row.Domain)
	if err != nil {
		return VerifyResult{Domain: string(row.Domain), Status: string(row.Status)}, fmt.Errorf("lock %s: %w", row.Domain, err)
	}
	defer unlock()
	if row, err = s.cfg.Domains.Get(ctx, row.ID); err != nil {
		return VerifyResult{Domain: ref.String()}, err
	}
	v, err := s.checkDNS(ctx, row)
	if errors.As(err, new(*dnscheck.NotVerifiedError)) {
		return v, nil
	}
	return v, err
}

// checkDNS runs the DNS check of row (dnscheck only looks) and records its
// outcome:
//   - passed: dns_verified (an ssl_issued row stays so), last_error cleared
//     (not on an issued row whose renewal is due: what its last attempt said
//     still holds until a renewal succeeds); nil error.
//   - the tenant must act: recordFailure marks the row failed with the detail
//     (a row whose certificate is live stays ssl_issued); the error is a
//     *dnscheck.NotVerifiedError.
//   - DNS did not answer: recordFailure sets last_error only, the status is
//     kept; the error is the *dnscheck.TransientError, so the task retries.
func (s *Service) checkDNS(ctx context.Context, row domaindb.CustomDomain) (VerifyResult, error) {
	v := VerifyResult{Domain: string(row.Domain), Status: string(row.Status)}
	res, err := s.cfg.DNS.CheckOwner(ctx, row.Domain, row.Owner())
	var te *dnscheck.TransientError
	switch {
	case errors.As(err, &te):
		v.Detail = te.Detail()
		v.Status = string(s.recordFailure(ctx, row, err))
		return v, err
	case err != nil:
		return v, fmt.Errorf("check dns of %s: %w", row.Domain, err)
	}
	v.Detail, v.DNSOK = res.Detail, res.OK
	if err := res.Err(); err != nil {
		v.Status = string(s.recordFailure(ctx, row, err))
		return v, err
	}
	st, err := s.cfg.Domains.MarkDNSVerified(ctx, row.ID, s.cfg.Now(), s.renewalPending(ctx, row))
	if err != nil {
		return v, fmt.Errorf("record dns verified for %s: %w", row.Domain, err)
	}
	v.Status = string(st)
	return v, nil
}

// renewalPending reports whether row is issued, says something went wrong,
// and its certificate is due for renewal: the error is then about that
// renewal (a failed validation, the CA's limit), which a passing DNS check
// does not settle.
func (s *Service) renewalPending(ctx context.Context, row domaindb.CustomDomain) bool {
	if row.Status != domaindb.StatusIssued || row.LastError == "" {
		return false
	}
	l, found, err := s.cfg.Certificates.Find(row.Domain)
	if err != nil || !found {
		return true // no certificate serves it (or the store is unreadable): the error stands
	}
	return s.cfg.Issuer.Check(ctx, l).Due
}
