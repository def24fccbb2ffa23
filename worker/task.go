package worker

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// Log field names the worker puts on every task's logger.
const (
	FieldComponent = "component"
	FieldTaskID    = "task_id"
	FieldTaskName  = "task"
	FieldRetries   = "retries"
)

// Task is one Celery task request.
type Task struct {
	ID       string                     // Celery task id (a UUID)
	Name     string                     // registered task name, e.g. tenant.tasks.issue_custom_domain_task
	Args     []json.RawMessage          // positional arguments, as JSON
	Kwargs   map[string]json.RawMessage // keyword arguments, as JSON
	Retries  int                        // how many times it was retried before
	ETA      time.Time                  // when it was due; zero when sent for now
	Expires  time.Time                  // after this it is revoked unrun; zero: never
	RootID   string                     // id of the first task of the workflow
	ParentID string                     // id of the task that sent this one
	GroupID  string                     // group id, when in a group

	logger    zerolog.Logger
	result    any
	hasResult bool
}

// NewTask builds a Task, for tests of handlers and for running a handler
// outside the worker (a command line mirroring a task). Arguments are
// marshalled to JSON as Celery would send them.
func NewTask(name string, args []any, kwargs map[string]any) (*Task, error) {
	t := &Task{Name: name, logger: zerolog.Nop(), Kwargs: map[string]json.RawMessage{}}
	for i, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("marshal arg %d: %w", i, err)
		}
		t.Args = append(t.Args, b)
	}
	for k, v := range kwargs {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("marshal kwarg %s: %w", k, err)
		}
		t.Kwargs[k] = b
	}
	return t, nil
}

// Logger is the task's logger: the server's logger with task_id and task.
func (t *Task) Logger() *zerolog.Logger { return &t.logger }

// WithLogger replaces the task's logger (middleware adds fields this way).
func (t *Task) WithLogger(l zerolog.Logger) { t.logger = l }

// SetResult sets the value stored as the task's result on success. It must
// marshal to JSON. Without a call the result is null.
func (t *Task) SetResult(v any) {
	t.result = v
	t.hasResult = true
}

// Result returns what SetResult was given.
func (t *Task) Result() (any, bool) { return t.result, t.hasResult }

// Arg decodes positional argument i into v. A missing argument is an error
// that fails the task (Celery would raise TypeError).
func (t *Task) Arg(i int, v any) error {
	if i < 0 || i >= len(t.Args) {
		return Fail("TypeError", fmt.Errorf("%s takes argument %d, got %d arguments", t.Name, i+1, len(t.Args)))
	}
	if err := json.Unmarshal(t.Args[i], v); err != nil {
		return Fail("TypeError", fmt.Errorf("%s argument %d: %w", t.Name, i+1, err))
	}
	return nil
}

// Kwarg decodes keyword argument name into v and reports whether it was sent.
func (t *Task) Kwarg(name string, v any) (bool, error) {
	raw, ok := t.Kwargs[name]
	if !ok || string(raw) == "null" {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, Fail("TypeError", fmt.Errorf("%s keyword argument %s: %w", t.Name, name, err))
	}
	return true, nil
}
