package acme

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
)

// Errors from Manager come in four kinds, so that the task layer can steer its
// retries with errors.As:
//
//   - *RateLimitedError: the CA said urn:ietf:params:acme:error:rateLimited; try
//     again after RetryAfter.
//   - *TransientError: the CA could not be reached, timed out, or failed on its
//     side (serverInternal, 5xx, badNonce after lego's own retries); try again soon.
//   - *ValidationError: the CA could not validate the name (the token was not
//     served, DNS or CAA failed); back off, the tenant's setup is probably wrong.
//   - *RejectedError: the CA refuses the request as such (rejectedIdentifier,
//     malformed, badCSR, invalidProfile...); retrying the same request will not help.
//
// Each wraps the original error, so errors.Is/As still reach lego's types.

// RateLimitedError is a rateLimited answer from the CA.
type RateLimitedError struct {
	// RetryAfter is the CA's Retry-After; zero when it sent none.
	RetryAfter time.Duration
	Detail     string
	Err        error
}

func (e *RateLimitedError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("rate limited by the CA, retry after %s: %s", e.RetryAfter, e.Detail)
	}
	return fmt.Sprintf("rate limited by the CA: %s", e.Detail)
}

func (e *RateLimitedError) Unwrap() error { return e.Err }

// TransientError is a failure that a later attempt may not meet.
type TransientError struct{ Err error }

func (e *TransientError) Error() string { return "temporary ACME failure: " + e.Err.Error() }
func (e *TransientError) Unwrap() error { return e.Err }

// ValidationError is a failed challenge: the CA could not confirm that the name
// points at us and serves our token.
type ValidationError struct {
	Type   string // ACME problem type, e.g. urn:ietf:params:acme:error:unauthorized
	Detail string
	Err    error
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("the CA could not validate the domain (%s): %s", shortType(e.Type), e.Detail)
}
func (e *ValidationError) Unwrap() error { return e.Err }

// RejectedError is a request the CA refuses for good.
type RejectedError struct {
	Type   string
	Detail string
	Err    error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("the CA rejected the request (%s): %s", shortType(e.Type), e.Detail)
}
func (e *RejectedError) Unwrap() error { return e.Err }

func shortType(t string) string {
	const ns = "urn:ietf:params:acme:error:"
	if len(t) > len(ns) && t[:len(ns)] == ns {
		return t[len(ns):]
	}
	return t
}

// IsTransient reports whether err is worth retrying soon: a *TransientError or a
// *RateLimitedError (after its RetryAfter).
func IsTransient(err error) bool {
	var te *TransientError
	var rl *RateLimitedError
	return errors.As(err, &te) || errors.As(err, &rl)
}

// validationTypes are the problem types of a failed challenge.
var validationTypes = map[string]bool{
	legoacme.UnauthorizedErrorType:      true,
	legoacme.IncorrectResponseErrorType: true,
	legoacme.ConnectionErrorType:        true,
	legoacme.DNSErrorType:               true,
	legoacme.TLSErrorType:               true,
	legoacme.CaaErrorType:               true,
}

// classify wraps err from lego into one of the four kinds, prefixed with op.
// An error that is already classified, or a context error of the caller, keeps
// its kind.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var (
		rl  *RateLimitedError
		te  *TransientError
		ve  *ValidationError
		re  *RejectedError
		lrl *legoacme.RateLimitedError
		pd  *legoacme.ProblemDetails
	)
	switch {
	case errors.As(err, &rl), errors.As(err, &te), errors.As(err, &ve), errors.As(err, &re):
		return fmt.Errorf("%s: %w", op, err)
	case errors.As(err, &lrl):
		return &RateLimitedError{RetryAfter: lrl.RetryAfter, Detail: lrl.Detail, Err: fmt.Errorf("%s: %w", op, err)}
	case errors.As(err, &pd):
		return classifyProblem(op, pd, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &TransientError{Err: fmt.Errorf("%s: %w", op, err)}
	case isNetwork(err), isPollTimeout(err):
		return &TransientError{Err: fmt.Errorf("%s: %w", op, err)}
	}
	return fmt.Errorf("%s: %w", op, err)
}

func classifyProblem(op string, pd *legoacme.ProblemDetails, err error) error {
	wrapped := fmt.Errorf("%s: %w", op, err)
	typ := pd.Type
	if typ == legoacme.CompoundErrorType && len(pd.SubProblems) > 0 {
		typ = pd.SubProblems[0].Type
	}
	switch {
	case typ == legoacme.RateLimitedErrorType || pd.HTTPStatus == http.StatusTooManyRequests:
		return &RateLimitedError{Detail: pd.Detail, Err: wrapped}
	case typ == legoacme.BadNonceErrorType || typ == legoacme.ServerInternalErrorType || pd.HTTPStatus >= 500:
		return &TransientError{Err: wrapped}
	case validationTypes[typ]:
		return &ValidationError{Type: typ, Detail: pd.Detail, Err: wrapped}
	default:
		return &RejectedError{Type: typ, Detail: pd.Detail, Err: wrapped}
	}
}

func isNetwork(err error) bool {
	var ne net.Error
	var ue *url.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.As(err, &oe)
}

// isPollTimeout recognises lego's untyped errors for a CA that took too long:
// the certificate not ready within CertificateTimeout, or a challenge still
// pending when lego stopped polling.
func isPollTimeout(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "time limit exceeded") || strings.Contains(msg, "didn't respond to our request")
}
