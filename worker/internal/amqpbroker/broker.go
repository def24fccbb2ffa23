// Package amqpbroker is kombu's AMQP transport (RabbitMQ) as seen from a
// worker, on github.com/rabbitmq/amqp091-go.
//
// It declares what Celery declares for a queue it routes to (a durable
// direct exchange and a durable queue of the queue's name, bound with the
// queue's name), unless the queue exists already: then it is used as it is,
// x-max-priority and all. It consumes with basic.qos prefetch = the worker's
// concurrency, acknowledges after the handler, rejects with requeue what it
// gives back on shutdown, and leaves everything else to RabbitMQ: a message
// of a connection that was lost is redelivered by the broker, so there is no
// visibility timeout and nothing to restore.
//
// Messages reach the worker in kombu's Redis envelope form (body base64,
// properties with delivery_info and a delivery tag), so the worker's decoder,
// retries and dead-lettering are the same for both transports. Retries and
// dead letters are published with publisher confirms before the original is
// acknowledged. Messages waiting for their eta stay unacknowledged, and the
// prefetch count grows by one for each, as Celery's QoS.increment_eventually
// does, so they do not block the queue.
//
// Remote control and events use kombu's exchanges: the pidbox queue
// <hostname>.celery.pidbox (auto-delete, x-expires 10 s, x-message-ttl 300 s)
// bound to the fanout exchange celery.pidbox, replies on the direct exchange
// reply.celery.pidbox, events on the topic exchange celeryev.
package amqpbroker

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/midsummer/certmgr/worker/internal/celery"
	"github.com/midsummer/certmgr/worker/internal/redisbroker"
)

// Config configures a Broker.
type Config struct {
	// URL is amqp://user:pass@host:port/vhost, pyamqp:// (the same) or
	// amqps:// with Celery's ssl_* query parameters. Required.
	URL string
	// Queue is the queue consumed. Required.
	Queue string
	// Prefetch is basic.qos's prefetch count (the worker's concurrency).
	// Default 1.
	Prefetch int
	// Hostname names the pidbox queue, <hostname>.celery.pidbox. Required
	// for Subscribe.
	Hostname string
	// MaxMessageBytes is the largest body handed to the worker; a bigger
	// message is moved to the dead queue (RabbitMQ delivers it whole: its
	// own max_message_size bounds what can arrive). 0: no limit.
	MaxMessageBytes int
	// RPCResults makes the broker the rpc:// result backend (StoreMany):
	// it remembers each held task's reply_to.
	RPCResults bool
	// DialTimeout bounds connecting. Default 5s.
	DialTimeout time.Duration
}

// Broker is a worker's connection to RabbitMQ.
type Broker struct {
	cfg     Config
	dialURL string
	tls     *tls.Config
	shown   string
	dead    string

	mu      sync.Mutex
	conn    *amqp.Connection
	ch      *amqp.Channel // consumer channel, in confirm mode
	gen     uint64        // connection generation: tags of older ones are void
	deliver <-chan amqp.Delivery
	chClose chan *amqp.Error // why the consumer channel closed (NotifyClose)
	held    map[string]*held
	eta     int               // held messages waiting for their eta (each adds one to the prefetch)
	replyTo map[string]string // of oversize messages (not held) until their FAILURE is sent
	closed  bool

	pingConn *amqp.Connection // Ping's own
}

type held struct {
	d       amqp.Delivery
	eta     bool
	replyTo string
}

// Delivery is what Fetch returns.
type Delivery = celery.Delivery

// New checks the configuration; it does not connect.
func New(cfg Config) (*Broker, error) {
	if cfg.Queue == "" {
		return nil, errors.New("amqpbroker: Queue is required")
	}
	cfg.Prefetch = max(cfg.Prefetch, 1)
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, 5*time.Second)
	dialURL, tlsCfg, shown, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	return &Broker{cfg: cfg, dialURL: dialURL, tls: tlsCfg, shown: shown, dead: cfg.Queue + ".dead",
		held: map[string]*held{}, replyTo: map[string]string{}}, nil
}

