package domaindb

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/midsummer/certmgr/domain"
)

// Unlock releases a lock. It is safe to call more than once and from a deferred call
// after the caller's ctx is done.
type Unlock func()

// LockKey is the advisory lock key of a lock name: FNV-64a of "certmgr/lock/"+name.
func LockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("certmgr/lock/"))
	_, _ = h.Write([]byte(name))
	return int64(h.Sum64())
}

// Lock waits for the advisory lock of a domain, so that one process at a time orders
// or renews its certificate. After Lock returns, re-read the row and the certificate
// store: another holder may just have finished. The wait ends with ctx or after
// Config.LockWait, whichever is first; the latter is a *LockBusyError.
func (s *Store) Lock(ctx context.Context, name domain.Name) (Unlock, error) {
	return s.LockName(ctx, string(name))
}

// LockName is Lock for a lock that is not a domain's (a singleton such as
// the publication of the nginx configuration); names share Lock's key space.
func (s *Store) LockName(ctx context.Context, name string) (Unlock, error) {
	wctx, cancel := context.WithTimeoutCause(ctx, s.cfg.LockWait, errLockWait)
	defer cancel()
	u, _, err := s.lock(wctx, name, true)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(wctx), errLockWait) {
		return nil, &LockBusyError{Name: name, Waited: s.cfg.LockWait}
	}
	return u, err
}

var errLockWait = errors.New("lock wait bound reached")

// LockBusyError is a lock still held by another worker after Config.LockWait:
// the task is retried later instead of waiting on.
type LockBusyError struct {
	Name   string
	Waited time.Duration
}

func (e *LockBusyError) Error() string {
	return fmt.Sprintf("lock %s: still held by another worker after %s", e.Name, e.Waited)
}

// TryLock takes the advisory lock called name if it is free and reports whether it
// did, without waiting. Lock names share one key space: TryLock(ctx, string(n)) and
// Lock(ctx, n) exclude each other. Singletons use names that are not domains, such
// as "renewal-sweep/<target>".
func (s *Store) TryLock(ctx context.Context, name string) (Unlock, bool, error) {
	return s.lock(ctx, name, false)
}

func (s *Store) lock(ctx context.Context, name string, wait bool) (Unlock, bool, error) {
	// A connection of its own: the lock lives as long as this session, and the pool
	// cannot hand the session to someone else or be starved by held locks.
	cc := s.pool.Config().ConnConfig.Copy()
	// On ctx cancellation ask the server to cancel the lock wait (instead of only
	// dropping the socket, which a backend blocked on a lock would not notice).
	cc.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: s.cfg.LockTimeout}
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, false, fmt.Errorf("lock %s: connect: %w", name, err)
	}
	key := LockKey(name)
	var ok bool
	if wait {
		_, err = conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key)
		ok = err == nil
	} else {
		err = conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok)
	}
	if err != nil || !ok {
		// Closing the session drops the lock too, should the server have granted it
		// just as ctx ended.
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.LockTimeout)
		defer cancel()
		_ = conn.Close(closeCtx)
		if err != nil {
			return nil, false, fmt.Errorf("lock %s: %w", name, err)
		}
		return nil, false, nil
	}
	var once sync.Once
	unlock := func() {
		once.Do(func() {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.LockTimeout)
			defer cancel()
			var released bool
			if err := conn.QueryRow(uctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&released); err != nil || !released {
				s.log.Warn().Err(err).Str("lock", name).Msg("advisory unlock failed; closing its session releases it")
			}
			_ = conn.Close(uctx)
		})
	}
	return unlock, true, nil
}
