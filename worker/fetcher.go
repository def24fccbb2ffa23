package worker

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker/internal/amqpbroker"
	"github.com/midsummer/certmgr/worker/internal/celery"
)

// fetcher takes messages from the broker while there are free slots and puts
// them on the run queue. Decoding happens in the executor, in parallel.
type fetcher struct {
	src  fetchSource
	size *sizeGuard
	fl   *inflight
	poll time.Duration
	log  zerolog.Logger
	errs *rateLimited
	// lost is called when fetching fails: messages of a lost connection
	// are dropped (executor.dropLostHeld).
	lost   func()
	cancel context.CancelFunc
	done   chan struct{}
}

func (f *fetcher) start(ctx context.Context) {
	ctx, f.cancel = context.WithCancel(ctx)
	f.done = make(chan struct{})
	go f.loop(ctx)
}

// shutdown stops fetching and returns once no fetch is in progress.
func (f *fetcher) shutdown() {
	f.cancel()
	<-f.done
}

func (f *fetcher) loop(ctx context.Context) {
	defer close(f.done)
	backoff := newBackoff()
	tokens := f.fl.tokens
	for {
		// One slot, blocking; then as many more as are free.
		select {
		case tokens <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n := 1
	more:
		for n < cap(tokens) {
			select {
			case tokens <- struct{}{}:
				n++
			default:
				break more
			}
		}
		ds, err := f.src.Fetch(ctx, n, f.poll)
		for range n - len(ds) {
			f.fl.release()
		}
		for _, d := range ds {
			f.accept(ctx, d)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if f.lost != nil {
				f.lost()
			}
			if errors.Is(err, amqpbroker.ErrConsumerTimeout) {
				// Once per consumer_timeout at most, and an operator must see it.
				f.log.Error().Err(err).Msg("RabbitMQ closed the consumer channel: consumer_timeout expired; " +
					"held messages are redelivered and tasks running now will run again")
			} else {
				f.errs.log(f.log, err, "fetch failed; retrying")
			}
			select {
			case <-time.After(backoff.next()):
			case <-ctx.Done():
				return
			}
			continue
		}
		backoff.reset()
	}
}

// accept queues a fetched message for the executor, or logs one the broker
// put away as undecodable. The caller holds a slot for it.
func (f *fetcher) accept(ctx context.Context, fd celery.Delivery) {
	if fd.TooLarge > 0 {
		f.fl.release()
		f.size.reject(ctx, fd)
		return
	}
	if fd.Tag == "" {
		f.fl.release()
		f.log.Error().Str("queue", fd.Queue).Str("dead_list", f.src.DeadQueue()).Int("bytes", len(fd.Raw)).
			Msg("message is not a kombu envelope; moved to the dead list")
		return
	}
	d := &delivery{tag: fd.Tag, raw: fd.Raw, state: stateQueued}
	f.fl.add(d)
	f.fl.runq <- d // never blocks: runq has a place for every token
}
