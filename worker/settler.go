package worker

import (
	"context"
	"fmt"
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
	// backendName names the result backend in logs, without its password.
	backendName string
	q           chan settlement
	done        chan struct{}
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
		s.write(batch)
		for _, st := range batch {
			s.fl.forget(st.d)
		}
	}
}

// write stores a batch's results and acknowledges its messages. A permanent
// error (the backend refuses a row, see permanent) is retried row by row,
// so that one result that cannot be stored holds back no other: that one is
// logged and its message acknowledged without it, as Celery's worker does
// when storing a result raises (celery/app/trace.py reports the error and
// the request is acknowledged). Any other error is retried until the hard
// stop, and the messages then wait in unacked for the visibility timeout.
func (s *settler) write(batch []settlement) {
	storing, err := s.settleAll(batch)
	switch {
	case err == nil:
		return
	case !permanent(err):
		s.log.Error().Err(err).Int("messages", len(batch)).
			Msg("storing results and acknowledging failed; the messages come back after the visibility timeout")
		return
	case len(batch) > 1:
		for i := range batch {
			s.write(batch[i : i+1])
		}
		return
	}
	st := batch[0]
	if !storing || st.meta == nil {
		s.log.Error().Err(err).Str("delivery_tag", st.d.tag).
			Msg("the broker refuses to acknowledge this message; it comes back after the visibility timeout")
		return
	}
	s.log.Error().Err(err).Str(FieldTaskID, st.meta.TaskID).Str("result_backend", s.backendName).
		Msg("the result backend refuses this task's result; acknowledging its message without storing it")
	if _, err := s.settleAll([]settlement{{d: st.d}}); err != nil {
		s.log.Error().Err(err).Str(FieldTaskID, st.meta.TaskID).
			Msg("acknowledging failed; the message comes back after the visibility timeout")
	}
}

// settleAll stores the results and then acknowledges the messages of a
// batch; storing says whether an error may come from storing.
func (s *settler) settleAll(batch []settlement) (storing bool, err error) {
	metas := make([]celery.EncodedResult, 0, len(batch))
	tags := make([]string, 0, len(batch))
	for _, st := range batch {
		if st.meta != nil {
			metas = append(metas, *st.meta)
		}
		tags = append(tags, st.d.tag)
	}
	if s.atomic != nil {
		return len(metas) > 0, s.persist.do(func(ctx context.Context) error {
			return s.atomic.StoreAndAck(ctx, metas, s.expires, tags)
		})
	}
	if err := s.persist.do(func(ctx context.Context) error { return s.results.StoreMany(ctx, metas) }); err != nil {
		return true, fmt.Errorf("store %d task results: %w", len(metas), err)
	}
	if err := s.persist.do(func(ctx context.Context) error { return s.sink.Ack(ctx, tags...) }); err != nil {
		return false, fmt.Errorf("acknowledge %d messages: %w", len(tags), err)
	}
	return false, nil
}
