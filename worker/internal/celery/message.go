package celery

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ContentTypeJSON is the only serializer the worker accepts.
const ContentTypeJSON = "application/json"

// Envelope is one message as kombu's Redis transport stores it in a list:
// a JSON object whose body is base64 text.
type Envelope struct {
	Body            string          `json:"body"`
	ContentEncoding string          `json:"content-encoding"`
	ContentType     string          `json:"content-type"`
	Headers         json.RawMessage `json:"headers"` // a JSON object; protocol 2 keeps the task fields here
	Properties      Properties      `json:"properties"`
}

// Properties are the AMQP-like properties kombu keeps beside the body.
type Properties struct {
	CorrelationID string       `json:"correlation_id,omitempty"`
	ReplyTo       string       `json:"reply_to,omitempty"`
	DeliveryMode  int          `json:"delivery_mode,omitempty"`
	Expiration    string       `json:"expiration,omitempty"`
	DeliveryInfo  DeliveryInfo `json:"delivery_info"`
	Priority      int          `json:"priority"`
	BodyEncoding  string       `json:"body_encoding"`
	DeliveryTag   string       `json:"delivery_tag"`
	// PeriodicTaskName is set by django-celery-beat on the tasks it sends.
	PeriodicTaskName string `json:"periodic_task_name,omitempty"`
}

// DeliveryInfo says where a message was published.
type DeliveryInfo struct {
	Exchange   string `json:"exchange"`
	RoutingKey string `json:"routing_key"`
}

// ContentTypeError is returned for a message whose serializer is not JSON
// (pickle above all); its body is never decoded.
type ContentTypeError struct {
	ContentType string
}

func (e *ContentTypeError) Error() string {
	return fmt.Sprintf("content type %q refused: only %s is accepted", e.ContentType, ContentTypeJSON)
}

// ParseEnvelope parses the JSON kombu pushed onto a queue list.
func ParseEnvelope(raw []byte) (*Envelope, error) {
	var env Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("parse envelope: %w", err)
	}
	if env.Properties.DeliveryTag == "" {
		return nil, errors.New("parse envelope: no properties.delivery_tag")
	}
	return &env, nil
}

// DecodedBody checks the content type and returns the body bytes, decoding
// base64 when the envelope says so.
func (e *Envelope) DecodedBody() ([]byte, error) {
	return decodeBody(e.ContentType, e.ContentEncoding, e.Properties.BodyEncoding, e.Body)
}

func decodeBody(contentType, contentEncoding, bodyEncoding, body string) ([]byte, error) {
	ct := strings.TrimSpace(strings.ToLower(contentType))
	if ct != ContentTypeJSON {
		return nil, &ContentTypeError{ContentType: contentType}
	}
	switch ce := strings.ToLower(contentEncoding); ce {
	case "", "utf-8", "utf8":
	default:
		return nil, fmt.Errorf("content encoding %q not supported", contentEncoding)
	}
	switch bodyEncoding {
	case "base64":
		b, err := base64.StdEncoding.DecodeString(body)
		if err != nil {
			return nil, fmt.Errorf("decode base64 body: %w", err)
		}
		return b, nil
	case "":
		return []byte(body), nil
	default:
		return nil, fmt.Errorf("body encoding %q not supported", bodyEncoding)
	}
}

// taskEnvelope is an envelope decoded together with protocol 2 headers, in
// one pass: the worker's hot path.
type taskEnvelope struct {
	Body            string     `json:"body"`
	ContentEncoding string     `json:"content-encoding"`
	ContentType     string     `json:"content-type"`
	Headers         *headersV2 `json:"headers"`
	Properties      Properties `json:"properties"`
}

// DecodeMessage decodes a list entry straight to its task: the same result as
// ParseEnvelope then DecodeTask, with one pass over the envelope.
func DecodeMessage(raw []byte) (*TaskMessage, error) {
	var env taskEnvelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("parse envelope: %w", err)
	}
	if env.Properties.DeliveryTag == "" {
		return nil, errors.New("parse envelope: no properties.delivery_tag")
	}
	body, err := decodeBody(env.ContentType, env.ContentEncoding, env.Properties.BodyEncoding, env.Body)
	if err != nil {
		return nil, err
	}
	var m *TaskMessage
	if env.Headers != nil && env.Headers.Task != "" {
		m, err = decodeV2(env.Headers, body)
	} else {
		m, err = decodeV1(body)
	}
	if err != nil {
		return nil, err
	}
	m.Priority = env.Properties.Priority
	m.RoutingKey = env.Properties.DeliveryInfo.RoutingKey
	m.PeriodicTaskName = env.Properties.PeriodicTaskName
	return m, nil
}

