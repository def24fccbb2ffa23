package tasks

import (
	"context"
	"errors"

	"github.com/midsummer/certmgr/dnscheck"
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
func (s *Service) VerifyDNS(ctx context.Context, name string) (dnscheck.Verification, error) {
	d, err := s.cfg.Names.Parse(name)
	if err != nil {
		return dnscheck.Verification{Domain: name}, err
	}
	return s.verify(ctx, domainRef{Name: d})
}

func (s *Service) verify(ctx context.Context, ref domainRef) (dnscheck.Verification, error) {
	row, err := s.load(ctx, ref)
	if err != nil {
		return dnscheck.Verification{Domain: ref.String()}, err
	}
	v, err := s.cfg.DNS.Verify(ctx, s.cfg.Domains, row)
	if errors.As(err, new(*dnscheck.NotVerifiedError)) {
		return v, nil
	}
	return v, err
}
