package acme

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/midsummer/certmgr/domain"
)

// Failed validations of a name back off 1 min, 10 min, 100 min, then a day
// between attempts, which also keeps certmgr under Let's Encrypt's limit of 5
// failed validations per name per hour. The record lives in the store
// (<Dir>/certmgr/failures/<name>.json) so that every replica and every restart
// sees it; a successful issuance clears it.

// ValidationBackoff is how long to wait after the n-th consecutive failed
// validation (n >= 1).
func ValidationBackoff(n int) time.Duration {
	switch {
	case n <= 0:
		return 0
	case n == 1:
		return time.Minute
	case n == 2:
		return 10 * time.Minute
	case n == 3:
		return 100 * time.Minute
	default:
		return 24 * time.Hour
	}
}

// maxFailuresPerHour is Let's Encrypt's failed-validation limit per name.
const maxFailuresPerHour = 5

// ErrValidationBackoff is wrapped by the *BackoffError returned when a name
// is still backing off after failed validations: no order was made.
var ErrValidationBackoff = errors.New("backing off after failed validations")

// BackoffError refuses an order while its lineage backs off after failed
// validations. It is certmgr's own schedule, not the CA's rate limit: the CA
// was not asked.
type BackoffError struct {
	Lineage    LineageName
	RetryAt    time.Time
	RetryAfter time.Duration // RetryAt less the time of the refusal
	Failures   int           // consecutive failed validations
	Detail     string        // the CA's words on the last one
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("order %s: %d failed validation(s) in a row (last: %s); next attempt at %s",
		e.Lineage, e.Failures, e.Detail, e.RetryAt.UTC().Format(time.RFC3339))
}

func (e *BackoffError) Unwrap() error { return ErrValidationBackoff }

type failureRecord struct {
	Failures []time.Time `json:"failures"` // consecutive failures, oldest first
	Last     string      `json:"last_error"`
	Detail   string      `json:"detail,omitempty"` // the CA's words, for the tenant
}

func (s *Store) failurePath(n LineageName) string {
	return filepath.Join(s.dir, "certmgr", "failures", string(n)+".json")
}

func (s *Store) readFailures(n LineageName) (failureRecord, error) {
	var r failureRecord
	b, err := os.ReadFile(s.failurePath(n))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("read failure record: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		// A damaged record must not block issuance for good.
		return failureRecord{}, nil
	}
	return r, nil
}

// nextAttempt is the earliest time lineage n may be ordered again, and the
// number of consecutive failures behind it.
func nextAttempt(r failureRecord, now time.Time) (time.Time, int) {
	n := len(r.Failures)
	if n == 0 {
		return time.Time{}, 0
	}
	next := r.Failures[n-1].Add(ValidationBackoff(n))
	// However the schedule is set, never a 6th failure within an hour.
	if n >= maxFailuresPerHour {
		if h := r.Failures[n-maxFailuresPerHour].Add(time.Hour); h.After(next) {
			next = h
		}
	}
	return next, n
}

func (s *Store) recordFailure(n LineageName, at time.Time, cause error) error {
	r, err := s.readFailures(n)
	if err != nil {
		return err
	}
	r.Failures = append(r.Failures, at.UTC())
	if len(r.Failures) > 16 {
		r.Failures = r.Failures[len(r.Failures)-16:]
	}
	r.Last, r.Detail = cause.Error(), cause.Error()
	var ve *ValidationError
	if errors.As(cause, &ve) && ve.Detail != "" {
		r.Detail = ve.Detail
	}
	b, _ := json.Marshal(r)
	if err := os.MkdirAll(filepath.Dir(s.failurePath(n)), 0o700); err != nil {
		return err
	}
	return writeFileAtomic(s.failurePath(n), b, 0o600)
}

func (s *Store) clearFailures(n LineageName) {
	_ = os.Remove(s.failurePath(n))
}

// NextAttempt is when lineage n may be ordered again after failed
// validations; zero when it may be ordered now or never failed.
func (m *Manager) NextAttempt(n LineageName) (time.Time, error) {
	r, err := m.store.readFailures(n)
	if err != nil {
		return time.Time{}, err
	}
	next, _ := nextAttempt(r, m.cfg.Now())
	if !next.After(m.cfg.Now()) {
		return time.Time{}, nil
	}
	return next, nil
}

// checkBackoff refuses an order for n while it is backing off.
func (m *Manager) checkBackoff(n LineageName) error {
	r, err := m.store.readFailures(n)
	if err != nil {
		return err
	}
	now := m.cfg.Now()
	next, count := nextAttempt(r, now)
	if next.After(now) {
		detail := r.Detail
		if detail == "" {
			detail = r.Last // a record written before Detail was kept
		}
		return &BackoffError{Lineage: n, RetryAt: next, RetryAfter: next.Sub(now), Failures: count, Detail: detail}
	}
	return nil
}

// Backoff returns a *BackoffError when an order for d (renewing the lineage
// that serves it, or a new one) would be refused now after failed
// validations, nil when it may be ordered. Callers that count orders
// against budgets ask first, so that a refusal spends none.
func (m *Manager) Backoff(d domain.Name) error {
	current, ok, err := m.store.Find(d)
	if err != nil {
		return err
	}
	n := current.Name
	if !ok {
		if n, err = m.store.NameForNew(d); err != nil {
			return err
		}
	}
	return m.checkBackoff(n)
}
