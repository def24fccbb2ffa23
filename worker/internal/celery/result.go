package celery

import (
	"bytes"
	"encoding/json"
	"time"
)

// State is a Celery task state as stored by the result backend.
type State string

// The states the worker stores.
const (
	StatePending State = "PENDING"
	StateStarted State = "STARTED"
	StateRetry   State = "RETRY"
	StateSuccess State = "SUCCESS"
	StateFailure State = "FAILURE"
	StateRevoked State = "REVOKED"
)

// Ready tells whether the state is final (Celery's READY_STATES).
func (s State) Ready() bool {
	return s == StateSuccess || s == StateFailure || s == StateRevoked
}

// ResultKeyPrefix prefixes the result backend's keys and channels.
const ResultKeyPrefix = "celery-task-meta-"

// ExceptionInfo is a serialized exception as the JSON result backend stores it.
// Python's AsyncResult rebuilds an exception of class exc_type from it.
type ExceptionInfo struct {
	ExcType    string `json:"exc_type"`
	ExcMessage []any  `json:"exc_message"`
	ExcModule  string `json:"exc_module"`
}

// ResultMeta is the document stored under celery-task-meta-<id>, field order
// as Celery writes it.
type ResultMeta struct {
	Status    State   `json:"status"`
	Result    any     `json:"result"`
	Traceback *string `json:"traceback"`
	Children  []any   `json:"children"`
	DateDone  *string `json:"date_done"`
	GroupID   string  `json:"group_id,omitempty"`
	ParentID  string  `json:"parent_id,omitempty"`
	*Extended
	TaskID string `json:"task_id"`
}

// Extended are the request fields Celery adds to every stored state when
// result_extended is on.
type Extended struct {
	Name    string                     `json:"name"`
	Args    []json.RawMessage          `json:"args"`
	Kwargs  map[string]json.RawMessage `json:"kwargs"`
	Worker  string                     `json:"worker"`
	Retries int                        `json:"retries"`
	Queue   *string                    `json:"queue"`
	// ArgsRepr and KwargsRepr are the message's argsrepr and kwargsrepr
	// headers ("" when absent), and PeriodicTaskName its
	// periodic_task_name property (django-celery-beat's): not part of the
	// stored document, but what django-celery-results keeps in task_args,
	// task_kwargs and periodic_task_name.
	ArgsRepr         string `json:"-"`
	KwargsRepr       string `json:"-"`
	PeriodicTaskName string `json:"-"`
}

// NewResultMeta builds the document for a state; date_done is set for final
// states only, as Celery does.
func NewResultMeta(taskID string, state State, result any, traceback string, now time.Time) ResultMeta {
	m := ResultMeta{Status: state, Result: result, Children: []any{}, TaskID: taskID}
	if traceback != "" {
		m.Traceback = &traceback
	}
	if state.Ready() {
		d := FormatDateDone(now)
		m.DateDone = &d
	}
	return m
}

// Encode renders the document as JSON without HTML escaping.
func (m ResultMeta) Encode() ([]byte, error) {
	return marshalPlain(m)
}

func marshalPlain(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// GroupKeyPrefix prefixes the result backend's group (and chord) keys.
const GroupKeyPrefix = "celery-taskset-meta-"
