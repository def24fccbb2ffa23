package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/time/rate"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// executor runs handlers: Concurrency goroutines take messages from the run
// queue, decode them, hold those with a future eta, run the handler under
// the task's time limit, and hand the outcome to the settler (success,
// failure) or settle it at once (retry, give back).
type executor struct {
	cfg     Config
	h       Handler
	log     zerolog.Logger
	sink    settleSink
	results resultStore
	deadQ   string
	fl      *inflight
	settler *settler
	ev      *events
	canvas  *canvas
	revoked *revocations
	persist *persister
	lost    lostChecker // nil: the broker never loses what it handed over

	active    atomic.Int64
	processed atomic.Int64

	size     atomic.Int64  // running worker goroutines (pool_grow, pool_shrink)
	quit     chan struct{} // one receive ends one worker goroutine
	limitsMu sync.Mutex
	limits   map[string][2]time.Duration // task name -> hard, soft (control time_limit)
	rates    map[string]*rate.Limiter    // task name -> rate limit (control rate_limit)
	totalsMu sync.Mutex
	total    map[string]int // tasks run per name (inspect stats)

	hard       context.Context // cancelled: running handlers are cancelled
	hardCancel context.CancelFunc
	workers    sync.WaitGroup
	etaWG      sync.WaitGroup
}

func (e *executor) start(ctx context.Context) {
	e.hard, e.hardCancel = context.WithCancel(ctx)
	e.persist.setHard(e.hard)
	e.quit = make(chan struct{})
	e.grow(e.cfg.Concurrency)
}

// grow starts n more worker goroutines.
func (e *executor) grow(n int) {
	for range max(n, 0) {
		e.size.Add(1)
		e.workers.Add(1)
		go e.work()
	}
}

// shrink ends n worker goroutines once they are idle, keeping at least one.
func (e *executor) shrink(n int) {
	for range max(n, 0) {
		if e.size.Add(-1) < 1 {
			e.size.Add(1)
			return
		}
		go func() {
			select {
			case e.quit <- struct{}{}:
			case <-e.fl.stopping:
			}
		}()
	}
}

func (e *executor) concurrency() int { return int(e.size.Load()) }

