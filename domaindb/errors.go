package domaindb

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotFound matches (errors.Is) every *NotFoundError.
var ErrNotFound = errors.New("custom domain not found")

// NotFoundError says no row has the id or name asked for; Django may have deleted it.
type NotFoundError struct {
	ID   int64  // 0 when looked up by name
	Name string // "" when looked up by id
}

func (e *NotFoundError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("custom domain %q not found", e.Name)
	}
	return fmt.Sprintf("custom domain id %d not found", e.ID)
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// BadRowError is a row certmgr refuses to use: its domain fails domain.Parse, or its
// status or mode is not one of the contract's. Err is the reason (a
// *domain.RejectedError for a hostile name).
type BadRowError struct {
	ID        int64
	Domain    string // as stored; quote it when printing
	LastError string // the row's last_error as stored
	Err       error
}

func (e *BadRowError) Error() string {
	return fmt.Sprintf("custom domain row %d (%.80q) unusable: %v", e.ID, e.Domain, e.Err)
}

func (e *BadRowError) Unwrap() error { return e.Err }

// IsTransient reports whether err is a database failure worth retrying later: the
// server unreachable or restarting, the connection lost, a timeout, a serialization
// failure or deadlock, or resources exhausted. NotFound, bad rows and SQL errors are
// not transient.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrNotFound) || errors.As(err, new(*BadRowError)) {
		return false
	}
	if errors.As(err, new(*LockBusyError)) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:min(2, len(pgErr.Code))] {
		case "08", // connection exception
			"53", // insufficient resources
			"57", // operator intervention (shutdown, query canceled)
			"58": // system error (I/O)
			return true
		}
		switch pgErr.Code {
		case "40001", "40P01", "55P03": // serialization failure, deadlock, lock not available
			return true
		}
		return false
	}
	if pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	// A query on a connection that broke before a reply: pgconn says it is safe to retry.
	return pgconn.SafeToRetry(err)
}
