package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// controller answers Celery's remote control (`celery inspect`, `celery
// control`, app.control.*) broadcast on the pidbox, with replies in the
// shapes celery/worker/control.py gives, reconnecting with backoff when the
// broker goes away.
type controller struct {
	cfg             Config
	mb              mailbox
	h               Handler
	ev              *events
	exec            *executor
	revoked         *revocations
	requestShutdown func() // asks the Server to stop gracefully
	started         time.Time
	log             zerolog.Logger
	errs            *rateLimited
	cancel          context.CancelFunc
	wg              sync.WaitGroup
}

func (c *controller) start(ctx context.Context) {
	ctx, c.cancel = context.WithCancel(ctx)
	c.started = time.Now()
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.loop(ctx) }()
}

// shutdown stops listening and returns when no command is being answered.
func (c *controller) shutdown() {
	c.cancel()
	c.wg.Wait()
}

func (c *controller) loop(ctx context.Context) {
	b := newBackoff()
	for ctx.Err() == nil {
		start := time.Now()
		err := c.mb.Subscribe(ctx, celery.PidboxExchange, func(raw []byte) { c.handle(ctx, raw) })
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			b.reset()
		}
		c.errs.log(c.log, err, "remote control subscription lost; reconnecting")
		select {
		case <-time.After(b.next()):
		case <-ctx.Done():
		}
	}
}

// noReply marks a command Celery does not answer (shutdown, or one it
// does not know: Celery tolerates silence).
type noReply struct{}

func (c *controller) handle(ctx context.Context, raw []byte) {
	req, err := celery.DecodeControl(raw)
	if err != nil {
		c.log.Debug().Err(err).Msg("ignoring undecodable remote control message")
		return
	}
	if !req.For(c.cfg.Hostname) {
		return
	}
	var args map[string]json.RawMessage
	_ = json.Unmarshal(req.Arguments, &args)
	reply := c.command(ctx, req.Method, args)
	if _, silent := reply.(noReply); silent || req.ReplyTo == nil {
		return
	}
	body := map[string]any{c.cfg.Hostname: reply}
	env, err := celery.NewEnvelope(body, map[string]any{"ticket": req.Ticket, "clock": c.ev.clock.Add(1)},
		req.ReplyTo.Exchange, req.ReplyTo.RoutingKey, celery.NewTag())
	if err != nil {
		c.log.Error().Err(err).Str("method", req.Method).Msg("remote control reply does not encode")
		return
	}
	if err := c.mb.PublishDirect(ctx, req.ReplyTo.Exchange, req.ReplyTo.RoutingKey, env); err != nil {
		c.errs.log(c.log, err, "answering remote control failed")
	}
}

func ok(v any) map[string]any  { return map[string]any{"ok": v} }
func nok(v any) map[string]any { return map[string]any{"error": v} }

