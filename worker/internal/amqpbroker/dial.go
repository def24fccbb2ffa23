package amqpbroker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// dial opens a connection to RabbitMQ. For amqps it makes the TLS handshake
// itself instead of leaving it to amqp091: under TLS 1.3 a server that wants
// a client certificate says so only after the client's handshake has ended,
// in an alert that amqp091's reader sees while the opening write may be
// failing on the connection the reader has just closed. The error amqp091
// returns is then "use of closed network connection"; the alert, which says
// what to fix, is kept here and reported in its place.
func (b *Broker) dial() (*amqp.Connection, error) {
	target := b.dialURL
	var rec *alertRecorder
	cfg := amqp.Config{Dial: amqp.DefaultDial(b.cfg.DialTimeout), Heartbeat: 10 * time.Second,
		Properties: amqp.Table{"product": "certmgr", "connection_name": b.cfg.Hostname}}
	if b.tls != nil {
		u, err := url.Parse(b.dialURL)
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", b.shown, err)
		}
		// amqp:// so that amqp091 does not wrap the TLS connection again;
		// the port stays amqps' own.
		u.Scheme = "amqp"
		if u.Port() == "" {
			u.Host = net.JoinHostPort(u.Hostname(), "5671")
		}
		target = u.String()
		plain := cfg.Dial
		cfg.Dial = func(network, addr string) (net.Conn, error) {
			// plain sets the deadline for both handshakes; amqp091
			// clears it once the connection is open.
			raw, err := plain(network, addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(raw, b.tls.Clone())
			if err := tc.Handshake(); err != nil {
				raw.Close()
				return nil, err
			}
			rec = &alertRecorder{Conn: tc}
			return rec, nil
		}
	}
	conn, err := amqp.DialConfig(target, cfg)
	if err != nil {
		if alert := rec.alert(); alert != nil {
			err = alert
		}
		return nil, fmt.Errorf("connect to %s: %w", b.shown, scrub(err, b.cfg.URL))
	}
	return conn, nil
}

// alertRecorder keeps the first TLS alert the server sent.
type alertRecorder struct {
	*tls.Conn
	mu  sync.Mutex
	err error
}

func (r *alertRecorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	var op *net.OpError
	if err != nil && errors.As(err, &op) && op.Op == "remote error" {
		r.mu.Lock()
		if r.err == nil {
			r.err = err
		}
		r.mu.Unlock()
	}
	return n, err
}

// alert is the server's TLS alert, or nil (also on a nil recorder).
func (r *alertRecorder) alert() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}