// IsURL tells whether rawURL is for this transport.
func IsURL(rawURL string) bool {
	for _, p := range []string{"amqp://", "amqps://", "pyamqp://", "librabbitmq://"} {
		if strings.HasPrefix(rawURL, p) {
			return true
		}
	}
	return false
}

// ParseURL checks an AMQP URL and returns the URL to dial (ssl_* parameters
// taken out), its TLS configuration (amqps) and the URL with the password
// replaced, for messages.
func ParseURL(rawURL string) (dialURL string, tlsCfg *tls.Config, shown string, err error) {
	shown = redisbroker.Redact(rawURL)
	fail := func(problem string) (string, *tls.Config, string, error) {
		return "", nil, shown, fmt.Errorf("amqp url %s: %s", shown, problem)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return fail("not a valid URL (percent-encode / # ? @ in the user name and password)")
	}
	switch u.Scheme {
	case "amqp", "pyamqp", "librabbitmq":
		u.Scheme = "amqp"
	case "amqps":
	default:
		return fail(fmt.Sprintf("scheme %q: want amqp, pyamqp or amqps", u.Scheme))
	}
	if u.Host == "" {
		return fail("no host")
	}
	q := u.Query()
	tlsCfg, present, err := redisbroker.TLSFromQuery(q, u.Hostname())
	if err != nil {
		return fail(err.Error())
	}
	if present && u.Scheme != "amqps" {
		return fail("ssl_* parameters need the amqps:// scheme")
	}
	for k := range q {
		if k != "heartbeat" && k != "connection_timeout" {
			return fail(fmt.Sprintf("query parameter %q is not supported", k))
		}
	}
	if u.Scheme != "amqps" {
		tlsCfg = nil
	}
	// amqp091 reads the vhost as kombu does: amqp://host/ and amqp://host//
	// are "/", amqp://host/name is "name".
	u.RawQuery = q.Encode()
	return u.String(), tlsCfg, shown, nil
}

// DeadQueue is the queue undecodable and oversize messages are moved to.
func (b *Broker) DeadQueue() string { return b.dead }

// connect (under mu) opens the connection and the consumer channel,
// declares the queue as kombu does and starts consuming.
func (b *Broker) connect() error {
	if b.closed {
		return errors.New("amqp broker closed")
	}
	if b.conn != nil && !b.conn.IsClosed() && b.ch != nil && !b.ch.IsClosed() {
		return nil
	}
	if b.ch != nil {
		// Closed while nobody was fetching: say why once (a consumer_timeout
		// must not go unnoticed); the next call connects again.
		err := closeError(b.cfg.Queue, b.chClose)
		b.dropLocked()
		return err
	}
	b.dropLocked()
	conn, err := b.dial()
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = declareQueue(conn, ch, b.cfg.Queue)
	}
	if err == nil {
		// declareQueue may have had to open a new channel after a 404.
		ch, err = conn.Channel()
	}
	if err == nil {
		err = ch.Confirm(false)
	}
	if err == nil {
		err = ch.Qos(prefetchCount(b.cfg.Prefetch, 0), 0, true)
	}
	var deliver <-chan amqp.Delivery
	if err == nil {
		deliver, err = ch.Consume(b.cfg.Queue, "", false, false, false, false, nil)
	}
	if err != nil {
		conn.Close()
		return fmt.Errorf("consume %s on %s: %w", b.cfg.Queue, b.shown, err)
	}
	b.conn, b.ch, b.deliver = conn, ch, deliver
	// Buffered: amqp091 sends the reason before it closes the deliveries.
	b.chClose = ch.NotifyClose(make(chan *amqp.Error, 1))
	b.gen++
	b.eta = 0
	return nil
}

// dropLocked forgets a broken connection: RabbitMQ redelivers whatever it
// had handed to it.
func (b *Broker) dropLocked() {
	if d := b.deliver; d != nil {
		go func() {
			for range d { // prefetched messages, requeued by RabbitMQ
			}
		}()
	}
	if b.conn != nil {
		b.conn.Close()
	}
	b.conn, b.ch, b.deliver, b.chClose = nil, nil, nil, nil
	clear(b.held)
	b.eta = 0
}

