package worker

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// What remote control reads from and changes in the executor.

// requestInfo is Celery's Request.info(): how `inspect active`, `reserved`,
// `scheduled` and `query_task` describe a task.
func (e *executor) requestInfo(d *delivery) map[string]any {
	m := d.msg
	info := map[string]any{
		"id": m.ID, "name": m.Task, "args": orEmpty(m.Args), "kwargs": orEmptyMap(m.Kwargs),
		"type": m.Task, "hostname": e.cfg.Hostname, "time_start": nil, "acknowledged": false,
		"delivery_info": map[string]any{"exchange": "", "routing_key": m.RoutingKey, "priority": m.Priority, "redelivered": nil},
		"worker_pid":    nil,
	}
	if d.state == stateRunning && !d.started.IsZero() {
		info["time_start"] = float64(d.started.UnixMicro()) / 1e6
		info["worker_pid"] = pid
	}
	return info
}

// requests lists the decoded messages in a state (running: active; queued:
// reserved), as Request.info() each.
func (e *executor) requests(state deliveryState) []any {
	e.fl.mu.Lock()
	defer e.fl.mu.Unlock()
	out := []any{}
	for _, d := range e.fl.held {
		if d.state == state && d.msg != nil {
			out = append(out, e.requestInfo(d))
		}
	}
	return out
}

// scheduled lists messages held for their eta, as `inspect scheduled`.
func (e *executor) scheduled() []any {
	e.fl.mu.Lock()
	defer e.fl.mu.Unlock()
	out := []any{}
	for _, d := range e.fl.held {
		if d.state == stateETA && d.msg != nil {
			out = append(out, map[string]any{
				"eta": d.msg.ETA.Format("2006-01-02T15:04:05.999999-07:00"), "priority": 6, "request": e.requestInfo(d),
			})
		}
	}
	return out
}

// query is `inspect query_task`: {id: [state, info]} for the ids held here.
func (e *executor) query(ids []string) map[string]any {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	e.fl.mu.Lock()
	defer e.fl.mu.Unlock()
	out := map[string]any{}
	for _, d := range e.fl.held {
		if d.msg == nil || !want[d.msg.ID] {
			continue
		}
		state := "reserved"
		if d.state == stateRunning {
			state = "active"
		}
		out[d.msg.ID] = []any{state, e.requestInfo(d)}
	}
	return out
}

// count adds a run of a registered task to `inspect stats`' total.
func (e *executor) count(name string) {
	if mux, isMux := e.h.(*ServeMux); isMux {
		if _, found := mux.Handler(name); !found {
			return
		}
	}
	e.totalsMu.Lock()
	if e.total == nil {
		e.total = map[string]int{}
	}
	e.total[name]++
	e.totalsMu.Unlock()
}

func (e *executor) totals() map[string]int {
	e.totalsMu.Lock()
	defer e.totalsMu.Unlock()
	return maps.Clone(e.total)
}

// setTimeLimit sets a task's limits for messages sent without their own
// (control time_limit); zero for both removes them.
func (e *executor) setTimeLimit(name string, hard, soft time.Duration) {
	e.limitsMu.Lock()
	defer e.limitsMu.Unlock()
	if e.limits == nil {
		e.limits = map[string][2]time.Duration{}
	}
	if hard == 0 && soft == 0 {
		delete(e.limits, name)
		return
	}
	e.limits[name] = [2]time.Duration{hard, soft}
}

// setRateLimit limits how often a task starts on this worker (control
// rate_limit); nil removes the limit.
func (e *executor) setRateLimit(name string, l *rate.Limiter) {
	e.limitsMu.Lock()
	defer e.limitsMu.Unlock()
	if e.rates == nil {
		e.rates = map[string]*rate.Limiter{}
	}
	if l == nil {
		delete(e.rates, name)
		return
	}
	e.rates[name] = l
}

func (e *executor) rateLimit(name string) *rate.Limiter {
	e.limitsMu.Lock()
	defer e.limitsMu.Unlock()
	return e.rates[name]
}

// parseRate reads Celery's rate limit as celery.utils.time.rate does:
// "10/s", "100/m", "1000/h", a plain number (per second); empty, zero or
// null disable it (nil). Errors read as the Python exception Celery reports.
func parseRate(v any) (*rate.Limiter, error) {
	var s string
	switch v := v.(type) {
	case nil:
		return nil, nil
	case float64:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	case string:
		s = v
	default:
		return nil, fmt.Errorf("TypeError('%v')", v)
	}
	if s == "" {
		return nil, nil
	}
	n, unit, _ := strings.Cut(s, "/")
	per := map[string]time.Duration{"": time.Second, "s": time.Second, "m": time.Minute, "h": time.Hour}[unit]
	if per == 0 {
		return nil, fmt.Errorf("KeyError(%s)", pyString(unit))
	}
	ops, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
	if err != nil {
		return nil, fmt.Errorf("ValueError(\"could not convert string to float: %s\")", pyString(n))
	}
	if ops <= 0 {
		return nil, nil
	}
	return rate.NewLimiter(rate.Limit(ops/per.Seconds()), 1), nil
}

func orEmpty[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}

func orEmptyMap[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return map[K]V{}
	}
	return m
}
