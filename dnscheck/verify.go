package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
)

// Store is what Verify needs of the domain store (domaindb.Store implements it).
type Store interface {
	MarkDNSVerified(ctx context.Context, id int64, at time.Time) (domaindb.Status, error)
	MarkFailed(ctx context.Context, id int64, msg string) (domaindb.Status, error)
	SetLastError(ctx context.Context, id int64, msg string) error
}

var _ Store = (*domaindb.Store)(nil)

// Verification is the result of tenant.tasks.verify_custom_domain_dns_task and of
// `certmgr verify-dns`, in the contract's shape.
type Verification struct {
	Domain string `json:"domain"`
	Status string `json:"status"`
	DNSOK  bool   `json:"dns_ok"`
	Detail string `json:"detail"`
}

// Verify checks a row's domain and records the outcome:
//   - passed: dns_verified (an ssl_issued row stays so), last_error cleared; nil error.
//   - the tenant must act: failed with the detail in last_error (a row whose
//     certificate is live stays ssl_issued); the error is a *NotVerifiedError.
//   - DNS did not answer: only last_error says so, the status is kept; the error is
//     the *TransientError, so the caller retries.
//
// The Verification is filled in every case; errors writing the row are returned
// wrapped and leave it as far as it got.
func (c *Checker) Verify(ctx context.Context, store Store, row domaindb.CustomDomain) (Verification, error) {
	v := Verification{Domain: string(row.Domain), Status: string(row.Status)}
	res, err := c.CheckOwner(ctx, row.Domain, row.Owner())
	var te *TransientError
	switch {
	case errors.As(err, &te):
		v.Detail = te.Detail()
		if werr := store.SetLastError(ctx, row.ID, v.Detail); werr != nil {
			return v, fmt.Errorf("record dns lookup failure of %s: %w", row.Domain, errors.Join(err, werr))
		}
		return v, err
	case err != nil:
		return v, fmt.Errorf("check dns of %s: %w", row.Domain, err)
	}
	v.Detail, v.DNSOK = res.Detail, res.OK
	if !res.OK {
		st, werr := store.MarkFailed(ctx, row.ID, res.Detail)
		if werr != nil {
			return v, fmt.Errorf("record dns failure of %s: %w", row.Domain, werr)
		}
		v.Status = string(st)
		return v, res.Err()
	}
	st, err := store.MarkDNSVerified(ctx, row.ID, c.now())
	if err != nil {
		return v, fmt.Errorf("record dns verified for %s: %w", row.Domain, err)
	}
	v.Status = string(st)
	return v, nil
}

// VerifyName is a convenience for callers holding a validated name but no row (the
// verify-dns command for a domain not yet in the database): Check alone.
func (c *Checker) VerifyName(ctx context.Context, name domain.Name) (Verification, error) {
	res, err := c.Check(ctx, name)
	v := Verification{Domain: string(name), DNSOK: res.OK, Detail: res.Detail}
	var te *TransientError
	if errors.As(err, &te) {
		v.Detail = te.Detail()
	}
	if err != nil {
		return v, err
	}
	return v, res.Err()
}
