package acme

import (
	"context"
	"log/slog"

	legolog "github.com/go-acme/lego/v5/log"
	"github.com/rs/zerolog"
)

// SetLegoLogger sends lego's own log lines (which go to stdout by default) to
// l, at warning level and above, with component=lego. lego keeps one logger for
// the whole process, so main calls this once; it is not part of Config.
func SetLegoLogger(l zerolog.Logger) {
	legolog.SetDefault(slog.New(&zerologHandler{log: l.With().Str("component", "lego").Logger(), min: slog.LevelWarn}))
}

// zerologHandler is a minimal slog.Handler writing to a zerolog.Logger.
type zerologHandler struct {
	log   zerolog.Logger
	min   slog.Level
	attrs []slog.Attr
}

func (h *zerologHandler) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= h.min }

func (h *zerologHandler) Handle(_ context.Context, r slog.Record) error {
	var ev *zerolog.Event
	switch {
	case r.Level >= slog.LevelError:
		ev = h.log.Error()
	case r.Level >= slog.LevelWarn:
		ev = h.log.Warn()
	case r.Level >= slog.LevelInfo:
		ev = h.log.Info()
	default:
		ev = h.log.Debug()
	}
	for _, a := range h.attrs {
		ev = ev.Str(a.Key, a.Value.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		ev = ev.Str(a.Key, a.Value.String())
		return true
	})
	ev.Msg(r.Message)
	return nil
}

func (h *zerologHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), attrs...)
	return &c
}

func (h *zerologHandler) WithGroup(string) slog.Handler { return h }
