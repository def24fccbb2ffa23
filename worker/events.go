package worker

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

var pid = os.Getpid()

// Version is reported as sw_ver in worker events.
const Version = "1.0"

// events publishes Celery events on the celeryev fanout exchange: worker
// online/heartbeat/offline always (Celery does too, for `inspect` and Flower),
// task events when SendTaskEvents is set.
type events struct {
	hostname   string
	freq       time.Duration
	mb         mailbox
	log        zerolog.Logger
	errs       *rateLimited
	taskEvents atomic.Bool // task events on (-E, enable_events)
	stats      func() (active, processed int64)
	clock      atomic.Int64
	online     atomic.Bool
}

func (e *events) fields(typ string) map[string]any {
	_, off := time.Now().Zone()
	return map[string]any{
		"hostname":  e.hostname,
		"utcoffset": -off / 3600,
		"pid":       pid,
		"clock":     e.clock.Add(1),
		"timestamp": float64(time.Now().UnixMicro()) / 1e6,
		"type":      typ,
	}
}

func (e *events) workerFields(typ string) map[string]any {
	f := e.fields(typ)
	f["freq"] = e.freq.Seconds()
	active, processed := e.stats()
	f["active"] = active
	f["processed"] = processed
	f["loadavg"] = loadavg()
	f["sw_ident"] = "certmgr"
	f["sw_ver"] = Version
	f["sw_sys"] = strings.ToUpper(runtime.GOOS[:1]) + runtime.GOOS[1:]
	return f
}

func (e *events) publish(ctx context.Context, routingKey string, body any) {
	raw, err := celery.NewEnvelope(body, map[string]any{"hostname": e.hostname},
		celery.EventExchange, routingKey, celery.NewTag())
	if err != nil {
		e.log.Error().Err(err).Str("event", routingKey).Msg("encode event")
		return
	}
	if err := e.mb.PublishFanout(ctx, celery.EventExchange, routingKey, raw); err != nil {
		e.errs.log(e.log, err, "publishing an event failed")
	}
}

// heartbeat sends worker-online the first time, worker-heartbeat after.
func (e *events) heartbeat(ctx context.Context) {
	if e.online.CompareAndSwap(false, true) {
		e.publish(ctx, "worker.online", e.workerFields("worker-online"))
		return
	}
	e.publish(ctx, "worker.heartbeat", e.workerFields("worker-heartbeat"))
}

func (e *events) offline() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e.publish(ctx, "worker.offline", e.workerFields("worker-offline"))
}

// taskReceived and task publish task events (task.multi, a list of one).
func (e *events) taskReceived(m *celery.TaskMessage) {
	if !e.taskEvents.Load() {
		return
	}
	args, kwargs := m.ArgsRepr, m.KwargsRepr
	if args == "" {
		b, _ := json.Marshal(m.Args)
		args = string(b)
	}
	if kwargs == "" {
		b, _ := json.Marshal(m.Kwargs)
		kwargs = string(b)
	}
	e.task("task-received", m, map[string]any{
		"name": m.Task, "args": args, "kwargs": kwargs, "root_id": nullable(m.RootID),
		"parent_id": nullable(m.ParentID), "retries": m.Retries, "eta": timeOrNil(m.ETA),
		"expires": timeOrNil(m.Expires),
	})
}

func (e *events) task(typ string, m *celery.TaskMessage, extra map[string]any) {
	if !e.taskEvents.Load() {
		return
	}
	f := e.fields(typ)
	f["uuid"] = m.ID
	for k, v := range extra {
		f[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e.publish(ctx, "task.multi", []any{f})
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return celery.FormatTime(t)
}

func loadavg() []float64 {
	out := []float64{0, 0, 0}
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	for i, f := range strings.Fields(string(b)) {
		if i >= 3 {
			break
		}
		out[i], _ = strconv.ParseFloat(f, 64)
	}
	return out
}
