package tasks

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/worker"
)

// The exc_type of each FAILURE the Django app can branch on.
const (
	ExcNotFound         = "NotFound"         // no row with that id or name
	ExcDomainRejected   = "DomainRejected"   // the name fails validation, or the CA refuses it
	ExcDNSNotVerified   = "DNSNotVerified"   // the domain does not point at the platform
	ExcValidationFailed = "ValidationFailed" // the CA could not validate the HTTP-01 challenge
	ExcRateLimited      = "RateLimited"      // the CA's rate limit, after the retries
	ExcTemporary        = "TemporaryFailure" // broker, database, DNS or CA unreachable, after the retries
	ExcNginxConfig      = "NginxConfigInvalid"
	ExcReloadFailed     = "ReloadFailed"
	ExcBadArguments     = "BadArguments"
	ExcPermission       = "PermissionDenied" // the service account may not reload pods
	ExcDomainInUse      = "DomainInUse"      // purge asked for a domain that still has a row
)

// classified is what a failure means for the task and the tenant.
type classified struct {
	excType   string
	transient bool          // retry with backoff
	after     time.Duration // retry after at least this long (rate limits)
	tenant    string        // last_error text; "" leaves the row alone
	// final replaces tenant for a transient failure when no retry is left
	// (the row is then marked failed): the same problem, without the
	// promise to try again.
	final string
}

// classify maps a pipeline error to its exc_type, retry policy and the text
// the tenant UI shows.
func classify(name domain.Name, err error) classified {
	var (
		rejected  *domain.RejectedError
		notVer    *dnscheck.NotVerifiedError
		dnsTemp   *dnscheck.TransientError
		rate      *acme.RateLimitedError
		backoff   *acme.BackoffError
		acmeTemp  *acme.TransientError
		valid     *acme.ValidationError
		caReject  *acme.RejectedError
		nginxTest *nginxconf.TestError
		perm      *podreload.PermissionError
		partial   *podreload.IncompleteError
		badRow    *domaindb.BadRowError
		badArgs   *argError
		inUse     *InUseError
		budget    *domaindb.BudgetError
	)
	switch {
	case errors.As(err, &badArgs):
		return classified{excType: ExcBadArguments}
	case errors.As(err, &inUse):
		return classified{excType: ExcDomainInUse}
	case errors.As(err, &budget):
		// certmgr's own budget: refused before any order, failed at once
		// with the time it may be tried again.
		return classified{excType: ExcRateLimited,
			tenant: fmt.Sprintf("Too many certificate requests for this domain or account; try again after %s.",
				budget.RetryAt.UTC().Format("2006-01-02 15:04 MST"))}
	case errors.Is(err, domaindb.ErrNotFound):
		return classified{excType: ExcNotFound}
	case errors.As(err, &badRow), errors.As(err, &rejected):
		return classified{excType: ExcDomainRejected}
	case errors.As(err, &notVer):
		return classified{excType: ExcDNSNotVerified, tenant: notVer.Result.Detail}
	case errors.As(err, &dnsTemp):
		return classified{excType: ExcTemporary, transient: true, tenant: dnsTemp.Detail(),
			final: dnsTemp.Problem() + "; certmgr stopped retrying: issue the certificate again once the domain's DNS answers."}
	case errors.As(err, &backoff):
		// certmgr's own schedule after failed validations (the CA was not
		// asked): the tenant keeps seeing what failed, and when it is tried
		// again.
		return classified{excType: ExcValidationFailed, transient: true, after: backoff.RetryAfter,
			tenant: fmt.Sprintf("Let's Encrypt could not verify %s: %s. Check that it points to the platform; certmgr tries again after %s.",
				name, backoff.Detail, backoff.RetryAt.UTC().Format("2006-01-02 15:04 MST")),
			final: fmt.Sprintf("Let's Encrypt could not verify %s: %s. Check that it points to the platform and try again.", name, backoff.Detail)}
	case errors.As(err, &rate):
		return classified{excType: ExcRateLimited, transient: true, after: rate.RetryAfter,
			tenant: "Let's Encrypt is rate limiting certificates for this domain; certmgr will retry automatically.",
			final:  "Let's Encrypt is rate limiting certificates for this domain; certmgr stopped retrying: issue the certificate again later."}
	case errors.As(err, &acmeTemp):
		return classified{excType: ExcTemporary, transient: true,
			tenant: "The certificate authority could not be reached; certmgr will retry automatically.",
			final:  "The certificate authority could not be reached; certmgr stopped retrying: issue the certificate again later."}
	case errors.As(err, &valid):
		return classified{excType: ExcValidationFailed,
			tenant: fmt.Sprintf("Let's Encrypt could not verify %s: %s. Check that it points to the platform and try again.", name, valid.Detail)}
	case errors.As(err, &caReject):
		return classified{excType: ExcDomainRejected,
			tenant: fmt.Sprintf("Let's Encrypt refuses to issue for %s: %s", name, caReject.Detail)}
	case errors.As(err, &nginxTest):
		return classified{excType: ExcNginxConfig,
			tenant: "The certificate is ready but the web server configuration could not be updated; the platform team has been alerted."}
	case errors.As(err, &perm):
		return classified{excType: ExcPermission}
	case errors.As(err, &partial):
		return classified{excType: ExcReloadFailed, transient: true}
	case domaindb.IsTransient(err):
		return classified{excType: ExcTemporary, transient: true}
	}
	return classified{excType: ExcTemporary, transient: true}
}

// argError is a task sent with arguments the contract does not allow.
type argError struct{ msg string }

func (e *argError) Error() string { return e.msg }

func badArgs(format string, args ...any) error { return &argError{msg: fmt.Sprintf(format, args...)} }

// taskError turns a pipeline failure into what the worker stores: a retry for
// a transient failure, otherwise a FAILURE with the exc_type.
func (s *Service) taskError(t *worker.Task, c classified, err error) error {
	if c.transient {
		return fmt.Errorf("%w: %w", worker.RetryAfterMax(max(s.backoff(t.Retries), c.after), s.cfg.MaxRetries), worker.Fail(c.excType, err))
	}
	return fmt.Errorf("%w: %w", worker.SkipRetry, worker.Fail(c.excType, err))
}

// backoff is the delay before retry n+1: RetryBase doubled per retry, capped
// at RetryMax, with up to 20% jitter so that a burst does not retry in step.
func (s *Service) backoff(retries int) time.Duration {
	d := s.cfg.RetryBase
	for i := 0; i < retries && d < s.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.RetryMax)
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}

// lastAttempt reports whether a transient failure of t ends it: no retry is
// left, or it ran past its time limit (deadlineMiddleware fails it for good).
func (s *Service) lastAttempt(ctx context.Context, t *worker.Task) bool {
	return s.cfg.MaxRetries >= 0 && t.Retries >= s.cfg.MaxRetries || errors.Is(ctx.Err(), context.DeadlineExceeded)
}