// TaskMessage is a task request, whichever protocol carried it.
type TaskMessage struct {
	Protocol     int    // 1 or 2
	Priority     int    // properties.priority (0-9, 0 served first on Redis)
	RoutingKey   string // properties.delivery_info.routing_key: the queue, for result_extended
	ID           string
	Task         string
	Args         []json.RawMessage
	Kwargs       map[string]json.RawMessage
	Retries      int
	ETA          time.Time // zero: run now
	Expires      time.Time // zero: never
	SoftLimit    time.Duration
	HardLimit    time.Duration
	RootID       string
	ParentID     string
	GroupID      string
	GroupIndex   *int // position in its group (chord header order)
	IgnoreResult bool
	Origin       string
	ArgsRepr     string
	KwargsRepr   string
	// PeriodicTaskName is properties.periodic_task_name (django-celery-beat).
	PeriodicTaskName string
	// Embed is protocol 2's third body element: callbacks, errbacks, chain
	// and chord. Zero for protocol 1.
	Embed Embed
}

// Embed is the canvas a protocol 2 message carries: signatures to apply
// after the task (callbacks on success, errbacks on failure), the rest of
// its chain (last step first, as Celery pops from the end), and the chord
// body its group completes. Signatures are kept as sent.
type Embed struct {
	Callbacks []json.RawMessage `json:"callbacks"`
	Errbacks  []json.RawMessage `json:"errbacks"`
	Chain     []json.RawMessage `json:"chain"`
	Chord     json.RawMessage   `json:"chord"`
}

// TimeLimit is the handler's time budget: the smaller of the soft and hard
// limits that are set, zero when neither is.
func (m *TaskMessage) TimeLimit() time.Duration {
	switch {
	case m.SoftLimit > 0 && m.HardLimit > 0:
		return min(m.SoftLimit, m.HardLimit)
	case m.SoftLimit > 0:
		return m.SoftLimit
	default:
		return m.HardLimit
	}
}

// protocol 2 headers we read; the rest is carried along untouched.
type headersV2 struct {
	Lang         string             `json:"lang"`
	Task         string             `json:"task"` // set: protocol 2
	ID           string             `json:"id"`
	ETA          *string            `json:"eta"`
	Expires      *string            `json:"expires"`
	Group        *string            `json:"group"`
	GroupIndex   *int               `json:"group_index"`
	Retries      *int               `json:"retries"`
	TimeLimit    []*json.RawMessage `json:"timelimit"`
	RootID       *string            `json:"root_id"`
	ParentID     *string            `json:"parent_id"`
	ArgsRepr     *string            `json:"argsrepr"`
	KwargsRepr   *string            `json:"kwargsrepr"`
	Origin       *string            `json:"origin"`
	IgnoreResult *bool              `json:"ignore_result"`
}

// protocol 1 body.
type bodyV1 struct {
	Task      string                     `json:"task"`
	ID        string                     `json:"id"`
	Args      []json.RawMessage          `json:"args"`
	Kwargs    map[string]json.RawMessage `json:"kwargs"`
	Retries   *int                       `json:"retries"`
	ETA       *string                    `json:"eta"`
	Expires   *string                    `json:"expires"`
	TimeLimit []*json.RawMessage         `json:"timelimit"`
	Taskset   *string                    `json:"taskset"`
	Group     *string                    `json:"group"`
}

// DecodeTask reads the task request in an envelope: protocol 2 when the
// headers name the task, protocol 1 otherwise.
func DecodeTask(env *Envelope) (*TaskMessage, error) {
	body, err := env.DecodedBody()
	if err != nil {
		return nil, err
	}
	var h headersV2
	if err := unmarshalNullable(env.Headers, &h); err != nil {
		return nil, fmt.Errorf("parse envelope: %w", err)
	}
	var m *TaskMessage
	if h.Task != "" {
		m, err = decodeV2(&h, body)
	} else {
		m, err = decodeV1(body)
	}
	if err != nil {
		return nil, err
	}
	m.Priority = env.Properties.Priority
	m.RoutingKey = env.Properties.DeliveryInfo.RoutingKey
	return m, nil
}

