package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// canvas does what a finished task's message asks for next, as Celery 5.2's
// worker does (celery/app/trace.py and backends/base.py): on success it
// applies the link callbacks with the result as first argument and the next
// chain step; on failure it marks the rest of the chain failed and applies
// the link_error errbacks with the task's id; a chord header part adds its
// result to the chord's join set and the last part applies the body.
type canvas struct {
	pub          publisher
	results      resultStore
	chords       chordJoiner // nil: the result backend cannot join chords
	defaultQueue string
	hostname     string
	oid          string // reply_to of the messages sent, like Celery's app.thread_oid
	persist      *persister
}

// onSuccess applies callbacks and the next chain step, then completes the
// chord part (Celery applies callbacks before storing the result, and joins
// the chord after).
func (c *canvas) onSuccess(t *Task, m *celery.TaskMessage, result any) {
	raw, err := json.Marshal(result)
	if err != nil {
		return // the result is stored as an EncodeError failure instead
	}
	parent, root := m.ID, rootOf(m)
	groupID := ""
	if len(m.Embed.Callbacks) > 1 {
		groupID = celery.NewTag() // Celery applies several callbacks as a group
	}
	for _, cb := range m.Embed.Callbacks {
		c.apply(t, cb, []json.RawMessage{raw}, parent, root, groupID, nil)
	}
	if n := len(m.Embed.Chain); n > 0 {
		c.apply(t, m.Embed.Chain[n-1], []json.RawMessage{raw}, parent, root, "", m.Embed.Chain[:n-1])
	}
}

// onFailure marks every later chain step failed with the same exception and
// applies the errbacks as Celery does for errbacks its worker does not run
// in-process: as a group of tasks called with the failed task's id. A step
// that carries a chord (the last step of a chain in a chord header) is also
// counted as that chord's failed part, as Celery 5.2's mark_as_failure calls
// on_chord_part_return for it: otherwise the chord never joins and its body's
// result is never stored.
func (c *canvas) onFailure(t *Task, m *celery.TaskMessage, info celery.ExceptionInfo, tb string) {
	for _, step := range m.Embed.Chain {
		sig, err := celery.ParseSignature(step)
		if err != nil {
			continue
		}
		var id string
		if !sig.Option("task_id", &id) || id == "" {
			continue
		}
		meta := celery.NewResultMeta(id, celery.StateFailure, info, tb, time.Now())
		var gid string
		if sig.Option("group_id", &gid) {
			meta.GroupID = gid
		}
		raw, err := meta.Encode()
		if err != nil {
			continue
		}
		if err := c.persist.do(func(ctx context.Context) error {
			return c.results.StoreMany(ctx, []celery.EncodedResult{{TaskID: id, Raw: raw}})
		}); err != nil {
			t.logger.Error().Err(err).Str("chain_task_id", id).Msg("marking a chain step failed did not work")
		}
		if chord, ok := sig.Options["chord"]; ok && strings.TrimSpace(string(chord)) != "null" {
			part := &celery.TaskMessage{ID: id, RootID: rootOf(m), GroupID: meta.GroupID, Embed: celery.Embed{Chord: chord}}
			var idx int
			if sig.Option("group_index", &idx) {
				part.GroupIndex = &idx
			}
			c.chordPart(t, part, celery.StateFailure, info)
		}
	}
	c.errbacks(t, m.Embed.Errbacks, m.ID, rootOf(m))
}

func (c *canvas) errbacks(t *Task, errbacks []json.RawMessage, taskID, root string) {
	if len(errbacks) == 0 {
		return
	}
	arg, _ := json.Marshal(taskID)
	groupID := celery.NewTag() // a group, without group_index, as Celery sends them
	for _, eb := range errbacks {
		c.apply(t, eb, []json.RawMessage{arg}, taskID, root, groupID, nil)
	}
}

