package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker/celery"
	"github.com/midsummer/certmgr/worker/redisbroker"
)

// Server consumes a Celery queue and runs a Handler for each task.
//
// Start launches it; Stop stops it gracefully, in this order: stop fetching;
// give back to the queue every message not yet started (prefetched ones and
// those waiting for their eta); let running tasks finish for ShutdownGrace;
// cancel those still running and give their messages back; stop the
// background loops (unacked refresh, restore, heartbeat, remote control);
// publish worker-offline; close the connections.
type Server struct {
	cfg     Config
	h       Handler
	log     zerolog.Logger
	broker  *redisbroker.Broker
	backend *redisbroker.Backend
	ev      *events

	tokens     chan struct{} // one per message prefetched, running or being settled
	runq       chan *delivery
	settleq    chan settlement
	settleDone chan struct{}

	mu      sync.Mutex
	held    map[string]*delivery // every message this worker has in unacked
	stopped bool

	active    atomic.Int64
	processed atomic.Int64

	startOnce, stopOnce sync.Once
	started             bool
	fetchCancel         context.CancelFunc
	hardCtx             context.Context
	hardCancel          context.CancelFunc
	bgCancel            context.CancelFunc
	fetchDone           chan struct{}
	workers             sync.WaitGroup
	bg                  sync.WaitGroup
	etaWG               sync.WaitGroup
	stopping            chan struct{}

	brokerErrs *rateLimited
}

// settlement is a finished task whose result is stored and message
// acknowledged in batches by settleLoop.
type settlement struct {
	d    *delivery
	meta *redisbroker.Result // nil: nothing to store (ignore_result)
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
}

// NewServer checks cfg and prepares a server; it does not connect.
func NewServer(cfg Config, h Handler) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("worker: nil handler")
	}
	broker, err := redisbroker.New(redisbroker.Config{
		URL: cfg.BrokerURL, Queue: cfg.Queue, VisibilityTimeout: cfg.VisibilityTimeout, MutexTTL: cfg.RestoreMutexTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("worker broker: %w", err)
	}
	backend, err := redisbroker.NewBackend(redisbroker.BackendConfig{URL: cfg.ResultBackendURL, Expires: cfg.ResultExpires})
	if err != nil {
		return nil, fmt.Errorf("worker result backend: %w", err)
	}
	log := cfg.Logger.With().Str(FieldComponent, "worker").Logger()
	s := &Server{
		cfg:        cfg,
		h:          h,
		log:        log,
		broker:     broker,
		backend:    backend,
		tokens:     make(chan struct{}, cfg.Concurrency+cfg.Prefetch),
		runq:       make(chan *delivery, cfg.Concurrency+cfg.Prefetch),
		settleq:    make(chan settlement, settleQueue),
		settleDone: make(chan struct{}),
		held:       map[string]*delivery{},
		fetchDone:  make(chan struct{}),
		stopping:   make(chan struct{}),
		brokerErrs: newRateLimited(10 * time.Second),
	}
	s.ev = newEvents(s)
	return s, nil
}

// Hostname is the worker's node name.
func (s *Server) Hostname() string { return s.cfg.Hostname }

// Start connects nothing up front (a broker outage is retried with backoff)
// and launches the worker's goroutines. Cancelling ctx is a hard stop, like a
// crash: running handlers are cancelled and their messages stay unacknowledged
// until the visibility timeout. Use Stop for a graceful stop.
func (s *Server) Start(ctx context.Context) error {
	err := errors.New("worker: already started")
	s.startOnce.Do(func() {
		err = nil
		s.started = true
		fetchCtx, fetchCancel := context.WithCancel(ctx)
		s.fetchCancel = fetchCancel
		s.hardCtx, s.hardCancel = context.WithCancel(ctx)
		bgCtx, bgCancel := context.WithCancel(ctx)
		s.bgCancel = bgCancel

		s.log.Info().Str("queue", s.cfg.Queue).Int("concurrency", s.cfg.Concurrency).
			Str("hostname", s.cfg.Hostname).Msg("worker starting")
		for range s.cfg.Concurrency {
			s.workers.Add(1)
			go s.work()
		}
		go s.fetchLoop(fetchCtx)
		go s.settleLoop()
		s.loop(bgCtx, s.cfg.RefreshInterval, false, s.refresh)
		s.loop(bgCtx, s.cfg.RestoreInterval, true, s.restore)
		s.loop(bgCtx, s.cfg.HeartbeatInterval, true, s.ev.heartbeat)
		s.bg.Add(1)
		go func() { defer s.bg.Done(); s.controlLoop(bgCtx) }()
	})
	return err
}

