package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// SkipRetry in an error's chain makes the task fail now even when the chain
// also asks for a retry (a wrapped RetryAfter from a lower layer).
//
//lint:ignore ST1012 asynq's name for the same sentinel (STYLE.md habit 7)
var SkipRetry = errors.New("skip retry")

// RetryError asks for the task to be sent again after Delay, as Celery's
// Task.retry(countdown=...) does. Wrap it with the cause:
// fmt.Errorf("%w: %w", worker.RetryAfter(d), err).
//
// After the last allowed retry the task fails as Celery's Task.retry makes
// it fail: with the cause's exc_type and message when there is a cause, with
// MaxRetriesExceededError otherwise.
type RetryError struct {
	Delay time.Duration
	// MaxRetries, when set, replaces Config.MaxRetries for this task, as
	// Celery's per-task max_retries or retry(max_retries=...) do; negative:
	// unlimited.
	MaxRetries *int
}

// RetryAfter returns an error that retries the task after d.
func RetryAfter(d time.Duration) error { return &RetryError{Delay: max(d, 0)} }

// RetryAfterMax is RetryAfter with the task's own retry limit.
func RetryAfterMax(d time.Duration, maxRetries int) error {
	return &RetryError{Delay: max(d, 0), MaxRetries: &maxRetries}
}

func (e *RetryError) Error() string { return "retry in " + e.Delay.String() }

// ExcTyper is implemented by errors that choose the exc_type a Python caller
// sees in the FAILURE result (DNSNotVerified, DomainRejected, ...).
type ExcTyper interface {
	ExcType() string
}

// ExcModuler optionally names the Python module of the exception class. When
// the module is not importable on the Python side, Celery makes up a class of
// that name, which `except` can't name but `type(e).__name__` can.
type ExcModuler interface {
	ExcModule() string
}

// TaskError gives an error an exc_type.
type TaskError struct {
	Type   string // exc_type, e.g. "DNSNotVerified"
	Module string // exc_module; default "certmgr"
	Err    error
}

// Fail wraps err so the task fails with exc_type excType.
func Fail(excType string, err error) error {
	return &TaskError{Type: excType, Err: err}
}

func (e *TaskError) Error() string {
	if e.Err == nil {
		return e.Type
	}
	return e.Err.Error()
}

func (e *TaskError) Unwrap() error { return e.Err }

// ExcType implements ExcTyper.
func (e *TaskError) ExcType() string { return e.Type }

// ExcModule implements ExcModuler.
func (e *TaskError) ExcModule() string {
	if e.Module != "" {
		return e.Module
	}
	return defaultExcModule(e.Type)
}

// NotRegisteredError is returned for a task name nothing handles; Python sees
// celery.exceptions.NotRegistered.
type NotRegisteredError struct {
	Name string
}

func (e *NotRegisteredError) Error() string { return "task not registered: " + strconv.Quote(e.Name) }

// ExcType implements ExcTyper.
func (e *NotRegisteredError) ExcType() string { return "NotRegistered" }

// ExcModule implements ExcModuler.
func (e *NotRegisteredError) ExcModule() string { return "celery.exceptions" }

// PanicError is a handler panic turned into a task failure.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// ExcType implements ExcTyper.
func (e *PanicError) ExcType() string { return "PanicError" }

// pythonBuiltins are exception types Python resolves in module builtins.
var pythonBuiltins = map[string]bool{
	"Exception": true, "ValueError": true, "TypeError": true, "KeyError": true,
	"LookupError": true, "RuntimeError": true, "TimeoutError": true,
	"ConnectionError": true, "PermissionError": true, "NotImplementedError": true,
}

func defaultExcModule(excType string) string {
	if pythonBuiltins[excType] {
		return "builtins"
	}
	return "certmgr"
}

// cause strips the worker's steering errors (SkipRetry, RetryError) off an
// error built as fmt.Errorf("%w: %w", steer, cause), so that what a person
// reads is the task's own error. It returns nil when nothing else is left.
func cause(err error) error {
	if err == nil || err == SkipRetry {
		return nil
	}
	if _, ok := err.(*RetryError); ok {
		return nil
	}
	multi, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return err
	}
	var rest []error
	steered := false
	for _, e := range multi.Unwrap() {
		if c := cause(e); c != nil {
			rest = append(rest, c)
		} else {
			steered = true
		}
	}
	switch {
	case !steered:
		return err
	case len(rest) == 0:
		return nil
	case len(rest) == 1:
		return rest[0]
	default:
		return errors.Join(rest...)
	}
}

// excInfo is the serialized exception stored for err.
func excInfo(err error) celery.ExceptionInfo {
	if c := cause(err); c != nil {
		err = c
	}
	info := celery.ExceptionInfo{ExcType: "Exception", ExcModule: "builtins", ExcMessage: []any{err.Error()}}
	var typer ExcTyper
	if errors.As(err, &typer) && typer.ExcType() != "" {
		info.ExcType = typer.ExcType()
		info.ExcModule = defaultExcModule(info.ExcType)
		var mod ExcModuler
		if errors.As(err, &mod) && mod.ExcModule() != "" {
			info.ExcModule = mod.ExcModule()
		}
	}
	var tl *timeLimitError
	if errors.As(err, &tl) {
		info = tl.info()
	}
	return info
}

// timeLimitError is a handler stopped by its task's time limit. Celery
// records billiard's TimeLimitExceeded(hard) for the hard limit and
// SoftTimeLimitExceeded() for the soft one (when the task does not catch it).
type timeLimitError struct {
	soft  bool
	limit time.Duration
	err   error // what the handler returned
}

func (e *timeLimitError) Error() string {
	if e.soft {
		return "SoftTimeLimitExceeded()"
	}
	return "TimeLimitExceeded(" + pySeconds(e.limit) + ",)"
}

func (e *timeLimitError) Unwrap() error { return e.err }

func (e *timeLimitError) info() celery.ExceptionInfo {
	if e.soft {
		return celery.ExceptionInfo{ExcType: "SoftTimeLimitExceeded", ExcModule: "billiard.exceptions", ExcMessage: []any{}}
	}
	return celery.ExceptionInfo{ExcType: "TimeLimitExceeded", ExcModule: "billiard.exceptions", ExcMessage: []any{json.Number(pySeconds(e.limit))}}
}

// pySeconds renders a limit as Python prints the number it was sent as.
func pySeconds(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10)
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

// traceback renders the text stored in the result's traceback field.
func traceback(t *Task, err error, info celery.ExceptionInfo) string {
	s := "Traceback (most recent call last):\n  certmgr worker (Go), task " + t.Name + "[" + t.ID + "]\n"
	var pe *PanicError
	if errors.As(err, &pe) {
		s += string(pe.Stack)
		if len(pe.Stack) > 0 && pe.Stack[len(pe.Stack)-1] != '\n' {
			s += "\n"
		}
	}
	msg := err.Error()
	if c := cause(err); c != nil {
		msg = c.Error()
	}
	return s + info.ExcType + ": " + msg + "\n"
}