func (c *controller) command(ctx context.Context, method string, args map[string]json.RawMessage) any {
	switch method {
	case "ping":
		return ok("pong")
	case "registered", "dump_tasks":
		if mux, isMux := c.h.(*ServeMux); isMux {
			return mux.Names()
		}
		return []string{}
	case "revoke":
		var terminate bool
		arg(args, "terminate", &terminate)
		return c.revoke(ctx, idList(args["task_id"]), terminate)
	case "terminate":
		return c.revoke(ctx, idList(args["task_id"]), true)
	case "active", "dump_active":
		return c.exec.requests(stateRunning)
	case "reserved", "dump_reserved":
		return c.exec.requests(stateQueued)
	case "scheduled", "dump_schedule":
		return c.exec.scheduled()
	case "revoked", "dump_revoked":
		return c.revoked.list()
	case "query_task":
		return c.exec.query(idList(args["ids"]))
	case "stats":
		return c.stats()
	case "clock":
		return map[string]any{"clock": c.ev.clock.Load()}
	case "conf", "dump_conf":
		return c.conf()
	case "active_queues":
		return []any{queueInfo(c.cfg.Queue)}
	case "report":
		return ok(fmt.Sprintf("software -> certmgr:%s (Go %s) %s/%s\nbroker -> %s\nresult backend -> %s\n",
			Version, runtime.Version(), runtime.GOOS, runtime.GOARCH, redactURL(c.cfg.BrokerURL), redactURL(c.cfg.ResultBackendURL)))
	case "enable_events":
		// As Celery 5.2: a worker started with -E has every event group on,
		// and these two commands leave it so.
		if c.cfg.SendTaskEvents {
			return ok("task events already enabled")
		}
		if c.ev.taskEvents.CompareAndSwap(false, true) {
			c.log.Info().Msg("task events enabled by remote")
			return ok("task events enabled")
		}
		return ok("task events already enabled")
	case "disable_events":
		if c.cfg.SendTaskEvents {
			return ok("task events already disabled")
		}
		if c.ev.taskEvents.CompareAndSwap(true, false) {
			c.log.Info().Msg("task events disabled by remote")
			return ok("task events disabled")
		}
		return ok("task events already disabled")
	case "heartbeat":
		// As Celery: an immediate heartbeat that says freq=5.
		f := c.ev.workerFields("worker-heartbeat")
		f["freq"] = 5
		c.ev.publish(ctx, "worker.heartbeat", f)
		return nil
	case "time_limit":
		var name string
		arg(args, "task_name", &name)
		if !c.registered(name) {
			return nok("unknown task")
		}
		var hard, soft *float64
		arg(args, "hard", &hard)
		arg(args, "soft", &soft)
		c.exec.setTimeLimit(name, seconds(hard), seconds(soft))
		c.log.Info().Str(FieldTaskName, name).Msg("new time limits set by remote")
		return ok("time limits set successfully")
	case "rate_limit":
		var name string
		arg(args, "task_name", &name)
		var rl any
		arg(args, "rate_limit", &rl)
		limit, err := parseRate(rl)
		if err != nil {
			return nok("Invalid rate limit string: " + err.Error())
		}
		if !c.registered(name) {
			return nok("unknown task")
		}
		c.exec.setRateLimit(name, limit)
		if limit == nil {
			return ok("rate limit disabled successfully")
		}
		return ok("new rate limit set successfully")
	case "pool_grow":
		n := 1
		arg(args, "n", &n)
		c.exec.grow(n)
		return ok("pool will grow")
	case "pool_shrink":
		n := 1
		arg(args, "n", &n)
		c.exec.shrink(n)
		return ok("pool will shrink")
	case "shutdown":
		c.log.Warn().Msg("shutdown requested by remote control")
		go c.requestShutdown()
		return noReply{}
	}
	return noReply{}
}

func (c *controller) registered(name string) bool {
	if mux, isMux := c.h.(*ServeMux); isMux {
		_, found := mux.Handler(name)
		return found
	}
	return true
}

// revoke is Celery's revoke command: remember the ids (here and in the
// broker's database), and with terminate cancel the running ones.
func (c *controller) revoke(ctx context.Context, ids []string, terminate bool) any {
	if err := c.revoked.add(ctx, ids); err != nil {
		c.errs.log(c.log, err, "persisting revoked task ids failed; this worker honours them until it restarts")
	}
	c.log.Info().Strs("task_ids", ids).Bool("terminate", terminate).Msg("tasks flagged as revoked")
	if !terminate {
		return ok(fmt.Sprintf("tasks %s flagged as revoked", strings.Join(ids, ", ")))
	}
	found := c.exec.terminate(ids)
	if len(found) == 0 {
		return ok("terminate: tasks unknown")
	}
	return ok("terminate: " + strings.Join(found, ", "))
}