// Run starts the server, waits for ctx to end and stops it gracefully.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	<-ctx.Done()
	s.Stop()
	return nil
}

// Stop stops the server gracefully (see Server). It is idempotent and
// returns when everything has stopped.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if !s.started {
			s.broker.Close()
			s.backend.Close()
			return
		}
		s.log.Info().Msg("worker stopping: no more fetching")
		s.fetchCancel()
		<-s.fetchDone

		s.mu.Lock()
		s.stopped = true
		close(s.stopping)
		var giveBack []*delivery
		for _, d := range s.held {
			if d.state == stateQueued || d.state == stateETA {
				if d.timer != nil && d.timer.Stop() {
					s.etaWG.Done() // its due() will never run
				}
				d.state = stateGone
				giveBack = append(giveBack, d)
			}
		}
		s.mu.Unlock()
		for _, d := range giveBack {
			s.giveBack(d)
		}

		done := make(chan struct{})
		go func() { s.workers.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(s.cfg.ShutdownGrace):
			s.log.Warn().Int64("running", s.active.Load()).Dur("grace", s.cfg.ShutdownGrace).
				Msg("grace period over: cancelling running tasks, their messages go back to the queue")
			s.hardCancel()
			<-done
		}
		s.etaWG.Wait()
		close(s.settleq)
		<-s.settleDone
		s.hardCancel()
		s.bgCancel()
		s.bg.Wait()
		s.ev.offline()
		s.broker.Close()
		s.backend.Close()
		s.log.Info().Int64("processed", s.processed.Load()).Msg("worker stopped")
	})
}

// loop runs fn every interval until ctx ends (first at once when now is set).
func (s *Server) loop(ctx context.Context, interval time.Duration, now bool, fn func(context.Context)) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
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