// declareQueue uses the queue as it is when it exists (whatever its
// arguments), else declares it as Celery does for a queue it routes to.
func declareQueue(conn *amqp.Connection, ch *amqp.Channel, queue string) error {
	if _, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil); err == nil {
		ch.Close()
		return nil
	}
	// A failed passive declare closes the channel.
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(queue, "direct", true, false, false, false, nil); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return err
	}
	return ch.QueueBind(queue, queue, queue, false, nil)
}

// scrub removes the URL (and so its password) from a client error.
func scrub(err error, rawURL string) error {
	msg := err.Error()
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "***")
		}
	}
	return errors.New(msg)
}

// Fetch takes up to max messages, waiting up to wait for the first one.
func (b *Broker) Fetch(ctx context.Context, max int, wait time.Duration) ([]Delivery, error) {
	b.mu.Lock()
	if err := b.connect(); err != nil {
		b.mu.Unlock()
		return nil, err
	}
	deliver, gen, chClose := b.deliver, b.gen, b.chClose
	b.mu.Unlock()

	var out []Delivery
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(out) < max {
		var d amqp.Delivery
		var ok bool
		if len(out) == 0 {
			select {
			case d, ok = <-deliver:
			case <-timer.C:
				return out, nil
			case <-ctx.Done():
				return out, ctx.Err()
			}
		} else {
			select {
			case d, ok = <-deliver:
			default:
				return out, nil
			}
		}
		if !ok {
			b.mu.Lock()
			if b.gen == gen {
				b.dropLocked()
			}
			b.mu.Unlock()
			return out, closeError(b.cfg.Queue, chClose)
		}
		tag := strconv.FormatUint(gen, 10) + "." + strconv.FormatUint(d.DeliveryTag, 10)
		h := &held{d: d, replyTo: d.ReplyTo}
		if b.cfg.MaxMessageBytes > 0 && len(d.Body) > b.cfg.MaxMessageBytes {
			b.mu.Lock()
			b.held[tag] = h
			b.mu.Unlock()
			if derr := b.DeadLetter(ctx, tag, nil); derr != nil {
				return out, derr
			}
			if b.cfg.RPCResults && d.CorrelationId != "" && d.ReplyTo != "" {
				b.mu.Lock()
				b.replyTo[d.CorrelationId] = d.ReplyTo // for the FAILURE the worker stores
				b.mu.Unlock()
			}
			head := d
			head.Body = nil
			raw, _ := Envelope(head, "")
			out = append(out, Delivery{Queue: b.cfg.Queue, Raw: raw, TooLarge: len(d.Body)})
			continue
		}
		raw, err := Envelope(d, tag)
		if err != nil {
			// Not representable: keep it whole in the dead queue.
			b.mu.Lock()
			b.held[tag] = h
			b.mu.Unlock()
			if derr := b.DeadLetter(ctx, tag, nil); derr != nil {
				return out, derr
			}
			out = append(out, Delivery{Queue: b.cfg.Queue, Raw: d.Body})
			continue
		}
		h.eta = futureETA(d.Headers)
		b.mu.Lock()
		b.held[tag] = h
		if h.eta {
			b.eta++
			_ = b.ch.Qos(prefetchCount(b.cfg.Prefetch, b.eta), 0, true)
		}
		b.mu.Unlock()
		out = append(out, Delivery{Tag: tag, Raw: raw, Queue: b.cfg.Queue})
	}
	return out, nil
}

// maxPrefetch is the largest prefetch count basic.qos carries (a short).
const maxPrefetch = 1<<16 - 1

// prefetchCount is the basic.qos prefetch count for the worker's prefetch
// and the held eta messages. Beyond what basic.qos can carry it is 0, no
// limit, as kombu's QoS.set disables the limit rather than let it wrap.
func prefetchCount(prefetch, eta int) int {
	n := prefetch + eta
	if n > maxPrefetch {
		return 0
	}
	return n
}

