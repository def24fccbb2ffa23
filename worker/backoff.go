package worker

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
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
// result and acknowledgement must not be lost to a Redis blip. It gives up
// once hard is cancelled (the message then waits for the visibility timeout).
type persister struct {
	hard context.Context
	log  zerolog.Logger
	errs *rateLimited
}

func (p *persister) do(op func(context.Context) error) error {
	b := newBackoff()
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := op(ctx)
		cancel()
		if err == nil {
			return nil
		}
		p.errs.log(p.log, err, "redis write failed; retrying")
		if p.hard.Err() != nil && attempt >= 2 {
			return err
		}
		select {
		case <-time.After(b.next()):
		case <-p.hard.Done():
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
