package worker

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// controller answers remote-control commands broadcast on the pidbox
// (`celery inspect ping`, `celery inspect registered`), reconnecting with
// backoff when the broker goes away.
type controller struct {
	hostname string
	mb       mailbox
	h        Handler
	ev       *events
	log      zerolog.Logger
	errs     *rateLimited
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func (c *controller) start(ctx context.Context) {
	ctx, c.cancel = context.WithCancel(ctx)
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

func (c *controller) handle(ctx context.Context, raw []byte) {
	req, err := celery.DecodeControl(raw)
	if err != nil {
		c.log.Debug().Err(err).Msg("ignoring undecodable remote control message")
		return
	}
	if !req.For(c.hostname) || req.ReplyTo == nil {
		return
	}
	var reply any
	switch req.Method {
	case "ping":
		reply = map[string]any{"ok": "pong"}
	case "registered":
		if mux, ok := c.h.(*ServeMux); ok {
			reply = mux.Names()
		} else {
			reply = []string{}
		}
	default:
		return // not ours to answer (hello, stats, ...): Celery tolerates silence
	}
	body := map[string]any{c.hostname: reply}
	env, err := celery.NewEnvelope(body, map[string]any{"ticket": req.Ticket, "clock": c.ev.clock.Add(1)},
		req.ReplyTo.Exchange, req.ReplyTo.RoutingKey, celery.NewTag())
	if err != nil {
		return
	}
	if err := c.mb.PublishDirect(ctx, req.ReplyTo.Exchange, req.ReplyTo.RoutingKey, env); err != nil {
		c.errs.log(c.log, err, "answering remote control failed")
	}
}