// ErrConsumerTimeout is the cause of a consumer channel RabbitMQ closed
// because a message stayed unacknowledged longer than its consumer_timeout
// (30 minutes by default since RabbitMQ 3.8.15). Messages waiting for their
// eta are held unacknowledged, as Celery holds them, so an eta further away
// than consumer_timeout makes RabbitMQ close the channel and redeliver
// everything the worker held.
var ErrConsumerTimeout = errors.New("a message stayed unacknowledged longer than RabbitMQ's consumer_timeout " +
	"(countdown and eta tasks are held unacknowledged until due): raise consumer_timeout in rabbitmq.conf above the longest countdown")

// closeError says why the consumer channel closed, from what NotifyClose
// reported (nothing: the connection was closed without a reason).
func closeError(queue string, chClose <-chan *amqp.Error) error {
	var reason *amqp.Error
	select {
	case reason = <-chClose:
	default:
	}
	switch {
	case reason == nil:
		return fmt.Errorf("consume %s: the channel closed", queue)
	case isConsumerTimeout(reason):
		return fmt.Errorf("consume %s: RabbitMQ closed the channel (%s): %w", queue, reason.Reason, ErrConsumerTimeout)
	}
	return fmt.Errorf("consume %s: the channel closed: %w", queue, reason)
}

// isConsumerTimeout tells RabbitMQ's channel error for an expired
// consumer_timeout: PRECONDITION_FAILED, "delivery acknowledgement on
// channel 1 timed out. Timeout value used: 1800000 ms. ...".
func isConsumerTimeout(e *amqp.Error) bool {
	return e.Code == amqp.PreconditionFailed && strings.Contains(e.Reason, "delivery acknowledgement") &&
		strings.Contains(e.Reason, "timed out")
}

// Lost reports whether a held message belongs to a connection or consumer
// channel that is gone. RabbitMQ has requeued such a message and delivers it
// again (with another tag), so it must not be run: the copy runs instead,
// as Celery's consumer forgets its reserved and eta-held requests when its
// connection closes.
func (b *Broker) Lost(tag string) bool {
	g, _, ok := strings.Cut(tag, ".")
	if !ok {
		return false
	}
	gen, err := strconv.ParseUint(g, 10, 64)
	if err != nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return gen != b.gen || b.ch == nil || b.ch.IsClosed()
}

func futureETA(h amqp.Table) bool {
	s, ok := h["eta"].(string)
	if !ok || s == "" {
		return false
	}
	t, err := celery.ParseTime(s)
	return err == nil && t.After(time.Now())
}

// take removes a held message (under mu) and returns its channel, or nil
// when the message belongs to a connection that is gone (RabbitMQ has
// requeued it already).
func (b *Broker) take(tag string) (*held, *amqp.Channel, uint64) {
	h, ok := b.held[tag]
	if !ok {
		return nil, nil, 0
	}
	delete(b.held, tag)
	if h.eta {
		b.eta--
		if b.ch != nil {
			_ = b.ch.Qos(prefetchCount(b.cfg.Prefetch, b.eta), 0, true)
		}
	}
	return h, b.ch, h.d.DeliveryTag
}

// Ack acknowledges messages. A message of a lost connection cannot be
// acknowledged: RabbitMQ has requeued it and it runs again (at least once).
func (b *Broker) Ack(ctx context.Context, tags ...string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, tag := range tags {
		h, ch, dt := b.take(tag)
		if h == nil || ch == nil {
			continue
		}
		if err := ch.Ack(dt, false); err != nil {
			return fmt.Errorf("ack %s: %w", tag, err)
		}
	}
	return nil
}

// Requeue gives a message back to its queue (basic.reject with requeue).
func (b *Broker) Requeue(ctx context.Context, tag string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	h, ch, dt := b.take(tag)
	if h == nil || ch == nil {
		return nil
	}
	if err := ch.Nack(dt, false, true); err != nil {
		return fmt.Errorf("requeue %s: %w", tag, err)
	}
	return nil
}

