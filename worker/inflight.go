package worker

import (
	"context"
	"sync"
	"time"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// inflight is the ledger the fetcher and the executor share: every message
// this worker holds (prefetched, waiting for its eta, running, being
// settled), and the slots that bound how many it may hold.
type inflight struct {
	tokens chan struct{}  // one per message prefetched, running or being settled
	runq   chan *delivery // messages ready to run; room for every token

	mu       sync.Mutex
	held     map[string]*delivery
	stopped  bool
	stopping chan struct{} // closed when the executor stops taking work
}

func newInflight(slots int) *inflight {
	return &inflight{
		tokens:   make(chan struct{}, slots),
		runq:     make(chan *delivery, slots),
		held:     map[string]*delivery{},
		stopping: make(chan struct{}),
	}
}

type deliveryState int

const (
	stateQueued deliveryState = iota
	stateETA
	stateRunning
	stateGone // given back or finished
)

type delivery struct {
	tag      string
	raw      []byte
	msg      *celery.TaskMessage
	priority int
	state    deliveryState
	timer    *time.Timer
	// While running: cancel ends the handler's context; terminated says a
	// revoke(terminate=True) did it.
	cancel     context.CancelFunc
	terminated bool
	started    time.Time
}

// release gives back the slot of a message no longer prefetched or running.
func (f *inflight) release() { <-f.tokens }

func (f *inflight) add(d *delivery) {
	f.mu.Lock()
	f.held[d.tag] = d
	f.mu.Unlock()
}

func (f *inflight) forget(d *delivery) {
	f.mu.Lock()
	d.state = stateGone
	delete(f.held, d.tag)
	f.mu.Unlock()
}

// tags lists every held message.
func (f *inflight) tags() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	tags := make([]string, 0, len(f.held))
	for tag := range f.held {
		tags = append(tags, tag)
	}
	return tags
}
