package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker/internal/amqpbroker"
	"github.com/midsummer/certmgr/worker/internal/celery"
	"github.com/midsummer/certmgr/worker/internal/redisbroker"
)

// Server consumes a Celery queue and runs a Handler for each task. It is
// made of parts, one file each, that share the inflight ledger:
//
//   - fetcher (fetcher.go): takes messages while there are free slots;
//   - executor (executor.go): decodes, holds eta messages, runs handlers,
//     retries, gives messages back;
//   - settler (settler.go): stores results and acknowledges in batches;
//   - maintenance (maintenance.go): lease refresh, restore of dead workers'
//     messages, heartbeat;
//   - controller (control.go): remote control on the pidbox.
//
// Start launches them; Stop stops them gracefully (see Stop for the order).
type Server struct {
	cfg     Config
	log     zerolog.Logger
	broker  transport
	backend backend
	errs    *rateLimited

	fl      *inflight
	revoked *revocations
	ev      *events
	fetch   *fetcher
	exec    *executor
	settle  *settler
	maint   *maintenance
	control *controller

	mu       sync.Mutex
	started  bool
	stopped  bool
	stopErr  error
	stopDone chan struct{}
	running  bool // inside Run, which stops on shutdownReq

	shutdownOnce sync.Once
	shutdownReq  chan struct{} // closed by control.shutdown
}

// NewServer checks cfg and prepares a server; it does not connect.
func NewServer(cfg Config, h Handler) (*Server, error) {
	opts, err := redisbroker.ParseOptions("CELERY_BROKER_TRANSPORT_OPTIONS", cfg.BrokerTransportOptions)
	if err != nil {
		return nil, fmt.Errorf("worker broker: %w", err)
	}
	if opts.VisibilityTimeout > 0 {
		cfg.VisibilityTimeout = opts.VisibilityTimeout // kombu reads it from here
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("worker: nil handler")
	}
	if amqpbroker.IsURL(cfg.BrokerURL) {
		return newAMQPServer(cfg, h)
	}
	broker, err := redisbroker.New(redisbroker.Config{
		URL: cfg.BrokerURL, Queue: cfg.Queue, VisibilityTimeout: cfg.VisibilityTimeout, MutexTTL: cfg.RestoreMutexTTL,
		Options: opts, MaxMessageBytes: max(cfg.MaxMessageBytes, 0),
	})
	if err != nil {
		return nil, fmt.Errorf("worker broker: %w", err)
	}
	results, err := newResultBackend(cfg)
	if err != nil {
		broker.Close()
		return nil, fmt.Errorf("worker result backend: %w", err)
	}
	var atomic storeAcker
	if cfg.ResultBackendURL == cfg.BrokerURL {
		atomic = broker
	}
	return newServer(cfg, h, broker, results, atomic), nil
}

// newServer wires the parts around a broker and a result backend.
func newServer(cfg Config, h Handler, broker transport, results backend, atomic storeAcker) *Server {
	log := cfg.Logger.With().Str(FieldComponent, "worker").Logger()
	errs := newRateLimited(10 * time.Second)
	s := &Server{
		cfg: cfg, log: log, broker: broker, backend: results, errs: errs,
		fl:          newInflight(cfg.Concurrency + cfg.Prefetch),
		stopDone:    make(chan struct{}),
		shutdownReq: make(chan struct{}),
	}
	persist := newPersister(log, errs)
	s.ev = &events{hostname: cfg.Hostname, freq: cfg.HeartbeatInterval, mb: broker, log: log, errs: errs}
	s.ev.taskEvents.Store(cfg.SendTaskEvents)
	s.settle = &settler{
		sink: broker, results: results, atomic: atomic, expires: cfg.ResultExpires,
		fl: s.fl, persist: persist, log: log, backendName: redactURL(cfg.ResultBackendURL),
	}
	cv := &canvas{
		pub: broker, results: results, defaultQueue: cfg.DefaultQueue,
		hostname: cfg.Hostname, oid: celery.NewTag(), persist: persist,
	}
	if j, ok := results.(chordJoiner); ok {
		cv.chords = j
	}
	var store revokeStore
	if rs, ok := broker.(revokeStore); ok {
		store = rs
	}
	s.revoked = newRevocations(cfg.RevokeExpires, store)
	s.exec = &executor{
		cfg: cfg, h: h, log: log, sink: broker, results: results, deadQ: broker.DeadQueue(),
		fl: s.fl, settler: s.settle, ev: s.ev, canvas: cv, revoked: s.revoked, persist: persist,
	}
	if lc, ok := broker.(lostChecker); ok {
		s.exec.lost = lc
	}
	s.ev.stats = func() (int64, int64) { return s.exec.active.Load(), s.exec.processed.Load() }
	s.fetch = &fetcher{src: broker, fl: s.fl, poll: cfg.PollInterval, log: log, errs: errs, lost: s.exec.dropLostHeld,
		size: &sizeGuard{limit: cfg.MaxMessageBytes, deadQ: broker.DeadQueue(), results: results, persist: persist, log: log}}
	s.maint = &maintenance{
		keeper: broker, fl: s.fl, ev: s.ev, revoked: s.revoked, refreshInterval: cfg.RefreshInterval,
		restoreInterval: cfg.RestoreInterval, heartbeatInterval: cfg.HeartbeatInterval,
		visibility: cfg.VisibilityTimeout, log: log, errs: errs,
	}
	s.control = &controller{requestShutdown: s.remoteShutdown, cfg: cfg, mb: broker, h: h, ev: s.ev, exec: s.exec, revoked: s.revoked, log: log, errs: errs}
	return s
}