func decodeV2(h *headersV2, body []byte) (*TaskMessage, error) {
	if h.ID == "" {
		return nil, errors.New("protocol 2 headers: task or id missing")
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(body, &parts); err != nil {
		return nil, fmt.Errorf("protocol 2 body: %w", err)
	}
	if len(parts) < 2 {
		return nil, fmt.Errorf("protocol 2 body: %d elements, want [args, kwargs, embed]", len(parts))
	}
	m := &TaskMessage{Protocol: 2, ID: h.ID, Task: h.Task}
	if err := unmarshalNullable(parts[0], &m.Args); err != nil {
		return nil, fmt.Errorf("protocol 2 args: %w", err)
	}
	if err := unmarshalNullable(parts[1], &m.Kwargs); err != nil {
		return nil, fmt.Errorf("protocol 2 kwargs: %w", err)
	}
	if len(parts) > 2 {
		if err := unmarshalNullable(parts[2], &m.Embed); err != nil {
			return nil, fmt.Errorf("protocol 2 embed: %w", err)
		}
		if string(bytes.TrimSpace(m.Embed.Chord)) == "null" {
			m.Embed.Chord = nil
		}
	}
	if err := m.setSchedule(h.Retries, h.ETA, h.Expires, h.TimeLimit); err != nil {
		return nil, err
	}
	m.RootID = deref(h.RootID)
	m.ParentID = deref(h.ParentID)
	m.GroupID = deref(h.Group)
	m.GroupIndex = h.GroupIndex
	m.Origin = deref(h.Origin)
	m.ArgsRepr = deref(h.ArgsRepr)
	m.KwargsRepr = deref(h.KwargsRepr)
	if h.IgnoreResult != nil {
		m.IgnoreResult = *h.IgnoreResult
	}
	return m, nil
}

// setSchedule reads the fields protocol 1 (body) and 2 (headers) spell alike:
// retries, eta, expires and timelimit.
func (m *TaskMessage) setSchedule(retries *int, eta, expires *string, timelimit []*json.RawMessage) error {
	if retries != nil {
		m.Retries = *retries
	}
	var err error
	if m.ETA, err = parseOptTime(eta); err != nil {
		return fmt.Errorf("eta: %w", err)
	}
	if m.Expires, err = parseOptTime(expires); err != nil {
		return fmt.Errorf("expires: %w", err)
	}
	if m.HardLimit, m.SoftLimit, err = parseTimeLimit(timelimit); err != nil {
		return err
	}
	return nil
}

func decodeV1(body []byte) (*TaskMessage, error) {
	var b bodyV1
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("protocol 1 body: %w", err)
	}
	if b.Task == "" || b.ID == "" {
		return nil, errors.New("protocol 1 body: task or id missing")
	}
	m := &TaskMessage{Protocol: 1, ID: b.ID, Task: b.Task, Args: b.Args, Kwargs: b.Kwargs, RootID: b.ID}
	if err := m.setSchedule(b.Retries, b.ETA, b.Expires, b.TimeLimit); err != nil {
		return nil, err
	}
	m.GroupID = deref(b.Group)
	if m.GroupID == "" {
		m.GroupID = deref(b.Taskset)
	}
	return m, nil
}

