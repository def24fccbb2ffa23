package worker

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// maintenance keeps the broker's view of this worker current: it renews the
// lease (unacked_index score) of every held message, restores the messages
// of workers that died holding theirs (kombu's restore_visible), sends the
// worker heartbeat, and reads the revoked ids other replicas recorded.
type maintenance struct {
	keeper            keeper
	fl                *inflight
	ev                *events
	revoked           *revocations
	refreshInterval   time.Duration
	restoreInterval   time.Duration
	heartbeatInterval time.Duration
	visibility        time.Duration
	log               zerolog.Logger
	errs              *rateLimited
	cancel            context.CancelFunc
	wg                sync.WaitGroup
}

func (m *maintenance) start(ctx context.Context) {
	ctx, m.cancel = context.WithCancel(ctx)
	every(ctx, &m.wg, m.refreshInterval, false, m.refresh)
	every(ctx, &m.wg, m.restoreInterval, true, m.restore)
	every(ctx, &m.wg, m.heartbeatInterval, true, m.ev.heartbeat)
	every(ctx, &m.wg, m.restoreInterval, true, m.loadRevoked)
}

// shutdown stops the loops and returns when none is running.
func (m *maintenance) shutdown() {
	m.cancel()
	m.wg.Wait()
}

// loadRevoked picks up ids revoked while this worker was not listening.
func (m *maintenance) loadRevoked(ctx context.Context) {
	if err := m.revoked.load(ctx); err != nil && ctx.Err() == nil {
		m.errs.log(m.log, err, "reading revoked task ids failed")
	}
}

// refresh renews the unacked_index score of every held message.
func (m *maintenance) refresh(ctx context.Context) {
	tags := m.fl.tags()
	for len(tags) > 0 {
		n := min(len(tags), 500)
		if err := m.keeper.Refresh(ctx, tags[:n]); err != nil && ctx.Err() == nil {
			m.errs.log(m.log, err, "refreshing held messages failed")
			return
		}
		tags = tags[n:]
	}
}

// restore gives back messages of dead workers, like kombu's restore_visible.
func (m *maintenance) restore(ctx context.Context) {
	n, err := m.keeper.RestoreVisible(ctx)
	if err != nil && ctx.Err() == nil {
		m.errs.log(m.log, err, "restoring unacknowledged messages failed")
		return
	}
	if n > 0 {
		m.log.Warn().Int("messages", n).Dur("visibility_timeout", m.visibility).
			Msg("restored messages of a worker that stopped acknowledging them")
	}
}