// shutdown stops taking work: messages not started (prefetched, waiting for
// their eta) go back to the queue, with a few attempts each (one that cannot
// be given back is safe in unacked and comes back after the visibility
// timeout); running tasks have until ctx ends (the shutdown deadline), then
// they are cancelled and their messages given back. It returns when no
// handler runs and no eta timer can fire. The fetcher must be stopped first.
func (e *executor) shutdown(ctx context.Context) {
	fl := e.fl
	fl.mu.Lock()
	fl.stopped = true
	close(fl.stopping)
	var giveBack []*delivery
	for _, d := range fl.held {
		if d.state == stateQueued || d.state == stateETA {
			if d.timer != nil && d.timer.Stop() {
				e.etaWG.Done() // its due() will never run
			}
			d.state = stateGone
			giveBack = append(giveBack, d)
		}
	}
	fl.mu.Unlock()
	for _, d := range giveBack {
		e.giveBackTries(ctx, d, giveBackAttempts)
	}

	done := make(chan struct{})
	go func() { e.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	select {
	case <-done:
	default:
		e.log.Warn().Int64("running", e.active.Load()).
			Msg("shutdown deadline reached: cancelling running tasks, their messages go back to the queue")
		e.hardCancel()
		<-done
	}
	e.etaWG.Wait()
}

// giveBackAttempts is how often shutdown tries to give a message back.
const giveBackAttempts = 3

// stopHard cancels what still runs and makes persist give up retrying.
func (e *executor) stopHard() { e.hardCancel() }

func (e *executor) work() {
	defer e.workers.Done()
	fl := e.fl
	for {
		select {
		case d := <-fl.runq:
			if e.dropLost(d, stateQueued) {
				fl.release()
				continue
			}
			fl.mu.Lock()
			if fl.stopped || d.state != stateQueued {
				fl.mu.Unlock()
				fl.release()
				continue
			}
			d.state = stateRunning
			fl.mu.Unlock()
			if !e.prepare(d) {
				continue
			}
			e.active.Add(1)
			e.run(d)
			e.active.Add(-1)
			e.processed.Add(1)
			fl.release()
		case <-fl.stopping:
			return
		case <-e.quit:
			return
		}
	}
}

// prepare decodes a message the first time a worker takes it. It reports
// whether the task should run now; when not, the message was moved to the
// dead list or is held for its eta, and its slot was released.
func (e *executor) prepare(d *delivery) bool {
	if d.msg != nil {
		return true // back from its eta
	}
	fl := e.fl
	msg, err := celery.DecodeMessage(d.raw)
	if err != nil {
		e.log.Error().Err(err).Str("delivery_tag", d.tag).Str("dead_list", e.deadQ).
			Msg("undecodable message; moved to the dead list")
		if err := e.persist.do(func(ctx context.Context) error { return e.sink.DeadLetter(ctx, d.tag, d.raw) }); err != nil {
			e.log.Error().Err(err).Str("delivery_tag", d.tag).Msg("dead-letter failed; the message comes back after the visibility timeout")
		}
		fl.forget(d)
		fl.release()
		return false
	}
	d.msg, d.priority = msg, msg.Priority
	e.ev.taskReceived(msg)
	if wait := time.Until(msg.ETA); !msg.ETA.IsZero() && wait > 0 {
		// Held (and refreshed) until due; it takes no prefetch slot meanwhile.
		fl.mu.Lock()
		if fl.stopped {
			fl.mu.Unlock()
			e.giveBack(d)
			fl.release()
			return false
		}
		d.state = stateETA
		e.etaWG.Add(1)
		d.timer = time.AfterFunc(wait, func() { e.due(d) })
		fl.mu.Unlock()
		fl.release()
		return false
	}
	return true
}

// due moves a message whose eta has come to the run queue.
func (e *executor) due(d *delivery) {
	defer e.etaWG.Done()
	if e.dropLost(d, stateETA) {
		return
	}
	fl := e.fl
	select {
	case fl.tokens <- struct{}{}:
	case <-fl.stopping:
		return // shutdown gives it back
	}
	fl.mu.Lock()
	if d.state != stateETA {
		fl.mu.Unlock()
		fl.release()
		return
	}
	d.state = stateQueued
	fl.mu.Unlock()
	fl.runq <- d
}

// dropLost forgets a message in state want (queued or waiting for its eta)
// that belongs to a lost broker connection: the broker delivers it again,
// and that copy runs. It reports whether it did; the caller releases the
// message's slot, if it has one.
func (e *executor) dropLost(d *delivery, want deliveryState) bool {
	if e.lost == nil || !e.lost.Lost(d.tag) {
		return false
	}
	fl := e.fl
	fl.mu.Lock()
	if d.state != want {
		fl.mu.Unlock()
		return false
	}
	d.state = stateGone
	delete(fl.held, d.tag)
	fl.mu.Unlock()
	e.logLost(d)
	return true
}

// dropLostHeld forgets at once every message not yet started (queued or
// waiting for its eta) that belongs to a lost broker connection, stopping
// eta timers, as Celery's Consumer.on_close clears its timers and reserved
// requests. The fetcher calls it when fetching fails.
func (e *executor) dropLostHeld() {
	if e.lost == nil {
		return
	}
	fl := e.fl
	fl.mu.Lock()
	var waiting []*delivery
	for _, d := range fl.held {
		if d.state == stateQueued || d.state == stateETA {
			waiting = append(waiting, d)
		}
	}
	fl.mu.Unlock()
	for _, d := range waiting {
		if !e.lost.Lost(d.tag) {
			continue
		}
		fl.mu.Lock()
		switch d.state {
		case stateETA:
			if d.timer != nil && d.timer.Stop() {
				e.etaWG.Done() // its due() will never run
			}
		case stateQueued:
			// On the run queue with its slot: the worker that takes it sees
			// it gone and releases the slot.
		default:
			fl.mu.Unlock()
			continue
		}
		d.state = stateGone
		delete(fl.held, d.tag)
		fl.mu.Unlock()
		e.logLost(d)
	}
}

func (e *executor) logLost(d *delivery) {
	ev := e.log.Info().Str("delivery_tag", d.tag)
	if d.msg != nil {
		ev = ev.Str(FieldTaskID, d.msg.ID).Str(FieldTaskName, d.msg.Task)
	}
	ev.Msg("message of a lost broker connection not run: the broker delivers it again")
}

// run processes one message and settles it: ack (through the settler),
// retry, or give back.
func (e *executor) run(d *delivery) {
	m := d.msg
	t := &Task{
		ID: m.ID, Name: m.Task, Args: m.Args, Kwargs: m.Kwargs, Retries: m.Retries,
		ETA: m.ETA, Expires: m.Expires, RootID: m.RootID, ParentID: m.ParentID, GroupID: m.GroupID,
	}
	if t.Kwargs == nil {
		t.Kwargs = map[string]json.RawMessage{}
	}
	t.logger = e.log.With().Str(FieldTaskID, m.ID).Str(FieldTaskName, m.Task).Int(FieldRetries, m.Retries).Logger()

	e.revoked.wait(e.hard)
	if e.revoked.has(m.ID) {
		t.logger.Info().Msg("task revoked before it ran")
		e.ev.task("task-revoked", m, map[string]any{"expired": false, "terminated": false, "signum": nil})
		e.finishRevoked(t, d, "revoked")
		return
	}
	if !m.Expires.IsZero() && time.Now().After(m.Expires) {
		t.logger.Info().Time("expires", m.Expires).Msg("task expired before it ran: revoked")
		e.ev.task("task-revoked", m, map[string]any{"expired": true, "terminated": false, "signum": nil})
		e.finishRevoked(t, d, "expired")
		return
	}
	if e.cfg.TrackStarted {
		e.store(t, m, celery.StateStarted, map[string]any{"pid": pid, "hostname": e.cfg.Hostname}, "")
	}
	e.ev.task("task-started", m, nil)

	if l := e.rateLimit(m.Task); l != nil {
		if err := l.Wait(e.hard); err != nil {
			t.logger.Warn().Msg("task waiting for its rate limit was cancelled by shutdown; message goes back to the queue")
			e.giveBack(d)
			return
		}
	}
	e.count(m.Task)
	ctx, cancel, limit := e.taskContext(m)
	e.fl.mu.Lock()
	d.cancel = cancel
	d.started = time.Now()
	e.fl.mu.Unlock()
	start := time.Now()
	err := e.call(ctx, t)
	runtime := time.Since(start)
	e.fl.mu.Lock()
	terminated := d.terminated
	d.cancel = nil
	e.fl.mu.Unlock()
	if terminated {
		cancel()
		t.logger.Warn().Err(err).Float64("runtime_s", runtime.Seconds()).Msg("task terminated by revoke")
		e.ev.task("task-revoked", m, map[string]any{"expired": false, "terminated": true, "signum": 15})
		e.finishRevoked(t, d, "terminated")
		return
	}
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && e.hard.Err() == nil {
		// The handler has returned (its locks are released): the time limit
		// is the failure, never a retry.
		limit.err = err
		err = &limit
	}
	cancel()

	switch {
	case err == nil:
		result, _ := t.Result()
		t.logger.Info().Float64("runtime_s", runtime.Seconds()).Msg("task succeeded")
		e.ev.task("task-succeeded", m, map[string]any{"result": fmt.Sprint(result), "runtime": runtime.Seconds()})
		e.canvas.onSuccess(t, m, result)
		meta := e.meta(t, m, celery.StateSuccess, result, "")
		if len(m.Embed.Chord) > 0 {
			// The part's result is stored before the chord is joined.
			e.storeNow(t, meta, celery.StateSuccess)
			e.canvas.chordPart(t, m, celery.StateSuccess, result)
		}
		e.settler.settle(d, meta)
		return

	case e.hard.Err() != nil:
		// Cancelled by a hard stop: leave it for another worker.
		t.logger.Warn().Err(err).Msg("task cancelled by shutdown; message goes back to the queue")
		e.giveBack(d)
		return

	default:
		var retry *RetryError
		if errors.As(err, &retry) && !errors.Is(err, SkipRetry) && !errors.As(err, new(*timeLimitError)) {
			max := e.cfg.MaxRetries
			if retry.MaxRetries != nil {
				max = *retry.MaxRetries
			}
			if max < 0 || m.Retries < max {
				e.retry(t, d, retry.Delay, err)
				return
			}
			// As Task.retry does: re-raise the cause, or MaxRetriesExceededError.
			if c := cause(err); c != nil {
				err = c
			} else {
				err = &maxRetriesError{msg: m}
			}
		}
		info := excInfo(err)
		tb := traceback(t, err, info)
		if nr := (*NotRegisteredError)(nil); errors.As(err, &nr) {
			info.ExcMessage = []any{m.Task} // KeyError's str() adds the quotes
		}
		t.logger.Error().Err(err).Str("exc_type", info.ExcType).Float64("runtime_s", runtime.Seconds()).Msg("task failed")
		e.ev.task("task-failed", m, map[string]any{"exception": excInfoRepr(info), "traceback": tb})
		meta := e.meta(t, m, celery.StateFailure, info, tb)
		e.storeNow(t, meta, celery.StateFailure)
		e.canvas.chordPart(t, m, celery.StateFailure, info)
		e.canvas.onFailure(t, m, info, tb)
		e.settler.settle(d, meta)
	}
}

// maxRetriesError is Celery's MaxRetriesExceededError, raised by
// Task.retry when the task has no cause to re-raise.
type maxRetriesError struct {
	msg *celery.TaskMessage
}

func (e *maxRetriesError) Error() string {
	return fmt.Sprintf("Can't retry %s[%s] args:%s kwargs:%s",
		e.msg.Task, e.msg.ID, pyReprArgs(e.msg.Args), pyReprKwargs(e.msg.Kwargs))
}

func (e *maxRetriesError) ExcType() string   { return "MaxRetriesExceededError" }
func (e *maxRetriesError) ExcModule() string { return "celery.exceptions" }

// retry re-sends the task with retries+1 and an eta, then records RETRY;
// the new message replaces the old one atomically.
func (e *executor) retry(t *Task, d *delivery, delay time.Duration, cause error) {
	eta := time.Now().Add(delay)
	raw, err := celery.RetryEnvelope(d.raw, d.msg.Retries+1, eta, celery.NewTag())
	if err != nil {
		// Cannot happen for a message we decoded; fail rather than loop.
		t.logger.Error().Err(err).Msg("cannot build retry message")
		e.store(t, d.msg, celery.StateFailure, excInfo(cause), traceback(t, cause, excInfo(cause)))
		e.finish(d, func(ctx context.Context) error { return e.sink.Ack(ctx, d.tag) })
		return
	}
	info := excInfo(cause)
	tb := traceback(t, cause, info)
	t.logger.Warn().Err(cause).Dur("countdown", delay).Msg("task will be retried")
	e.store(t, d.msg, celery.StateRetry, info, tb)
	e.ev.task("task-retried", d.msg, map[string]any{"exception": excInfoRepr(info), "traceback": tb})
	e.finish(d, func(ctx context.Context) error {
		return e.sink.Republish(ctx, d.tag, raw, d.priority)
	})
}

// taskContext is the handler's context: cancelled by a hard stop, with the
// task's time limit (the smaller of soft and hard) as its deadline. The
// returned timeLimitError says which limit that is.
func (e *executor) taskContext(m *celery.TaskMessage) (context.Context, context.CancelFunc, timeLimitError) {
	hard, soft := m.HardLimit, m.SoftLimit
	if hard == 0 && soft == 0 {
		e.limitsMu.Lock()
		l, set := e.limits[m.Task]
		e.limitsMu.Unlock()
		if set {
			hard, soft = l[0], l[1]
		} else {
			hard = e.cfg.DefaultTimeLimit
		}
	}
	limit := timeLimitError{limit: hard}
	if soft > 0 && (hard == 0 || soft < hard) {
		limit = timeLimitError{soft: true, limit: soft}
	}
	if limit.limit > 0 {
		ctx, cancel := context.WithTimeout(e.hard, limit.limit)
		return ctx, cancel, limit
	}
	ctx, cancel := context.WithCancel(e.hard)
	return ctx, cancel, limit
}

// call runs the handler, turning a panic into a *PanicError with the stack.
func (e *executor) call(ctx context.Context, t *Task) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return e.h.ProcessTask(ctx, t)
}