func unmarshalNullable(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	return json.Unmarshal(raw, v)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// parseTimeLimit reads Celery's [hard, soft] pair of seconds (numbers or null).
func parseTimeLimit(tl []*json.RawMessage) (hard, soft time.Duration, err error) {
	get := func(i int) (time.Duration, error) {
		if i >= len(tl) || tl[i] == nil || string(*tl[i]) == "null" {
			return 0, nil
		}
		var f float64
		if err := json.Unmarshal(*tl[i], &f); err != nil {
			return 0, fmt.Errorf("timelimit: %w", err)
		}
		if f < 0 || f > 1e9 {
			return 0, fmt.Errorf("timelimit: %v out of range", f)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	if hard, err = get(0); err != nil {
		return 0, 0, err
	}
	if soft, err = get(1); err != nil {
		return 0, 0, err
	}
	return hard, soft, nil
}

// timeLayouts are the ISO-8601 spellings Celery produces (isoformat with and
// without offset; naive times are UTC).
var timeLayouts = []string{
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
}

func parseOptTime(s *string) (time.Time, error) {
	if s == nil || *s == "" {
		return time.Time{}, nil
	}
	return ParseTime(*s)
}

// ParseTime parses a Celery ISO-8601 timestamp; one without an offset is UTC.
func ParseTime(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q is not ISO-8601", s)
}

// FormatTime spells t the way Python's datetime.isoformat does for an aware
// UTC datetime: microseconds and a +00:00 offset.
func FormatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000") + "+00:00"
}

// FormatDateDone spells t as the result backend's date_done: naive UTC.
func FormatDateDone(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000")
}

// RetryEnvelope builds the message Task.retry publishes: the same task, id and
// arguments with retries+1, an eta, and a fresh delivery tag. It keeps every
// other field of the original. A protocol 1 message is rewritten in protocol 1.
func RetryEnvelope(raw []byte, retries int, eta time.Time, deliveryTag string) ([]byte, error) {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("retry envelope: %w", err)
	}
	var headers map[string]json.RawMessage
	if err := unmarshalNullable(env["headers"], &headers); err != nil {
		return nil, fmt.Errorf("retry headers: %w", err)
	}
	etaJSON, _ := json.Marshal(FormatTime(eta))
	retriesJSON := json.RawMessage(strconv.Itoa(retries))
	if _, v2 := headers["task"]; v2 {
		headers["retries"] = retriesJSON
		headers["eta"] = etaJSON
		delete(headers, "redelivered")
	} else {
		var e Envelope
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("retry envelope: %w", err)
		}
		body, err := e.DecodedBody()
		if err != nil {
			return nil, err
		}
		var b map[string]json.RawMessage
		if err := json.Unmarshal(body, &b); err != nil {
			return nil, fmt.Errorf("retry protocol 1 body: %w", err)
		}
		b["retries"] = retriesJSON
		b["eta"] = etaJSON
		nb, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		env["body"], _ = json.Marshal(base64.StdEncoding.EncodeToString(nb))
		var props map[string]json.RawMessage
		_ = unmarshalNullable(env["properties"], &props)
		if props == nil {
			props = map[string]json.RawMessage{}
		}
		props["body_encoding"] = json.RawMessage(`"base64"`)
		env["properties"], _ = json.Marshal(props)
	}
	if headers == nil {
		headers = map[string]json.RawMessage{}
	}
	var err error
	if env["headers"], err = json.Marshal(headers); err != nil {
		return nil, err
	}
	var props map[string]json.RawMessage
	if err := unmarshalNullable(env["properties"], &props); err != nil || props == nil {
		return nil, fmt.Errorf("retry properties: %w", errors.Join(err, errors.New("missing")))
	}
	props["delivery_tag"], _ = json.Marshal(deliveryTag)
	if di, ok := props["delivery_info"]; ok {
		var m map[string]json.RawMessage
		if json.Unmarshal(di, &m) == nil && m != nil {
			delete(m, "redelivered")
			props["delivery_info"], _ = json.Marshal(m)
		}
	}
	if env["properties"], err = json.Marshal(props); err != nil {
		return nil, err
	}
	return json.Marshal(env)
}

// MarkRedelivered sets headers.redelivered and properties.delivery_info.redelivered,
// as kombu does when it restores an unacknowledged message.
func MarkRedelivered(raw []byte) ([]byte, error) {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("redelivered: %w", err)
	}
	var headers map[string]json.RawMessage
	if unmarshalNullable(env["headers"], &headers) == nil && headers != nil {
		headers["redelivered"] = json.RawMessage("true")
		env["headers"], _ = json.Marshal(headers)
	}
	var props map[string]json.RawMessage
	if unmarshalNullable(env["properties"], &props) == nil && props != nil {
		var di map[string]json.RawMessage
		if unmarshalNullable(props["delivery_info"], &di) == nil && di != nil {
			di["redelivered"] = json.RawMessage("true")
			props["delivery_info"], _ = json.Marshal(di)
			env["properties"], _ = json.Marshal(props)
		}
	}
	return json.Marshal(env)
}

// QueueForPriority is the list kombu's Redis transport uses for a priority:
// steps 0, 3, 6, 9, the step appended after the separator "\x06\x16".
func QueueForPriority(queue string, priority int) string {
	step := 0
	for _, s := range PrioritySteps {
		if priority >= s {
			step = s
		}
	}
	// kombu takes the highest step at or below the priority:
	// 0-2 -> 0, 3-5 -> 3, 6-8 -> 6, 9 -> 9.
	if step == 0 {
		return queue
	}
	return queue + PrioritySep + strconv.Itoa(step)
}

// PrioritySep and PrioritySteps are kombu's Redis priority emulation.
const PrioritySep = "\x06\x16"

// PrioritySteps are served in this order: 0 first.
var PrioritySteps = []int{0, 3, 6, 9}

// PriorityQueues lists a queue's lists in the order they are served.
func PriorityQueues(queue string) []string {
	qs := make([]string, 0, len(PrioritySteps))
	for _, s := range PrioritySteps {
		qs = append(qs, QueueForPriority(queue, s))
	}
	return qs
}
