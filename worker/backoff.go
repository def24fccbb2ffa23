package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker/internal/djangodb"
	"github.com/midsummer/certmgr/worker/internal/redisbroker"
)

// backoff is exponential from 100ms to 5s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) next() time.Duration {
	b.d = min(max(b.d*2, 100*time.Millisecond), 5*time.Second)
	return b.d
}

func (b *backoff) reset() { b.d = 0 }

// rateLimited logs an error at most once per period, with how many were
// suppressed in between, so an outage does not flood the logs.
type rateLimited struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

func newRateLimited(every time.Duration) *rateLimited { return &rateLimited{every: every} }

func (r *rateLimited) log(l zerolog.Logger, err error, msg string) {
	r.mu.Lock()
	if time.Since(r.last) < r.every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.suppressed = 0
	r.last = time.Now()
	r.mu.Unlock()
	l.Error().Err(err).Int("suppressed", n).Msg(msg)
}

// persister runs broker and backend writes until they succeed: a message's
// result and acknowledgement must not be lost to a Redis blip. It stops
// retrying
//   - at once on a permanent error (permanent): the backend refuses the
//     data itself, and retrying it would hold everything behind it forever;
//   - once hard is cancelled, after a few last attempts within lastTries
//     (the message then waits in unacked for the visibility timeout);
//   - when the caller's ctx ends.
type persister struct {
	hard context.Context
	log  zerolog.Logger
	errs *rateLimited

	// last ends lastTries after hard: writes still retrying by then give up,
	// so that a stop during an outage ends.
	last context.Context
}

func newPersister(log zerolog.Logger, errs *rateLimited) *persister {
	p := &persister{log: log, errs: errs}
	p.setHard(context.Background())
	return p
}

// lastTries is how long writes go on after the hard stop.
const lastTries = 3 * time.Second

// setHard makes hard the context whose end stops the retrying.
func (p *persister) setHard(hard context.Context) {
	p.hard = hard
	last, cancel := context.WithCancel(context.Background())
	p.last = last
	context.AfterFunc(hard, func() { time.AfterFunc(lastTries, cancel) })
}

// permanent reports whether err is a refusal that no retry can change: the
// result backend or the broker rejects what was sent (a task id too long for
// django-db's column, a Redis WRONGTYPE), as opposed to an outage.
func permanent(err error) bool {
	return djangodb.Permanent(err) || redisbroker.Permanent(err)
}

// do runs op until it succeeds, fails permanently or the hard stop's last
// attempts are over.
func (p *persister) do(op func(context.Context) error) error {
	return p.try(context.Background(), 0, op)
}

// try is do that also stops when ctx ends, after at most attempts attempts
// (0: no limit): for writes that are best effort (a message given back on
// shutdown is safe in unacked) or belong to a part that is stopping.
func (p *persister) try(ctx context.Context, attempts int, op func(context.Context) error) error {
	b := newBackoff()
	afterHard := 0
	for attempt := 1; ; attempt++ {
		if p.last.Err() != nil {
			return fmt.Errorf("gave up after the hard stop: %w", p.last.Err())
		}
		opCtx, cancel := context.WithTimeout(p.last, 10*time.Second)
		err := op(opCtx)
		cancel()
		if err == nil {
			return nil
		}
		if permanent(err) {
			return err
		}
		p.errs.log(p.log, err, "broker or result backend write failed; retrying")
		if p.hard.Err() != nil {
			afterHard++
		}
		if afterHard >= 3 || ctx.Err() != nil || (attempts > 0 && attempt >= attempts) {
			return err
		}
		select {
		case <-time.After(b.next()):
		case <-p.hard.Done():
		case <-ctx.Done():
		}
	}
}

// every runs fn every interval until ctx ends (first at once when now is
// set), on a goroutine counted by wg.
func every(ctx context.Context, wg *sync.WaitGroup, interval time.Duration, now bool, fn func(context.Context)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		if now {
			fn(ctx)
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn(ctx)
			}
		}
	}()
}