// Republish publishes raw (a retry, in envelope form) to the exchange and
// routing key the held message came by, waits for the broker's confirm, and
// then acknowledges the held message.
func (b *Broker) Republish(ctx context.Context, tag string, raw []byte, priority int) error {
	b.mu.Lock()
	h, ok := b.held[tag]
	ch := b.ch
	b.mu.Unlock()
	if !ok || ch == nil {
		return nil // requeued by RabbitMQ with its connection: it runs again
	}
	msg, err := Publishing(raw)
	if err != nil {
		return fmt.Errorf("republish %s: %w", tag, err)
	}
	msg.Priority = uint8(min(max(priority, 0), 255))
	if err := b.publishConfirmed(ctx, ch, h.d.Exchange, h.d.RoutingKey, msg); err != nil {
		return fmt.Errorf("republish %s: %w", tag, err)
	}
	return b.Ack(ctx, tag)
}

// DeadLetter moves a held message to the dead queue (declared durable on
// first use), confirmed, then acknowledges it. raw nil: the original body.
func (b *Broker) DeadLetter(ctx context.Context, tag string, raw []byte) error {
	b.mu.Lock()
	h, ok := b.held[tag]
	ch := b.ch
	b.mu.Unlock()
	if !ok || ch == nil {
		return nil
	}
	msg := amqp.Publishing{Headers: h.d.Headers, ContentType: h.d.ContentType, ContentEncoding: h.d.ContentEncoding,
		DeliveryMode: amqp.Persistent, CorrelationId: h.d.CorrelationId, ReplyTo: h.d.ReplyTo, Body: h.d.Body}
	if _, err := ch.QueueDeclare(b.dead, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare %s: %w", b.dead, err)
	}
	if err := b.publishConfirmed(ctx, ch, "", b.dead, msg); err != nil {
		return fmt.Errorf("dead-letter %s: %w", tag, err)
	}
	return b.Ack(ctx, tag)
}

func (b *Broker) publishConfirmed(ctx context.Context, ch *amqp.Channel, exchange, key string, msg amqp.Publishing) error {
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msg)
	if err != nil {
		return err
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("the broker did not confirm the message (nack)")
	}
	return nil
}

// Refresh does nothing: RabbitMQ holds unacknowledged messages for as long
// as the connection lives.
func (b *Broker) Refresh(context.Context, []string) error { return nil }

// RestoreVisible does nothing: RabbitMQ redelivers the messages of a lost
// connection itself.
func (b *Broker) RestoreVisible(context.Context) (int, error) { return 0, nil }

// Ping checks that RabbitMQ accepts a connection, on a connection of its
// own that consumes nothing (kept open between pings).
func (b *Broker) Ping(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pingConn != nil && !b.pingConn.IsClosed() {
		return nil
	}
	conn, err := b.dial()
	if err != nil {
		return err
	}
	b.pingConn = conn
	return nil
}

// Close closes the connection; unacknowledged messages go back to the queue.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.dropLocked()
	if b.pingConn != nil {
		b.pingConn.Close()
	}
	return nil
}

// Envelope renders an AMQP delivery in kombu's Redis envelope form.
func Envelope(d amqp.Delivery, tag string) ([]byte, error) {
	headers, err := jsonValue(d.Headers)
	if err != nil {
		return nil, err
	}
	if headers == nil {
		headers = map[string]any{}
	}
	env := map[string]any{
		"body":             base64.StdEncoding.EncodeToString(d.Body),
		"content-encoding": d.ContentEncoding,
		"content-type":     d.ContentType,
		"headers":          headers,
		"properties": map[string]any{
			"correlation_id": d.CorrelationId,
			"reply_to":       d.ReplyTo,
			"delivery_mode":  d.DeliveryMode,
			"priority":       d.Priority,
			"delivery_info":  map[string]any{"exchange": d.Exchange, "routing_key": d.RoutingKey, "redelivered": d.Redelivered},
			"body_encoding":  "base64",
			"delivery_tag":   tag,
		},
	}
	return json.Marshal(env)
}

