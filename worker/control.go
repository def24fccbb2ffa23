package worker

import (
	"context"
	"time"

	"github.com/midsummer/certmgr/worker/celery"
	"github.com/midsummer/certmgr/worker/redisbroker"
)

// controlLoop answers remote-control commands broadcast on the pidbox
// (`celery inspect ping`, `celery inspect registered`), reconnecting with
// backoff when the broker goes away.
func (s *Server) controlLoop(ctx context.Context) {
	b := newBackoff()
	for ctx.Err() == nil {
		start := time.Now()
		err := s.broker.Subscribe(ctx, celery.PidboxExchange, func(raw []byte) { s.control(ctx, raw) })
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			b.reset()
		}
		s.brokerErrs.log(s.log, err, "remote control subscription lost; reconnecting")
		select {
		case <-time.After(b.next()):
		case <-ctx.Done():
		}
	}
}

func (s *Server) control(ctx context.Context, raw []byte) {
	req, err := celery.DecodeControl(raw)
	if err != nil {
		s.log.Debug().Err(err).Msg("ignoring undecodable remote control message")
		return
	}
	if !req.For(s.cfg.Hostname) || req.ReplyTo == nil {
		return
	}
	var reply any
	switch req.Method {
	case "ping":
		reply = map[string]any{"ok": "pong"}
	case "registered":
		if mux, ok := s.h.(*ServeMux); ok {
			reply = mux.Names()
		} else {
			reply = []string{}
		}
	default:
		return // not ours to answer (hello, stats, ...): Celery tolerates silence
	}
	body := map[string]any{s.cfg.Hostname: reply}
	env, err := celery.NewEnvelope(body, map[string]any{"ticket": req.Ticket, "clock": s.ev.clock.Add(1)},
		req.ReplyTo.Exchange, req.ReplyTo.RoutingKey, redisbroker.NewTag())
	if err != nil {
		return
	}
	if err := s.broker.PublishDirect(ctx, req.ReplyTo.Exchange, req.ReplyTo.RoutingKey, env); err != nil {
		s.brokerErrs.log(s.log, err, "answering remote control failed")
	}
}