// meta builds the encoded result document for a state, or nil when the
// task ignores results.
func (e *executor) meta(t *Task, m *celery.TaskMessage, state celery.State, result any, tb string) *celery.EncodedResult {
	if m.IgnoreResult {
		return nil
	}
	meta := celery.NewResultMeta(m.ID, state, result, tb, time.Now())
	meta.GroupID, meta.ParentID = m.GroupID, m.ParentID
	if e.cfg.ResultExtended {
		meta.Extended = extended(e.cfg.Hostname, m)
	}
	raw, err := meta.Encode()
	if err != nil {
		// A result that does not marshal is the handler's bug: report it as the failure.
		t.logger.Error().Err(err).Msg("task result is not JSON; storing a failure instead")
		info := celery.ExceptionInfo{ExcType: "EncodeError", ExcModule: "kombu.exceptions", ExcMessage: []any{err.Error()}}
		raw, _ = celery.NewResultMeta(m.ID, celery.StateFailure, info, "", time.Now()).Encode()
	}
	return &celery.EncodedResult{TaskID: m.ID, Raw: raw, Request: meta.Extended}
}

// extended is what result_extended adds to a stored state.
func extended(hostname string, m *celery.TaskMessage) *celery.Extended {
	x := &celery.Extended{Name: m.Task, Args: m.Args, Kwargs: m.Kwargs, Worker: hostname, Retries: m.Retries,
		ArgsRepr: m.ArgsRepr, KwargsRepr: m.KwargsRepr, PeriodicTaskName: m.PeriodicTaskName}
	if x.Args == nil {
		x.Args = []json.RawMessage{}
	}
	if x.Kwargs == nil {
		x.Kwargs = map[string]json.RawMessage{}
	}
	if m.RoutingKey != "" {
		x.Queue = &m.RoutingKey
	}
	return x
}