// Publishing turns a kombu envelope back into an AMQP message.
func Publishing(raw []byte) (amqp.Publishing, error) {
	var env struct {
		Body            string          `json:"body"`
		ContentEncoding string          `json:"content-encoding"`
		ContentType     string          `json:"content-type"`
		Headers         json.RawMessage `json:"headers"`
		Properties      struct {
			CorrelationID string `json:"correlation_id"`
			ReplyTo       string `json:"reply_to"`
			DeliveryMode  uint8  `json:"delivery_mode"`
			Priority      int    `json:"priority"`
			BodyEncoding  string `json:"body_encoding"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return amqp.Publishing{}, fmt.Errorf("envelope: %w", err)
	}
	body := []byte(env.Body)
	if env.Properties.BodyEncoding == "base64" {
		b, err := base64.StdEncoding.DecodeString(env.Body)
		if err != nil {
			return amqp.Publishing{}, fmt.Errorf("envelope body: %w", err)
		}
		body = b
	}
	var headers amqp.Table
	if len(env.Headers) > 0 && string(env.Headers) != "null" {
		dec := json.NewDecoder(strings.NewReader(string(env.Headers)))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			return amqp.Publishing{}, fmt.Errorf("envelope headers: %w", err)
		}
		headers = amqp.Table(tableValue(m).(map[string]any))
	}
	mode := env.Properties.DeliveryMode
	if mode == 0 {
		mode = amqp.Persistent
	}
	return amqp.Publishing{
		Headers: headers, ContentType: env.ContentType, ContentEncoding: env.ContentEncoding, Body: body,
		CorrelationId: env.Properties.CorrelationID, ReplyTo: env.Properties.ReplyTo, DeliveryMode: mode,
		Priority: uint8(min(max(env.Properties.Priority, 0), 255)),
	}, nil
}

// tableValue converts decoded JSON (numbers as json.Number) to AMQP field
// values: whole numbers as int64, others as float64.
func tableValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		t := amqp.Table{}
		for k, e := range x {
			t[k] = tableValue(e)
		}
		return map[string]any(t)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = tableValue(e)
		}
		return out
	}
	return v
}

// jsonValue converts AMQP field values to JSON-encodable ones.
func jsonValue(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, string, int, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64:
		return x, nil
	case amqp.Table:
		return jsonValue(map[string]any(x))
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			c, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			m[k] = c
		}
		return m, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case []byte:
		return string(x), nil
	case time.Time:
		return celery.FormatTime(x), nil
	case amqp.Decimal:
		return float64(x.Value), nil
	}
	return nil, fmt.Errorf("header value of type %T", v)
}

// Publish sends a task message (a callback, chain step, chord body) to
// queue, declared as Celery declares a queue it routes to unless it exists,
// through the exchange of the queue's name, with a publisher confirm.
func (b *Broker) Publish(ctx context.Context, queue string, priority int, raw []byte) error {
	msg, err := Publishing(raw)
	if err != nil {
		return fmt.Errorf("publish to %s: %w", queue, err)
	}
	msg.Priority = uint8(min(max(priority, 0), 255))
	b.mu.Lock()
	if err := b.connect(); err != nil {
		b.mu.Unlock()
		return err
	}
	conn, ch := b.conn, b.ch
	b.mu.Unlock()
	side, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("publish to %s: %w", queue, err)
	}
	exchange := queue
	if err := declareQueue(conn, side, queue); err != nil {
		return fmt.Errorf("declare %s: %w", queue, err)
	}
	if chk, err := conn.Channel(); err == nil {
		if err := chk.ExchangeDeclarePassive(exchange, "direct", true, false, false, false, nil); err != nil {
			// The queue exists without Celery's exchange of its name:
			// the default exchange reaches it all the same.
			exchange = ""
		}
		chk.Close()
	}
	if err := b.publishConfirmed(ctx, ch, exchange, queue, msg); err != nil {
		return fmt.Errorf("publish to %s: %w", queue, err)
	}
	return nil
}
