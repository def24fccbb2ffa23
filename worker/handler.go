package worker

import (
	"context"
	"slices"
	"sync"
)

// Handler processes one task. It returns nil on success (the task's result is
// what it passed to Task.SetResult), RetryAfter(d) to be retried later, or any
// other error to fail the task. Handlers return errors; they do not log them:
// the Server reports every outcome in one place.
type Handler interface {
	ProcessTask(ctx context.Context, t *Task) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, t *Task) error

// ProcessTask calls f(ctx, t).
func (f HandlerFunc) ProcessTask(ctx context.Context, t *Task) error { return f(ctx, t) }

// Middleware wraps a Handler, as net/http middleware wraps an http.Handler.
type Middleware func(Handler) Handler

// ServeMux routes tasks to handlers by Celery task name. A task whose name has
// no handler fails with NotRegistered, as in Python Celery.
type ServeMux struct {
	mu       sync.RWMutex
	handlers map[string]Handler
	mws      []Middleware
}

// NewServeMux returns an empty ServeMux.
func NewServeMux() *ServeMux {
	return &ServeMux{handlers: map[string]Handler{}}
}

// Handle registers h for the task name. It panics when name is empty, h is
// nil or name already has a handler.
func (m *ServeMux) Handle(name string, h Handler) {
	if name == "" {
		panic("worker: empty task name")
	}
	if h == nil {
		panic("worker: nil handler for " + name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.handlers[name]; dup {
		panic("worker: multiple registrations for task " + name)
	}
	m.handlers[name] = h
}

// HandleFunc registers a function for the task name.
func (m *ServeMux) HandleFunc(name string, f func(context.Context, *Task) error) {
	m.Handle(name, HandlerFunc(f))
}

// Use appends middleware; the first one added is the outermost. It applies to
// every task the mux dispatches, registered before or after the call.
func (m *ServeMux) Use(mws ...Middleware) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mws = append(m.mws, mws...)
}

// Handler returns the handler registered for name, wrapped in the middleware,
// and whether there is one.
func (m *ServeMux) Handler(name string) (Handler, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	h, ok := m.handlers[name]
	if !ok {
		return nil, false
	}
	for _, mw := range slices.Backward(m.mws) {
		h = mw(h)
	}
	return h, true
}

// Names lists the registered task names, sorted.
func (m *ServeMux) Names() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	names := make([]string, 0, len(m.handlers))
	for n := range m.handlers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ProcessTask dispatches t to the handler registered for t.Name, or returns a
// *NotRegisteredError.
func (m *ServeMux) ProcessTask(ctx context.Context, t *Task) error {
	h, ok := m.Handler(t.Name)
	if !ok {
		return &NotRegisteredError{Name: t.Name}
	}
	return h.ProcessTask(ctx, t)
}

// PingTask is the built-in task probes and benchmarks send.
const PingTask = "certmgr.ping"

// RegisterBuiltins registers certmgr's own tasks on mux: certmgr.ping, which
// returns "pong".
func RegisterBuiltins(mux *ServeMux) {
	mux.HandleFunc(PingTask, func(_ context.Context, t *Task) error {
		t.SetResult("pong")
		return nil
	})
}