// terminate cancels the running tasks with these ids (revoke with
// terminate=True) and returns the ids it found running.
func (e *executor) terminate(ids []string) []string {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var found []string
	e.fl.mu.Lock()
	defer e.fl.mu.Unlock()
	for _, d := range e.fl.held {
		if d.state == stateRunning && d.msg != nil && want[d.msg.ID] && d.cancel != nil && !d.terminated {
			d.terminated = true
			d.cancel()
			found = append(found, d.msg.ID)
		}
	}
	return found
}

// finishRevoked records REVOKED with Celery's reason (revoked, expired,
// terminated), joins the chord part, and acknowledges the message.
func (e *executor) finishRevoked(t *Task, d *delivery, reason string) {
	info := celery.ExceptionInfo{ExcType: "TaskRevokedError", ExcMessage: []any{reason}, ExcModule: "celery.exceptions"}
	meta := e.meta(t, d.msg, celery.StateRevoked, info, "")
	if len(d.msg.Embed.Chord) > 0 {
		e.storeNow(t, meta, celery.StateRevoked)
		e.canvas.chordPart(t, d.msg, celery.StateRevoked, info)
	}
	e.settler.settle(d, meta)
}

// storeNow writes an encoded state at once (when what follows must see it).
func (e *executor) storeNow(t *Task, meta *celery.EncodedResult, state celery.State) {
	if meta == nil {
		return
	}
	if err := e.persist.do(func(ctx context.Context) error {
		return e.results.StoreMany(ctx, []celery.EncodedResult{*meta})
	}); err != nil {
		t.logger.Error().Err(err).Str("state", string(state)).Str("result_backend", redactURL(e.cfg.ResultBackendURL)).
			Msg("storing the task state failed")
	}
}