// chordPart adds a chord header task's outcome to the join set; the last
// part applies the body with every result in header order, or fails the
// body with ChordError when a part failed.
func (c *canvas) chordPart(t *Task, m *celery.TaskMessage, state celery.State, result any) {
	if len(m.Embed.Chord) == 0 || m.GroupID == "" {
		return
	}
	if c.chords == nil {
		t.logger.Error().Str("group_id", m.GroupID).Msg("this task is part of a chord, which needs a result backend that joins chords (Redis or django-db, CELERY_RESULT_BACKEND); the chord body will not run")
		return
	}
	encoded, err := pyJSON([]any{1, m.ID, string(state), result})
	if err != nil {
		t.logger.Error().Err(err).Msg("chord part result does not encode")
		return
	}
	var parts [][]byte
	var ready bool
	err = c.persist.do(func(ctx context.Context) error {
		var err error
		parts, ready, err = c.chords.ChordPartReturn(ctx, m.GroupID, m.GroupIndex, encoded)
		return err
	})
	if err != nil {
		t.logger.Error().Err(err).Str("group_id", m.GroupID).Msg("chord part return failed; the chord body will not run")
		return
	}
	if !ready {
		return
	}
	body, err := celery.ParseSignature(m.Embed.Chord)
	if err != nil {
		t.logger.Error().Err(err).Str("group_id", m.GroupID).Msg("chord body cannot be applied")
		return
	}
	results := make([]json.RawMessage, 0, len(parts))
	for _, p := range parts {
		var part []json.RawMessage
		if err := json.Unmarshal(p, &part); err != nil || len(part) != 4 {
			t.logger.Error().Str("group_id", m.GroupID).Msg("chord part is not [1, id, state, result]")
			return
		}
		var id, st string
		_ = json.Unmarshal(part[1], &id)
		_ = json.Unmarshal(part[2], &st)
		if st == string(celery.StateFailure) || st == string(celery.StateRevoked) {
			c.chordError(t, body, fmt.Sprintf("Dependency %s raised %s", id, excRepr(part[3])))
			return
		}
		results = append(results, part[3])
	}
	all, _ := json.Marshal(results)
	c.apply(t, m.Embed.Chord, []json.RawMessage{all}, m.ID, rootOf(m), "", nil)
}

// chordError fails the chord body with celery.exceptions.ChordError and
// calls its errbacks, as Celery's chord_error_from_stack does.
func (c *canvas) chordError(t *Task, body *celery.Signature, msg string) {
	var id string
	body.Option("task_id", &id)
	if id != "" {
		info := celery.ExceptionInfo{ExcType: "ChordError", ExcModule: "celery.exceptions", ExcMessage: []any{msg}}
		raw, err := celery.NewResultMeta(id, celery.StateFailure, info, "", time.Now()).Encode()
		if err == nil {
			_ = c.persist.do(func(ctx context.Context) error {
				return c.results.StoreMany(ctx, []celery.EncodedResult{{TaskID: id, Raw: raw}})
			})
		}
	}
	c.errbacks(t, body.OptionList("link_error"), id, id)
}

