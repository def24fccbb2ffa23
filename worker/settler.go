package worker

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// settleQueue bounds the finished tasks waiting for the settler; a worker
// waits when it is full (the result backend is slow or down).
const settleQueue = 512

// settlement is a finished task whose result is stored and message
// acknowledged in a batch.
type settlement struct {
	d    *delivery
	meta *celery.EncodedResult // nil: nothing to store (ignore_result)
}

// settler stores results and then acknowledges their messages, many at a
// time: two round trips for a whole batch, or one atomic step when the
// broker is also the result backend. A result is always stored before its
// message is acknowledged, so a crash in between re-runs the task rather
// than losing its result.
type settler struct {
	sink    settleSink
	results resultStore
	atomic  storeAcker // nil unless the broker's database is the result backend
	expires time.Duration
	fl      *inflight
	persist *persister
	log     zerolog.Logger
	q       chan settlement
	done    chan struct{}
}

func (s *settler) start() {
	s.q = make(chan settlement, settleQueue)
	s.done = make(chan struct{})
	go s.loop()
}

// settle hands a finished task over, so the executor can take the next
// task while results are stored in batches.
func (s *settler) settle(d *delivery, meta *celery.EncodedResult) {
	s.q <- settlement{d: d, meta: meta}
}

// shutdown settles everything handed over and returns. Nothing may call
// settle afterwards.
func (s *settler) shutdown() {
	close(s.q)
	<-s.done
}

func (s *settler) loop() {
	defer close(s.done)
	const maxBatch = 256
	batch := make([]settlement, 0, maxBatch)
	metas := make([]celery.EncodedResult, 0, maxBatch)
	tags := make([]string, 0, maxBatch)
	for first := range s.q {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < maxBatch {
			select {
			case st, ok := <-s.q:
				if !ok {
					break drain
				}
				batch = append(batch, st)
			default:
				break drain
			}
		}
		metas, tags = metas[:0], tags[:0]
		for _, st := range batch {
			if st.meta != nil {
				metas = append(metas, *st.meta)
			}
			tags = append(tags, st.d.tag)
		}
		s.write(metas, tags)
		for _, st := range batch {
			s.fl.forget(st.d)
		}
	}
}

func (s *settler) write(metas []celery.EncodedResult, tags []string) {
	if s.atomic != nil {
		if err := s.persist.do(func(ctx context.Context) error {
			return s.atomic.StoreAndAck(ctx, metas, s.expires, tags)
		}); err != nil {
			s.log.Error().Err(err).Int("messages", len(tags)).
				Msg("storing results and acknowledging failed; the messages come back after the visibility timeout")
		}
		return
	}
	if err := s.persist.do(func(ctx context.Context) error { return s.results.StoreMany(ctx, metas) }); err != nil {
		s.log.Error().Err(err).Int("tasks", len(metas)).Msg("storing task results failed")
		return
	}
	if err := s.persist.do(func(ctx context.Context) error { return s.sink.Ack(ctx, tags...) }); err != nil {
		s.log.Error().Err(err).Int("messages", len(tags)).
			Msg("acknowledging failed; the messages come back after the visibility timeout")
	}
}