// store writes a state to the result backend now, unless the task ignores results.
func (e *executor) store(t *Task, m *celery.TaskMessage, state celery.State, result any, tb string) {
	e.storeNow(t, e.meta(t, m, state, result, tb), state)
}

// finish settles a message (ack or republish) and forgets it.
func (e *executor) finish(d *delivery, op func(context.Context) error) {
	if err := e.persist.do(op); err != nil {
		e.log.Error().Err(err).Str("delivery_tag", d.tag).
			Msg("acknowledging failed; the message comes back after the visibility timeout")
	}
	e.fl.forget(d)
}

// giveBack returns a held message to its queue at once (kombu's restore).
func (e *executor) giveBack(d *delivery) { e.giveBackTries(context.Background(), d, 0) }

// giveBackTries is giveBack with at most attempts attempts (0: until the
// hard stop), giving up when ctx ends.
func (e *executor) giveBackTries(ctx context.Context, d *delivery, attempts int) {
	if err := e.persist.try(ctx, attempts, func(ctx context.Context) error { return e.sink.Requeue(ctx, d.tag) }); err != nil {
		e.log.Error().Err(err).Str("delivery_tag", d.tag).
			Msg("giving a message back failed; it comes back after the visibility timeout")
	}
	e.fl.forget(d)
}