// apply sends a signature as Signature.apply_async(args, ...) does: args
// go before the signature's own unless it is immutable; its options choose
// id, queue, priority, links, group and limits.
func (c *canvas) apply(t *Task, raw json.RawMessage, args []json.RawMessage, parent, root, groupID string, chain []json.RawMessage) {
	sig, err := celery.ParseSignature(raw)
	if err != nil {
		t.logger.Error().Err(err).Msg("cannot apply a canvas signature; it is skipped")
		return
	}
	r := celery.TaskRequest{
		Task: sig.Task, Kwargs: sig.Kwargs, RootID: root, ParentID: parent, Origin: c.hostname,
		Embed: celery.Embed{Callbacks: sig.OptionList("link"), Errbacks: sig.OptionList("link_error"), Chain: chain},
	}
	if sig.Immutable {
		r.Args = sig.Args
	} else {
		r.Args = append(append([]json.RawMessage{}, args...), sig.Args...)
	}
	r.ArgsRepr, r.KwargsRepr, r.ReplyTo = pyReprArgs(r.Args), pyReprKwargs(r.Kwargs), c.oid
	if !sig.Option("task_id", &r.ID) || r.ID == "" {
		r.ID = celery.NewTag()
	}
	if !sig.Option("queue", &r.Queue) || r.Queue == "" {
		if !sig.Option("routing_key", &r.Queue) || r.Queue == "" {
			r.Queue = c.defaultQueue
		}
	}
	sig.Option("priority", &r.Priority)
	// group_id is one of Celery's immutable options: the signature's wins.
	if !sig.Option("group_id", &r.GroupID) {
		r.GroupID = groupID
	}
	var idx int
	if sig.Option("group_index", &idx) {
		r.GroupIndex = &idx
	}
	if chord, ok := sig.Options["chord"]; ok && strings.TrimSpace(string(chord)) != "null" {
		r.Embed.Chord = chord
	}
	var f float64
	if sig.Option("time_limit", &f) {
		r.HardLimit = &f
	}
	var soft float64
	if sig.Option("soft_time_limit", &soft) {
		r.SoftLimit = &soft
	}
	if sig.Option("countdown", &f) && f > 0 {
		r.ETA = time.Now().Add(time.Duration(f * float64(time.Second)))
	}
	var s string
	if sig.Option("eta", &s) {
		r.ETA, _ = celery.ParseTime(s)
	}
	if sig.Option("expires", &s) {
		r.Expires, _ = celery.ParseTime(s)
	} else if sig.Option("expires", &f) {
		r.Expires = time.Now().Add(time.Duration(f * float64(time.Second)))
	}
	sig.Option("ignore_result", &r.IgnoreResult)
	msg, err := celery.EncodeTask(r)
	if err != nil {
		t.logger.Error().Err(err).Str("next_task", sig.Task).Msg("cannot encode a canvas task; it is skipped")
		return
	}
	if err := c.persist.do(func(ctx context.Context) error { return c.pub.Publish(ctx, r.Queue, r.Priority, msg) }); err != nil {
		t.logger.Error().Err(err).Str("next_task", sig.Task).Str("next_task_id", r.ID).Msg("publishing a canvas task failed")
		return
	}
	t.logger.Debug().Str("next_task", sig.Task).Str("next_task_id", r.ID).Str("queue", r.Queue).Msg("canvas task sent")
}

func rootOf(m *celery.TaskMessage) string {
	if m.RootID != "" {
		return m.RootID
	}
	return m.ID
}

// excInfoRepr is Python's repr() of the exception info describes, as task
// events carry it: ValueError('boom').
func excInfoRepr(info celery.ExceptionInfo) string {
	raw, err := json.Marshal(info)
	if err != nil {
		return info.ExcType + "()"
	}
	return excRepr(raw)
}

// excRepr renders a stored exception as Python's repr() of it:
// ValueError('boom').
func excRepr(raw json.RawMessage) string {
	var info struct {
		ExcType    string            `json:"exc_type"`
		ExcMessage []json.RawMessage `json:"exc_message"`
	}
	if err := json.Unmarshal(raw, &info); err != nil || info.ExcType == "" {
		return string(raw)
	}
	args := make([]string, len(info.ExcMessage))
	for i, a := range info.ExcMessage {
		args[i] = pyRepr(a)
	}
	return info.ExcType + "(" + strings.Join(args, ", ") + ")"
}

// pyJSON encodes v as Python's json.dumps does by default (", " and ": "
// separators, non-ASCII escaped), which is how kombu encodes what Celery
// stores, so members written by either worker are alike.
func pyJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode as python json: %w", err)
	}
	raw := bytes.TrimRight(buf.Bytes(), "\n")
	var out strings.Builder
	inString, escaped := false, false
	for _, r := range string(raw) {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
				out.WriteRune(r)
			case r == '\\':
				escaped = true
				out.WriteRune(r)
			case r == '"':
				inString = false
				out.WriteRune(r)
			case r > 0x7e:
				for _, u := range utf16(r) {
					fmt.Fprintf(&out, `\u%04x`, u)
				}
			default:
				out.WriteRune(r)
			}
		case r == '"':
			inString = true
			out.WriteRune(r)
		case r == ',':
			out.WriteString(", ")
		case r == ':':
			out.WriteString(": ")
		default:
			out.WriteRune(r)
		}
	}
	return []byte(out.String()), nil
}

func utf16(r rune) []rune {
	if r < 0x10000 {
		return []rune{r}
	}
	r -= 0x10000
	return []rune{0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff}
}
