package celery

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Signature is a Celery signature as it travels inside messages (a
// callback, an errback, a chain step, a chord body): kombu serializes
// celery.canvas.Signature, a dict, as this JSON object.
type Signature struct {
	Task        string                     `json:"task"`
	Args        []json.RawMessage          `json:"args"`
	Kwargs      map[string]json.RawMessage `json:"kwargs"`
	Options     map[string]json.RawMessage `json:"options"`
	SubtaskType *string                    `json:"subtask_type"`
	Immutable   bool                       `json:"immutable"`
	ChordSize   *int                       `json:"chord_size"`
}

// ParseSignature reads a signature; only plain task signatures
// (subtask_type null) are supported.
func ParseSignature(raw json.RawMessage) (*Signature, error) {
	var s Signature
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("parse signature: %w", err)
	}
	if s.SubtaskType != nil && *s.SubtaskType != "" {
		return nil, fmt.Errorf("signature of type %q (a nested %s) is not supported", *s.SubtaskType, *s.SubtaskType)
	}
	if s.Task == "" {
		return nil, fmt.Errorf("parse signature: no task name")
	}
	return &s, nil
}

// Option decodes one of the signature's options into v and reports whether
// it was set (and not null).
func (s *Signature) Option(name string, v any) bool {
	raw, ok := s.Options[name]
	if !ok || strings.TrimSpace(string(raw)) == "null" {
		return false
	}
	return json.Unmarshal(raw, v) == nil
}

// OptionList reads an option that is a signature or a list of them (link,
// link_error), as Celery's maybe_list does.
func (s *Signature) OptionList(name string) []json.RawMessage {
	raw, ok := s.Options[name]
	if !ok {
		return nil
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var one map[string]json.RawMessage
	if json.Unmarshal(raw, &one) == nil {
		return []json.RawMessage{raw}
	}
	return nil
}

// TaskRequest is a task message the worker sends itself (a callback, the
// next step of a chain, a chord body, an errback), as Celery's
// amqp.as_task_v2 builds it.
type TaskRequest struct {
	ID, Task         string
	Args             []json.RawMessage
	Kwargs           map[string]json.RawMessage
	ETA, Expires     time.Time
	GroupID          string
	GroupIndex       *int
	HardLimit        *float64
	SoftLimit        *float64
	RootID, ParentID string
	Origin           string
	IgnoreResult     bool
	Priority         int
	Queue            string
	Embed            Embed
	// ArgsRepr and KwargsRepr are Python's repr() of the arguments (the
	// caller renders them); default: their JSON.
	ArgsRepr, KwargsRepr string
	// ReplyTo is the sending app's id (Celery's app.thread_oid).
	ReplyTo string
}

// EncodeTask renders a protocol 2 message as kombu's Redis transport stores
// it, with a fresh delivery tag.
func EncodeTask(r TaskRequest) ([]byte, error) {
	if r.Args == nil {
		r.Args = []json.RawMessage{}
	}
	if r.Kwargs == nil {
		r.Kwargs = map[string]json.RawMessage{}
	}
	// A chain that ran out is [] (Celery passes the popped list on); no
	// callbacks is null.
	var chain any
	if r.Embed.Chain != nil {
		chain = r.Embed.Chain
	}
	embed := map[string]any{"callbacks": nilIfEmpty(r.Embed.Callbacks), "errbacks": nilIfEmpty(r.Embed.Errbacks),
		"chain": chain, "chord": nil}
	if len(r.Embed.Chord) > 0 {
		embed["chord"] = r.Embed.Chord
	}
	body, err := marshalPlain([]any{r.Args, r.Kwargs, embed})
	if err != nil {
		return nil, fmt.Errorf("encode task body: %w", err)
	}
	rootID := r.RootID
	if rootID == "" {
		rootID = r.ID
	}
	argsRepr, kwargsRepr := []byte(r.ArgsRepr), []byte(r.KwargsRepr)
	if r.ArgsRepr == "" {
		argsRepr, _ = marshalPlain(r.Args)
	}
	if r.KwargsRepr == "" {
		kwargsRepr, _ = marshalPlain(r.Kwargs)
	}
	headers := map[string]any{
		"lang": "py", "task": r.Task, "id": r.ID, "shadow": nil,
		"eta": timeOrNull(r.ETA), "expires": timeOrNull(r.Expires),
		"group": nullIfEmpty(r.GroupID), "group_index": r.GroupIndex, "retries": 0,
		"timelimit": []any{r.HardLimit, r.SoftLimit},
		"root_id":   rootID, "parent_id": nullIfEmpty(r.ParentID),
		"argsrepr": string(argsRepr), "kwargsrepr": string(kwargsRepr),
		"origin": r.Origin, "ignore_result": r.IgnoreResult,
	}
	return marshalPlain(map[string]any{
		"body":             base64.StdEncoding.EncodeToString(body),
		"content-encoding": "utf-8",
		"content-type":     ContentTypeJSON,
		"headers":          headers,
		"properties": map[string]any{
			"correlation_id": r.ID,
			"reply_to":       r.ReplyTo,
			"delivery_mode":  2,
			"delivery_info":  DeliveryInfo{Exchange: "", RoutingKey: r.Queue},
			"priority":       r.Priority,
			"body_encoding":  "base64",
			"delivery_tag":   NewTag(),
		},
	})
}

func nilIfEmpty(v []json.RawMessage) any {
	if len(v) == 0 {
		return nil
	}
	return v
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func timeOrNull(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return FormatTime(t)
}