// remoteShutdown is control.shutdown: Run returns after a graceful stop;
// a server driven by Start and Stop stops as if Stop were called.
func (s *Server) remoteShutdown() {
	s.shutdownOnce.Do(func() { close(s.shutdownReq) })
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if !running {
		_ = s.Stop(context.Background())
	}
}

// Hostname is the worker's node name.
func (s *Server) Hostname() string { return s.cfg.Hostname }

// Start connects nothing up front (a broker outage is retried with backoff)
// and launches the worker's parts. Cancelling ctx is a hard stop, like a
// crash: running handlers are cancelled and their messages stay
// unacknowledged until the visibility timeout. Use Stop for a graceful stop.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return errors.New("worker: already started")
	}
	s.started = true
	s.log.Info().Str("queue", s.cfg.Queue).Int("concurrency", s.cfg.Concurrency).
		Str("hostname", s.cfg.Hostname).Msg("worker starting")
	s.exec.start(ctx)
	s.settle.start()
	s.fetch.start(ctx)
	s.maint.start(ctx)
	s.control.start(ctx)
	return nil
}

// Run starts the server, waits for ctx to end and stops it gracefully,
// giving running tasks Config.ShutdownGrace.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	s.running = true
	s.mu.Unlock()
	if err := s.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-s.shutdownReq:
		s.log.Warn().Msg("worker stopping: shutdown requested by remote control")
	}
	return s.Stop(context.Background())
}

// Stop stops the server gracefully and returns when everything has stopped.
// One deadline bounds it: Config.ShutdownGrace, or ctx's end if that comes
// first. Running tasks have until then; at the deadline the hard stop
// cancels those still running (their messages are given back) and makes
// every broker and result backend write give up after a few last attempts
// (lastTries), even when no task runs any more, so a stop during an outage
// ends; what was not settled waits in unacked for the visibility timeout.
// Stop returns ctx's error when ctx ended first. It is idempotent; a second
// call waits for the first.
//
// The order matters and is:
//  1. fetcher: no more fetching (nothing new enters the ledger);
//  2. executor: messages not started (prefetched, waiting for their eta)
//     go back to the queue (a few attempts each); running tasks finish, or
//     are cancelled and given back at the deadline;
//  3. settler: results of finished tasks stored, their messages acknowledged
//     (nothing can hand it work any more);
//  4. executor's hard stop (if the deadline has not come yet): broker
//     writes stop retrying;
//  5. controller and maintenance: they serve and refresh until here, so
//     held messages keep their lease and `inspect` answers while draining;
//  6. worker-offline event, then the connections are closed.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		<-s.stopDone
		return s.stopErr
	}
	s.stopped = true
	started := s.started
	s.mu.Unlock()
	defer close(s.stopDone)
	if !started {
		s.broker.Close()
		s.backend.Close()
		return nil
	}
	deadline, cancel := context.WithTimeout(ctx, s.cfg.ShutdownGrace)
	defer cancel()
	stopAtDeadline := context.AfterFunc(deadline, s.exec.stopHard)
	defer stopAtDeadline()
	s.log.Info().Msg("worker stopping: no more fetching")
	s.fetch.shutdown()
	s.exec.shutdown(deadline)
	s.settle.shutdown()
	s.exec.stopHard()
	s.control.shutdown()
	s.maint.shutdown()
	s.ev.offline()
	s.broker.Close()
	s.backend.Close()
	s.log.Info().Int64("processed", s.exec.processed.Load()).Msg("worker stopped")
	s.stopErr = ctx.Err()
	return s.stopErr
}