// stats has the keys of Celery's worker stats (`celery inspect stats`).
func (c *controller) stats() any {
	var ru runtime.MemStats
	runtime.ReadMemStats(&ru)
	return map[string]any{
		"total":          c.exec.totals(),
		"pid":            pid,
		"clock":          fmt.Sprint(c.ev.clock.Load()),
		"uptime":         int(time.Since(c.started).Seconds()),
		"pool":           map[string]any{"max-concurrency": c.exec.concurrency(), "processes": []int{pid}, "max-tasks-per-child": "N/A", "put-guarded-by-semaphore": false, "timeouts": []any{0, 0}, "writes": map[string]any{}},
		"broker":         map[string]any{"hostname": redactURL(c.cfg.BrokerURL), "transport": "redis", "virtual_host": "", "port": 0, "userid": nil, "insist": false, "ssl": strings.HasPrefix(c.cfg.BrokerURL, "rediss:"), "login_method": nil, "connect_timeout": 4, "heartbeat": 0, "failover_strategy": "round-robin", "alternates": []any{}, "transport_options": map[string]any{"visibility_timeout": c.cfg.VisibilityTimeout.Seconds()}, "uri_prefix": nil},
		"prefetch_count": c.exec.concurrency() + c.cfg.Prefetch,
		"rusage":         map[string]any{"maxrss": int(ru.Sys / 1024)},
	}
}

// conf lists the settings certmgr applies under their Celery names.
func (c *controller) conf() any {
	return map[string]any{
		"broker_url":                 redactURL(c.cfg.BrokerURL),
		"result_backend":             redactURL(c.cfg.ResultBackendURL),
		"task_default_queue":         c.cfg.DefaultQueue,
		"task_track_started":         c.cfg.TrackStarted,
		"result_extended":            c.cfg.ResultExtended,
		"result_expires":             int(c.cfg.ResultExpires.Seconds()),
		"worker_concurrency":         c.exec.concurrency(),
		"worker_prefetch_multiplier": c.cfg.Prefetch / max(c.cfg.Concurrency, 1),
		"worker_send_task_events":    c.ev.taskEvents.Load(),
		"task_acks_late":             true,
		"task_serializer":            "json",
		"result_serializer":          "json",
		"accept_content":             []string{"json"},
		"broker_transport_options":   map[string]any{"visibility_timeout": c.cfg.VisibilityTimeout.Seconds()},
	}
}

// queueInfo is kombu's Queue.as_dict(recurse=True) for a plain direct queue.
func queueInfo(name string) map[string]any {
	return map[string]any{
		"name": name,
		"exchange": map[string]any{"name": name, "type": "direct", "arguments": nil, "durable": true,
			"passive": false, "auto_delete": false, "delivery_mode": nil, "no_declare": false},
		"routing_key": name, "queue_arguments": nil, "binding_arguments": nil, "consumer_arguments": nil,
		"durable": true, "exclusive": false, "auto_delete": false, "no_ack": false, "alias": nil,
		"bindings": []any{}, "no_declare": nil, "expires": nil, "message_ttl": nil, "max_length": nil,
		"max_length_bytes": nil, "max_priority": nil,
	}
}

func arg(args map[string]json.RawMessage, name string, v any) {
	if raw, found := args[name]; found {
		_ = json.Unmarshal(raw, v)
	}
}

// idList reads one id or a list of ids (Celery's maybe_list).
func idList(raw json.RawMessage) []string {
	var ids []string
	if json.Unmarshal(raw, &ids) == nil {
		return ids
	}
	var id string
	if json.Unmarshal(raw, &id) == nil && id != "" {
		return []string{id}
	}
	return nil
}

func seconds(f *float64) time.Duration {
	if f == nil || *f <= 0 {
		return 0
	}
	return time.Duration(*f * float64(time.Second))
}

// redactURL hides a URL's password.
func redactURL(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		if at := strings.LastIndex(s, "@"); at > i {
			cred := s[i+3 : at]
			if user, _, hasPass := strings.Cut(cred, ":"); hasPass {
				return s[:i+3] + user + ":**@" + s[at+1:]
			}
		}
	}
	return s
}