// fetchLoop takes messages while there are free slots.
func (s *Server) fetchLoop(ctx context.Context) {
	defer close(s.fetchDone)
	backoff := newBackoff()
	for {
		// One slot, blocking; then as many more as are free.
		select {
		case s.tokens <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n := 1
	more:
		for n < cap(s.tokens) {
			select {
			case s.tokens <- struct{}{}:
				n++
			default:
				break more
			}
		}
		ds, err := s.broker.Fetch(ctx, n, s.cfg.PollInterval)
		for range n - len(ds) {
			<-s.tokens
		}
		for _, d := range ds {
			s.accept(ctx, d)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.brokerErrs.log(s.log, err, "fetch failed; retrying")
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

// accept decodes a fetched message and queues it, holds it for its eta, or
// puts it away as undecodable. The caller holds a token for it.
func (s *Server) accept(ctx context.Context, fd redisbroker.Delivery) {
	if fd.Tag == "" {
		<-s.tokens
		s.log.Error().Str("queue", fd.Queue).Str("dead_list", s.broker.DeadQueue()).Int("bytes", len(fd.Raw)).
			Msg("message is not a kombu envelope; moved to the dead list")
		return
	}
	// Decoding happens in the workers, in parallel; see prepare.
	d := &delivery{tag: fd.Tag, raw: fd.Raw, state: stateQueued}
	s.mu.Lock()
	s.held[d.tag] = d
	s.mu.Unlock()
	s.runq <- d // never blocks: runq has a place for every token
}

// prepare decodes a message the first time a worker takes it. It reports
// whether the task should run now; when not, the message was moved to the
// dead list or is held for its eta, and its token was released.
func (s *Server) prepare(d *delivery) bool {
	if d.msg != nil {
		return true // back from its eta
	}
	msg, err := celery.DecodeMessage(d.raw)
	if err != nil {
		s.log.Error().Err(err).Str("delivery_tag", d.tag).Str("dead_list", s.broker.DeadQueue()).
			Msg("undecodable message; moved to the dead list")
		if err := s.persist(func(ctx context.Context) error { return s.broker.DeadLetter(ctx, d.tag, d.raw) }); err != nil {
			s.log.Error().Err(err).Str("delivery_tag", d.tag).Msg("dead-letter failed; the message comes back after the visibility timeout")
		}
		s.forget(d)
		<-s.tokens
		return false
	}
	d.msg, d.priority = msg, msg.Priority
	s.ev.taskReceived(msg)
	if wait := time.Until(msg.ETA); !msg.ETA.IsZero() && wait > 0 {
		// Held (and refreshed) until due; it takes no prefetch slot meanwhile.
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			s.giveBack(d)
			<-s.tokens
			return false
		}
		d.state = stateETA
		s.etaWG.Add(1)
		d.timer = time.AfterFunc(wait, func() { s.due(d) })
		s.mu.Unlock()
		<-s.tokens
		return false
	}
	return true
}

// due moves a message whose eta has come to the run queue.
func (s *Server) due(d *delivery) {
	defer s.etaWG.Done()
	select {
	case s.tokens <- struct{}{}:
	case <-s.stopping:
		return // Stop gives it back
	}
	s.mu.Lock()
	if d.state != stateETA {
		s.mu.Unlock()
		<-s.tokens
		return
	}
	d.state = stateQueued
	s.mu.Unlock()
	s.runq <- d
}

func (s *Server) work() {
	defer s.workers.Done()
	for {
		select {
		case d := <-s.runq:
			s.mu.Lock()
			if s.stopped || d.state != stateQueued {
				s.mu.Unlock()
				<-s.tokens
				continue
			}
			d.state = stateRunning
			s.mu.Unlock()
			if !s.prepare(d) {
				continue
			}
			s.active.Add(1)
			s.run(d)
			s.active.Add(-1)
			s.processed.Add(1)
			<-s.tokens
		case <-s.stopping:
			return
		}
	}
}

// run processes one message and settles it: ack (through settleLoop),
// retry, or give back.
func (s *Server) run(d *delivery) {
	m := d.msg
	t := &Task{
		ID: m.ID, Name: m.Task, Args: m.Args, Kwargs: m.Kwargs, Retries: m.Retries,
		ETA: m.ETA, Expires: m.Expires, RootID: m.RootID, ParentID: m.ParentID, GroupID: m.GroupID,
	}
	if t.Kwargs == nil {
		t.Kwargs = map[string]json.RawMessage{}
	}
	t.logger = s.log.With().Str(FieldTaskID, m.ID).Str(FieldTaskName, m.Task).Int(FieldRetries, m.Retries).Logger()

	if !m.Expires.IsZero() && time.Now().After(m.Expires) {
		t.logger.Info().Time("expires", m.Expires).Msg("task expired before it ran: revoked")
		if s.cfg.SendTaskEvents {
			s.ev.task("task-revoked", m, map[string]any{"expired": true, "terminated": false, "signum": nil})
		}
		s.settle(d, s.meta(t, m, celery.StateRevoked, celery.ExceptionInfo{
			ExcType: "TaskRevokedError", ExcMessage: []string{"expired"}, ExcModule: "celery.exceptions",
		}, ""))
		return
	}
	if s.cfg.TrackStarted {
		s.store(t, m, celery.StateStarted, map[string]any{"pid": pid, "hostname": s.cfg.Hostname}, "")
	}
	s.ev.task("task-started", m, nil)

	ctx, cancel := s.taskContext(m)
	start := time.Now()
	err := s.call(ctx, t)
	runtime := time.Since(start)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, errTimeLimit) {
		err = fmt.Errorf("%w after %s: %w", errTimeLimit, runtime.Round(time.Millisecond), err)
	}
	cancel()

	switch {
	case err == nil:
		result, _ := t.Result()
		t.logger.Info().Dur("runtime", runtime).Msg("task succeeded")
		if s.cfg.SendTaskEvents {
			s.ev.task("task-succeeded", m, map[string]any{"result": fmt.Sprint(result), "runtime": runtime.Seconds()})
		}
		s.settle(d, s.meta(t, m, celery.StateSuccess, result, ""))
		return

	case s.hardCtx.Err() != nil:
		// Cancelled by a hard stop: leave it for another worker.
		t.logger.Warn().Err(err).Msg("task cancelled by shutdown; message goes back to the queue")
		s.giveBack(d)
		return

	default:
		var retry *RetryError
		if errors.As(err, &retry) && !errors.Is(err, SkipRetry) {
			if s.cfg.MaxRetries < 0 || m.Retries < s.cfg.MaxRetries {
				s.retry(t, d, retry.Delay, err)
				return
			}
			err = &maxRetriesError{task: t, max: s.cfg.MaxRetries, err: err}
		}
		info := excInfo(err)
		tb := traceback(t, err, info)
		if nr := (*NotRegisteredError)(nil); errors.As(err, &nr) {
			info.ExcMessage = []string{fmt.Sprintf("'%s'", m.Task)}
		}
		t.logger.Error().Err(err).Str("exc_type", info.ExcType).Dur("runtime", runtime).Msg("task failed")
		if s.cfg.SendTaskEvents {
			s.ev.task("task-failed", m, map[string]any{"exception": info.ExcType + "(" + fmt.Sprintf("%q", err.Error()) + ")", "traceback": tb})
		}
		s.settle(d, s.meta(t, m, celery.StateFailure, info, tb))
	}
}

// maxRetriesError is the failure after the last allowed retry; it keeps the
// cause's exc_type when the cause has one, as Celery re-raises the cause.
type maxRetriesError struct {
	task *Task
	max  int
	err  error
}

func (e *maxRetriesError) Error() string {
	return fmt.Sprintf("max retries (%d) exceeded for %s[%s]: %v", e.max, e.task.Name, e.task.ID, e.err)
}

func (e *maxRetriesError) Unwrap() error { return e.err }

func (e *maxRetriesError) ExcType() string {
	var typer ExcTyper
	if errors.As(e.err, &typer) && typer.ExcType() != "" {
		return typer.ExcType()
	}
	return "MaxRetriesExceededError"
}

func (e *maxRetriesError) ExcModule() string {
	var typer ExcTyper
	if errors.As(e.err, &typer) && typer.ExcType() != "" {
		return defaultExcModule(typer.ExcType())
	}
	return "celery.exceptions"
}

// retry re-sends the task with retries+1 and an eta, then records RETRY;
// the new message replaces the old one atomically.
func (s *Server) retry(t *Task, d *delivery, delay time.Duration, cause error) {
	eta := time.Now().Add(delay)
	raw, err := celery.RetryEnvelope(d.raw, d.msg.Retries+1, eta, redisbroker.NewTag())
	if err != nil {
		// Cannot happen for a message we decoded; fail rather than loop.
		t.logger.Error().Err(err).Msg("cannot build retry message")
		s.store(t, d.msg, celery.StateFailure, excInfo(cause), traceback(t, cause, excInfo(cause)))
		s.finish(d, func(ctx context.Context) error { return s.broker.Ack(ctx, d.tag) })
		return
	}
	info := excInfo(cause)
	tb := traceback(t, cause, info)
	t.logger.Warn().Err(cause).Dur("countdown", delay).Msg("task will be retried")
	s.store(t, d.msg, celery.StateRetry, info, tb)
	s.ev.task("task-retried", d.msg, map[string]any{"exception": cause.Error(), "traceback": tb})
	s.finish(d, func(ctx context.Context) error {
		return s.broker.Republish(ctx, d.tag, raw, d.priority)
	})
}

func (s *Server) taskContext(m *celery.TaskMessage) (context.Context, context.CancelFunc) {
	limit := m.TimeLimit()
	if limit == 0 {
		limit = s.cfg.DefaultTimeLimit
	}
	if limit > 0 {
		return context.WithTimeout(s.hardCtx, limit)
	}
	return context.WithCancel(s.hardCtx)
}

// call runs the handler, turning a panic into a *PanicError with the stack.
func (s *Server) call(ctx context.Context, t *Task) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return s.h.ProcessTask(ctx, t)
}

// meta builds the encoded result document for a state, or nil when the
// task ignores results.
func (s *Server) meta(t *Task, m *celery.TaskMessage, state celery.State, result any, tb string) *redisbroker.Result {
	if m.IgnoreResult {
		return nil
	}
	meta := celery.NewResultMeta(m.ID, state, result, tb, time.Now())
	meta.GroupID, meta.ParentID = m.GroupID, m.ParentID
	raw, err := meta.Encode()
	if err != nil {
		// A result that does not marshal is the handler's bug: report it as the failure.
		t.logger.Error().Err(err).Msg("task result is not JSON; storing a failure instead")
		info := celery.ExceptionInfo{ExcType: "EncodeError", ExcModule: "kombu.exceptions", ExcMessage: []string{err.Error()}}
		raw, _ = celery.NewResultMeta(m.ID, celery.StateFailure, info, "", time.Now()).Encode()
	}
	return &redisbroker.Result{TaskID: m.ID, Raw: raw}
}

// store writes a state to the result backend now, unless the task ignores results.
func (s *Server) store(t *Task, m *celery.TaskMessage, state celery.State, result any, tb string) {
	meta := s.meta(t, m, state, result, tb)
	if meta == nil {
		return
	}
	if err := s.persist(func(ctx context.Context) error { return s.backend.StoreMany(ctx, []redisbroker.Result{*meta}) }); err != nil {
		t.logger.Error().Err(err).Str("state", string(state)).Msg("storing the task state failed")
	}
}

// settleQueue bounds the finished tasks waiting for settleLoop; a worker
// waits when it is full (the result backend is slow or down).
const settleQueue = 512

// settle hands a finished task to settleLoop, so the worker can take the next
// task while results are stored in batches.
func (s *Server) settle(d *delivery, meta *redisbroker.Result) {
	s.settleq <- settlement{d: d, meta: meta}
}

// settleLoop stores results and then acknowledges their messages, many at a
// time: two round trips for a whole batch. A result is always stored before
// its message is acknowledged, so a crash in between re-runs the task rather
// than losing its result.
func (s *Server) settleLoop() {
	defer close(s.settleDone)
	const maxBatch = 256
	batch := make([]settlement, 0, maxBatch)
	metas := make([]redisbroker.Result, 0, maxBatch)
	tags := make([]string, 0, maxBatch)
	for first := range s.settleq {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < maxBatch {
			select {
			case st, ok := <-s.settleq:
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
		if s.cfg.ResultBackendURL == s.cfg.BrokerURL {
			// One database: results and acks in one atomic round trip.
			if err := s.persist(func(ctx context.Context) error {
				return s.broker.StoreAndAck(ctx, metas, s.cfg.ResultExpires, tags)
			}); err != nil {
				s.log.Error().Err(err).Int("messages", len(tags)).
					Msg("storing results and acknowledging failed; the messages come back after the visibility timeout")
			}
		} else if err := s.persist(func(ctx context.Context) error { return s.backend.StoreMany(ctx, metas) }); err != nil {
			s.log.Error().Err(err).Int("tasks", len(metas)).Msg("storing task results failed")
		} else if err := s.persist(func(ctx context.Context) error { return s.broker.Ack(ctx, tags...) }); err != nil {
			s.log.Error().Err(err).Int("messages", len(tags)).
				Msg("acknowledging failed; the messages come back after the visibility timeout")
		}
		for _, st := range batch {
			s.forget(st.d)
		}
	}
}

// finish settles a message (ack or republish) and forgets it.
func (s *Server) finish(d *delivery, op func(context.Context) error) {
	if err := s.persist(op); err != nil {
		s.log.Error().Err(err).Str("delivery_tag", d.tag).
			Msg("acknowledging failed; the message comes back after the visibility timeout")
	}
	s.forget(d)
}

// giveBack returns a held message to its queue at once (kombu's restore).
func (s *Server) giveBack(d *delivery) {
	if err := s.persist(func(ctx context.Context) error { return s.broker.Requeue(ctx, d.tag) }); err != nil {
		s.log.Error().Err(err).Str("delivery_tag", d.tag).
			Msg("giving a message back failed; it comes back after the visibility timeout")
	}
	s.forget(d)
}

func (s *Server) forget(d *delivery) {
	s.mu.Lock()
	d.state = stateGone
	delete(s.held, d.tag)
	s.mu.Unlock()
}

// persist runs a broker or backend write until it succeeds. It gives up after
// the hard stop (the message then waits for the visibility timeout).
func (s *Server) persist(op func(context.Context) error) error {
	b := newBackoff()
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := op(ctx)
		cancel()
		if err == nil {
			return nil
		}
		s.brokerErrs.log(s.log, err, "redis write failed; retrying")
		if s.hardCtx.Err() != nil && attempt >= 2 {
			return err
		}
		select {
		case <-time.After(b.next()):
		case <-s.hardCtx.Done():
		}
	}
}

// refresh renews the unacked_index score of every held message.
func (s *Server) refresh(ctx context.Context) {
	s.mu.Lock()
	tags := make([]string, 0, len(s.held))
	for tag := range s.held {
		tags = append(tags, tag)
	}
	s.mu.Unlock()
	for len(tags) > 0 {
		n := min(len(tags), 500)
		if err := s.broker.Refresh(ctx, tags[:n]); err != nil && ctx.Err() == nil {
			s.brokerErrs.log(s.log, err, "refreshing held messages failed")
			return
		}
		tags = tags[n:]
	}
}

// restore gives back messages of dead workers, like kombu's restore_visible.
func (s *Server) restore(ctx context.Context) {
	n, err := s.broker.RestoreVisible(ctx)
	if err != nil && ctx.Err() == nil {
		s.brokerErrs.log(s.log, err, "restoring unacknowledged messages failed")
		return
	}
	if n > 0 {
		s.log.Warn().Int("messages", n).Dur("visibility_timeout", s.cfg.VisibilityTimeout).
			Msg("restored messages of a worker that stopped acknowledging them")
	}
}

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
