package worker

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"
)

// revokeStore keeps revoked ids where every replica and the next start of
// this one see them. An optional capability of the broker.
type revokeStore interface {
	AddRevoked(ctx context.Context, ids []string, until time.Time, max int) error
	Revoked(ctx context.Context) (map[string]time.Time, error)
}

// revokesMax is Celery's REVOKES_MAX: how many revoked ids are remembered.
const revokesMax = 50000

// revocations is the set of revoked task ids, as Celery's worker_state.revoked
// (a LimitedSet with REVOKE_EXPIRES), mirrored in the broker's database.
type revocations struct {
	ttl   time.Duration
	store revokeStore // nil: memory only
	mu    sync.Mutex
	ids   map[string]time.Time // until

	loadOnce sync.Once
	loaded   chan struct{} // closed after the first load, whatever its outcome
}

func newRevocations(ttl time.Duration, store revokeStore) *revocations {
	return &revocations{ttl: ttl, store: store, ids: map[string]time.Time{}, loaded: make(chan struct{})}
}

// wait returns once the ids stored before this worker started have been
// read (or reading them failed once), so that no task runs unchecked.
func (r *revocations) wait(ctx context.Context) {
	select {
	case <-r.loaded:
	case <-ctx.Done():
	}
}

// add remembers ids as revoked and persists them.
func (r *revocations) add(ctx context.Context, ids []string) error {
	until := time.Now().Add(r.ttl)
	r.mu.Lock()
	for _, id := range ids {
		r.ids[id] = until
	}
	r.prune(time.Now())
	r.mu.Unlock()
	if r.store == nil {
		return nil
	}
	return r.store.AddRevoked(ctx, ids, until, revokesMax)
}

// load merges the ids other replicas (or this one before a restart) revoked.
func (r *revocations) load(ctx context.Context) error {
	defer r.loadOnce.Do(func() { close(r.loaded) })
	if r.store == nil {
		return nil
	}
	ids, err := r.store.Revoked(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, until := range ids {
		if until.After(r.ids[id]) {
			r.ids[id] = until
		}
	}
	r.prune(time.Now())
	return nil
}

func (r *revocations) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	until, ok := r.ids[id]
	return ok && time.Now().Before(until)
}

func (r *revocations) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune(time.Now())
	return slices.Sorted(maps.Keys(r.ids))
}

// prune drops expired ids and, over revokesMax, the oldest. r.mu is held.
func (r *revocations) prune(now time.Time) {
	for id, until := range r.ids {
		if !now.Before(until) {
			delete(r.ids, id)
		}
	}
	for len(r.ids) > revokesMax {
		var oldest string
		for id, until := range r.ids {
			if oldest == "" || until.Before(r.ids[oldest]) {
				oldest = id
			}
		}
		delete(r.ids, oldest)
	}
}
