package redisbroker

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// kombu's default key names (before any global_keyprefix).
const (
	UnackedKey      = "unacked"
	UnackedIndexKey = "unacked_index"
	UnackedMutexKey = "unacked_mutex"
	bindingPrefix   = "_kombu.binding."
)

// Config configures a Broker.
type Config struct {
	// URL is the broker: redis://[[user]:password@]host:port/db, rediss://
	// with Celery's ssl_* parameters, redis+socket:///path or unix:///path
	// (see ParseURL). Required.
	URL string
	// Options are kombu's transport options (broker_transport_options).
	// Options.VisibilityTimeout, when set, wins over VisibilityTimeout.
	Options Options
	// MaxMessageBytes is the largest message taken off the queue; a bigger
	// one is moved, whole and inside Redis, to the dead list, and only its
	// headers reach the worker (Delivery.TooLarge). 0: no limit.
	MaxMessageBytes int
	// Queue is the queue to consume. Required.
	Queue string
	// VisibilityTimeout is how long a message may sit in `unacked` without its
	// score being refreshed before it is restored to its queue. Default 1h,
	// kombu's default; it must match the producers' and other workers' setting.
	VisibilityTimeout time.Duration
	// MutexTTL bounds how long `unacked_mutex` is held. Default 300s (kombu's).
	MutexTTL time.Duration
	// DialTimeout bounds connecting. Default 5s.
	DialTimeout time.Duration
	// CommandTimeout bounds non-blocking commands. Default 10s.
	CommandTimeout time.Duration

	// brpoplpush makes the blocking peek use BRPOPLPUSH from the start, as
	// it does once a server refuses BLMOVE (Redis before 6.2). For tests.
	brpoplpush bool
}

func (c Config) withDefaults() Config {
	c.Options = c.Options.withDefaults()
	c.VisibilityTimeout = cmp.Or(c.Options.VisibilityTimeout, c.VisibilityTimeout, time.Hour)
	c.MutexTTL = cmp.Or(c.Options.UnackedMutexExpire, c.MutexTTL, 300*time.Second)
	c.DialTimeout = cmp.Or(c.Options.SocketConnectTimeout, c.DialTimeout, 5*time.Second)
	c.CommandTimeout = cmp.Or(c.Options.SocketTimeout, c.CommandTimeout, 10*time.Second)
	return c
}

func (c Config) validate() error {
	if c.URL == "" {
		return errors.New("redisbroker: URL is required")
	}
	if c.Queue == "" {
		return errors.New("redisbroker: Queue is required")
	}
	if c.VisibilityTimeout < time.Second {
		return fmt.Errorf("redisbroker: VisibilityTimeout %s is shorter than 1s", c.VisibilityTimeout)
	}
	if c.MaxMessageBytes < 0 {
		return fmt.Errorf("redisbroker: MaxMessageBytes %d is negative", c.MaxMessageBytes)
	}
	return nil
}

// Broker is a worker's connection to a kombu Redis broker.
type Broker struct {
	cfg    Config
	dialer *dialer
	pool   *redis.Pool
	db     int
	k      keys
	queues []string // list keys, served in order: priority 0 first
	dead   string   // list key of the dead list

	waitMu sync.Mutex
	waiter *rawConn // the blocking peek's connection, reused
	legacy bool     // the server has no BLMOVE (before 6.2): BRPOPLPUSH
}

// Delivery is a message taken off the queue and now held in `unacked`.
type Delivery = celery.Delivery

// New checks the configuration and prepares a connection pool; it does not
// connect.
func New(cfg Config) (*Broker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d, err := newDialer(cfg.URL, cfg.Options, cfg.DialTimeout, cfg.CommandTimeout)
	if err != nil {
		return nil, err
	}
	k := newKeys(cfg.Options)
	return &Broker{
		cfg:    cfg,
		dialer: d,
		pool:   d.pool(cfg.Options.MaxConnections),
		db:     d.ep.DB,
		k:      k,
		queues: k.lists(cfg.Queue),
		dead:   k.prefix + cfg.Queue + ".dead",
	}, nil
}

// Close releases the broker's connections.
func (b *Broker) Close() error {
	b.waitMu.Lock()
	if b.waiter != nil {
		b.waiter.Close()
		b.waiter = nil
	}
	b.waitMu.Unlock()
	return b.pool.Close()
}

// DB is the broker's database index (it prefixes fanout channels).
func (b *Broker) DB() int { return b.db }

// Queue is the consumed queue's name.
func (b *Broker) Queue() string { return b.cfg.Queue }

// DeadQueue is the list (its Redis key) undecodable messages are moved to.
func (b *Broker) DeadQueue() string { return b.dead }

// VisibilityTimeout is the configured visibility timeout.
func (b *Broker) VisibilityTimeout() time.Duration { return b.cfg.VisibilityTimeout }

func (b *Broker) conn(ctx context.Context) (redis.Conn, error) {
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("redis connection: %w", err)
	}
	return c, nil
}

// maxHeadBytes bounds the envelope (without its body) returned for a message
// over the size limit: enough for any headers Celery writes (argsrepr and
// kwargsrepr are cut at 1024 characters).
const maxHeadBytes = 64 << 10

// fetchScript moves up to ARGV[1] messages from the queue lists (in priority
// order) to `unacked`, as kombu's QoS.append writes them. An entry that is not
// a kombu envelope with a delivery tag goes to the dead list instead, and so
// does one longer than ARGV[4] bytes (when ARGV[4] > 0): for that one only
// its envelope with the body emptied is returned (if that is at most ARGV[5]
// bytes), so a large message never leaves Redis. Each reply row is {tag, raw, list, size-if-too-large}.
var fetchScript = redis.NewScript(-1, `
local max = tonumber(ARGV[1])
local maxBytes = tonumber(ARGV[4])
local headCap = tonumber(ARGV[5])
local out = {}
for i = 4, #KEYS do
  while #out < max do
    local raw = redis.call('RPOP', KEYS[i])
    if not raw then break end
    if maxBytes > 0 and #raw > maxBytes then
      redis.call('LPUSH', KEYS[3], raw)
      -- kombu writes the (base64, quote-free) body first: cut it out.
      local head = ''
      if string.sub(raw, 1, 10) == '{"body": "' then
        local j = string.find(raw, '"', 11, true)
        if j then head = '{"body": "' .. string.sub(raw, j) end
      end
      if head == '' or #head > headCap then
        local ok, msg = pcall(cjson.decode, raw)
        head = ''
        if ok and type(msg) == 'table' then
          msg.body = ''
          local ok2, enc = pcall(cjson.encode, msg)
          if ok2 then head = enc end
        end
      end
      if #head > headCap then head = '' end
      out[#out+1] = {'', head, KEYS[i], #raw}
    else
      -- Fast path for what kombu (Python's json.dumps) writes; anything else
      -- is decoded properly.
      local tag = string.match(raw, '"delivery_tag": "([^"\\]+)"}}$')
      local ex, rk = string.match(raw, '"delivery_info": {"exchange": "([^"\\]*)", "routing_key": "([^"\\]*)"}')
      if not tag or not ex then
        tag, ex, rk = nil, nil, nil
        local ok, msg = pcall(cjson.decode, raw)
        if ok and type(msg) == 'table' and type(msg.properties) == 'table' then
          tag = msg.properties.delivery_tag
          local di = msg.properties.delivery_info
          if type(di) == 'table' then ex = di.exchange; rk = di.routing_key end
        end
      end
      if type(tag) ~= 'string' or tag == '' then
        redis.call('LPUSH', KEYS[3], raw)
        out[#out+1] = {'', raw, KEYS[i], 0}
      else
        if type(ex) ~= 'string' then ex = '' end
        if type(rk) ~= 'string' then rk = ARGV[3] end
        redis.call('ZADD', KEYS[2], ARGV[2], tag)
        redis.call('HSET', KEYS[1], tag, '[' .. raw .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
        out[#out+1] = {tag, raw, KEYS[i], 0}
      end
    end
  end
end
return out
`)

// Fetch takes up to max messages, waiting up to wait for the first one. Every
// returned message with a Tag is in `unacked` and must be acknowledged,
// retried, dead-lettered or requeued; one without a Tag was moved to the dead
// list already. An empty result with a nil error means nothing arrived in time.
func (b *Broker) Fetch(ctx context.Context, max int, wait time.Duration) ([]Delivery, error) {
	if max <= 0 {
		return nil, nil
	}
	ds, err := b.take(ctx, max)
	if err != nil || len(ds) > 0 || wait <= 0 {
		return ds, err
	}
	if err := b.wait(ctx, wait); err != nil {
		return nil, err
	}
	return b.take(ctx, max)
}

// wait is a blocking peek on the main list: BLMOVE pops the oldest entry and
// pushes it back to the same end, atomically; nothing is taken. The entry it
// returns is skipped on the socket, never read into memory, since it may be
// any size.
//
// Redis before 6.2 has no BLMOVE; when the server says so, wait uses
// BRPOPLPUSH q q instead (Redis 6.0 takes its decimal timeout). That one
// pushes the entry back at the other end: a no-op for the one entry that
// woke it, but should several arrive at once, the oldest goes behind the
// others.
func (b *Broker) wait(ctx context.Context, wait time.Duration) error {
	b.waitMu.Lock()
	defer b.waitMu.Unlock()
	if b.waiter == nil {
		rc, err := b.dialer.dialRaw(ctx)
		if err != nil {
			return fmt.Errorf("wait on %s: %w", b.cfg.Queue, err)
		}
		b.waiter = rc
	}
	rc := b.waiter
	stop := context.AfterFunc(ctx, func() { rc.nc.SetDeadline(time.Now()) })
	defer stop()
	secs := strconv.FormatFloat(wait.Seconds(), 'f', 3, 64)
	deadline := time.Now().Add(wait + b.cfg.CommandTimeout)
	var err error
	if !b.legacy && !b.cfg.brpoplpush {
		_, err = rc.do(deadline, "BLMOVE", b.queues[0], b.queues[0], "RIGHT", "RIGHT", secs)
		b.legacy = unknownCommand(err)
	}
	if b.legacy || b.cfg.brpoplpush {
		_, err = rc.do(deadline, "BRPOPLPUSH", b.queues[0], b.queues[0], secs)
	}
	if err != nil {
		var re redis.Error
		if !errors.As(err, &re) {
			rc.Close() // the stream may be mid-reply: start afresh next time
			b.waiter = nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("wait on %s: %w", b.cfg.Queue, err)
	}
	return nil
}

// unknownCommand tells the server's reply to a command it does not have
// ("ERR unknown command `BLMOVE`, with args beginning with: ...").
func unknownCommand(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(string(re), "ERR unknown command")
}

func (b *Broker) take(ctx context.Context, max int) ([]Delivery, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	keys := append([]any{b.k.unacked, b.k.unackedIndex, b.dead}, toAny(b.queues)...)
	args := append(keys, max, epoch(time.Now()), b.cfg.Queue, b.cfg.MaxMessageBytes, maxHeadBytes)
	reply, err := redis.Values(fetchScript.Do(c, append([]any{len(keys)}, args...)...))
	if err != nil {
		return nil, fmt.Errorf("take from %s: %w", b.cfg.Queue, err)
	}
	out := make([]Delivery, 0, len(reply))
	for _, r := range reply {
		parts, err := redis.Values(r, nil)
		if err != nil || len(parts) != 4 {
			return out, fmt.Errorf("take from %s: unexpected reply %v", b.cfg.Queue, r)
		}
		tag, _ := redis.String(parts[0], nil)
		raw, _ := redis.Bytes(parts[1], nil)
		queue, _ := redis.String(parts[2], nil)
		size, _ := redis.Int(parts[3], nil)
		d := Delivery{Tag: tag, Raw: raw, Queue: queue, TooLarge: size}
		if d.TooLarge > 0 && len(d.Raw) == 0 {
			d.Raw = nil
		}
		out = append(out, d)
	}
	return out, nil
}

// Ack removes a message from `unacked`: it is done.
func (b *Broker) Ack(ctx context.Context, tags ...string) error {
	if len(tags) == 0 {
		return nil
	}
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.Send("MULTI")
	_ = c.Send("ZREM", append([]any{b.k.unackedIndex}, toAny(tags)...)...)
	_ = c.Send("HDEL", append([]any{b.k.unacked}, toAny(tags)...)...)
	if _, err := c.Do("EXEC"); err != nil {
		return fmt.Errorf("ack %d messages: %w", len(tags), err)
	}
	return nil
}

// Refresh moves the `unacked_index` score of held messages to now, so that no
// restore treats them as lost. Tags that are no longer there are not re-added.
func (b *Broker) Refresh(ctx context.Context, tags []string) error {
	if len(tags) == 0 {
		return nil
	}
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	now := epoch(time.Now())
	args := []any{b.k.unackedIndex, "XX", "CH"}
	for _, t := range tags {
		args = append(args, now, t)
	}
	if _, err := c.Do("ZADD", args...); err != nil {
		return fmt.Errorf("refresh %d held messages: %w", len(tags), err)
	}
	return nil
}

// Republish atomically replaces a held message by a new one (a retry):
// the new message is pushed onto queue's list for priority, the old one is
// acknowledged.
func (b *Broker) Republish(ctx context.Context, tag string, raw []byte, priority int) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.Send("MULTI")
	_ = c.Send("LPUSH", b.k.list(b.cfg.Queue, priority), raw)
	_ = c.Send("ZREM", b.k.unackedIndex, tag)
	_ = c.Send("HDEL", b.k.unacked, tag)
	if _, err := c.Do("EXEC"); err != nil {
		return fmt.Errorf("republish %s: %w", tag, err)
	}
	return nil
}

// DeadLetter atomically moves a held message, whole, to `<queue>.dead`.
func (b *Broker) DeadLetter(ctx context.Context, tag string, raw []byte) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.Send("MULTI")
	_ = c.Send("LPUSH", b.dead, raw)
	_ = c.Send("ZREM", b.k.unackedIndex, tag)
	_ = c.Send("HDEL", b.k.unacked, tag)
	if _, err := c.Do("EXEC"); err != nil {
		return fmt.Errorf("dead-letter %s: %w", tag, err)
	}
	return nil
}

// Requeue gives a held message back to its queue now (on shutdown), as
// kombu's restore_by_tag does.
func (b *Broker) Requeue(ctx context.Context, tag string) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return b.restoreByTag(c, tag)
}

// restoreByTag is kombu's QoS.restore_by_tag: under WATCH unacked, read the
// entry, remove it from both indices and RPUSH the message (marked
// redelivered) to the list its exchange and routing key lead to.
func (b *Broker) restoreByTag(c redis.Conn, tag string) error {
	for range 10 {
		if _, err := c.Do("WATCH", b.k.unacked); err != nil {
			return fmt.Errorf("restore %s: %w", tag, err)
		}
		p, err := redis.Bytes(c.Do("HGET", b.k.unacked, tag))
		if err != nil && !errors.Is(err, redis.ErrNil) {
			_, _ = c.Do("UNWATCH")
			return fmt.Errorf("restore %s: %w", tag, err)
		}
		var target string
		var msg []byte
		if p != nil {
			target, msg, err = b.restoreTarget(c, p)
			if err != nil {
				// Unreadable entry: keep it out of the way, whole, for a person.
				target, msg = b.dead, p
			}
		}
		_ = c.Send("MULTI")
		_ = c.Send("ZREM", b.k.unackedIndex, tag)
		_ = c.Send("HDEL", b.k.unacked, tag)
		if target != "" {
			_ = c.Send("RPUSH", target, msg)
		}
		reply, err := c.Do("EXEC")
		if err != nil {
			return fmt.Errorf("restore %s: %w", tag, err)
		}
		if reply != nil {
			return nil
		}
		// The hash changed under us (an ack, another restore): look again.
	}
	return fmt.Errorf("restore %s: hash kept changing", tag)
}

func (b *Broker) restoreTarget(c redis.Conn, entry []byte) (string, []byte, error) {
	var triple []json.RawMessage
	if err := json.Unmarshal(entry, &triple); err != nil || len(triple) != 3 {
		return "", nil, fmt.Errorf("unacked entry is not [message, exchange, routing_key]: %w", err)
	}
	var exchange, rk string
	if err := json.Unmarshal(triple[1], &exchange); err != nil {
		return "", nil, err
	}
	if err := json.Unmarshal(triple[2], &rk); err != nil {
		return "", nil, err
	}
	msg, err := celery.MarkRedelivered(triple[0])
	if err != nil {
		return "", nil, err
	}
	var env struct {
		Properties struct {
			Priority int `json:"priority"`
		} `json:"properties"`
	}
	_ = json.Unmarshal(triple[0], &env)
	queue := rk
	if exchange != "" {
		if qs, err := b.lookup(c, exchange, rk); err == nil && len(qs) > 0 {
			queue = qs[0]
		}
	}
	if queue == "" {
		return "", nil, errors.New("unacked entry names no queue")
	}
	return b.k.list(queue, env.Properties.Priority), msg, nil
}

// lookup finds the queues bound to a direct exchange for a routing key, from
// kombu's `_kombu.binding.<exchange>` sets ("rk\x06\x16pattern\x06\x16queue").
func (b *Broker) lookup(c redis.Conn, exchange, rk string) ([]string, error) {
	members, err := redis.Strings(c.Do("SMEMBERS", b.k.binding(exchange)))
	if err != nil {
		return nil, err
	}
	var qs []string
	for _, m := range members {
		parts := strings.Split(m, b.k.sep)
		if len(parts) == 3 && parts[0] == rk {
			qs = append(qs, parts[2])
		}
	}
	return qs, nil
}

var releaseMutexScript = redis.NewScript(1, `
local token = redis.call('get', KEYS[1])
if not token or token ~= ARGV[1] then
    return 0
end
redis.call('del', KEYS[1])
return 1
`)

// RestoreVisible re-queues every message whose `unacked_index` score is older
// than the visibility timeout, under `unacked_mutex`, as kombu's
// QoS.restore_visible does. It returns how many it restored; when another
// process holds the mutex it restores nothing.
func (b *Broker) RestoreVisible(ctx context.Context) (int, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	token := randomHex(16)
	ok, err := redis.String(c.Do("SET", b.k.mutex, token, "PX", b.cfg.MutexTTL.Milliseconds(), "NX"))
	if errors.Is(err, redis.ErrNil) {
		return 0, nil // held by another worker
	}
	if err != nil || ok != "OK" {
		return 0, fmt.Errorf("take %s: %w", b.k.mutex, err)
	}
	defer func() { _, _ = releaseMutexScript.Do(c, b.k.mutex, token) }()
	ceil := epoch(time.Now().Add(-b.cfg.VisibilityTimeout))
	n := 0
	for ctx.Err() == nil {
		tags, err := redis.Strings(c.Do("ZREVRANGEBYSCORE", b.k.unackedIndex, ceil, 0, "LIMIT", 0, 100))
		if err != nil {
			return n, fmt.Errorf("list expired unacked messages: %w", err)
		}
		if len(tags) == 0 {
			break
		}
		for _, tag := range tags {
			if err := b.restoreByTag(c, tag); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, ctx.Err()
}

// PublishFanout publishes on a fanout exchange (events, broadcast), on the
// channel kombu's Redis transport uses for it.
func (b *Broker) PublishFanout(ctx context.Context, exchange, routingKey string, raw []byte) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, ch := range b.fanoutChannels(exchange, routingKey) {
		if _, err := c.Do("PUBLISH", ch, raw); err != nil {
			return fmt.Errorf("publish on %s: %w", exchange, err)
		}
	}
	return nil
}

// fanoutChannels are the channels of a fanout exchange. On sentinel:// kombu
// 5.2 (Debian's, with Celery 5.2) never fills in the database of its
// '/{db}.' prefix (SentinelChannel._get_pool skips the format), so its
// pidbox and events travel on '/{db}.celery.pidbox' literally: certmgr uses
// that channel too, and the formatted one a kombu that fills it in uses.
func (b *Broker) fanoutChannels(exchange, routingKey string) []any {
	ch := b.k.fanout(b.db, exchange, routingKey)
	if len(b.dialer.ep.Sentinels) == 0 {
		return []any{ch}
	}
	formatted := b.k.prefix + "/" + strconv.Itoa(b.db) + "."
	return []any{ch, b.k.prefix + "/{db}." + strings.TrimPrefix(ch, formatted)}
}

// PublishDirect delivers a message on a direct exchange: to every queue bound
// with the routing key (the anonymous exchange "" routes to the queue named by
// the key), as kombu does for pidbox replies.
func (b *Broker) PublishDirect(ctx context.Context, exchange, routingKey string, raw []byte) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	qs := []string{routingKey}
	if exchange != "" {
		if qs, err = b.lookup(c, exchange, routingKey); err != nil {
			return fmt.Errorf("look up bindings of %s: %w", exchange, err)
		}
	}
	for _, q := range qs {
		if _, err := c.Do("LPUSH", b.k.list(q, 0), raw); err != nil {
			return fmt.Errorf("publish to %s: %w", q, err)
		}
	}
	return nil
}

// Subscribe listens on the fanout exchange's channel and calls fn for each
// message until ctx ends or the connection fails. It uses a connection of its
// own, closed when ctx ends.
func (b *Broker) Subscribe(ctx context.Context, exchange string, fn func([]byte)) error {
	c, err := b.pool.DialContext(ctx)
	if err != nil {
		return fmt.Errorf("redis connection: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	psc := redis.PubSubConn{Conn: c}
	if err := psc.Subscribe(b.fanoutChannels(exchange, "")...); err != nil {
		return fmt.Errorf("subscribe to %s: %w", exchange, err)
	}
	for {
		switch v := psc.ReceiveWithTimeout(0).(type) {
		case redis.Message:
			fn(v.Data)
		case error:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("receive on %s: %w", exchange, v)
		}
	}
}

// Ping checks the connection.
func (b *Broker) Ping(ctx context.Context) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = redis.DoContext(c, ctx, "PING")
	return err
}

// NewTag returns a fresh delivery tag (a UUID4, like kombu's).
func NewTag() string { return celery.NewTag() }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// epoch is kombu's time(): seconds since the epoch with a fraction.
func epoch(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMicro())/1e6, 'f', 6, 64)
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// Publish sends a task message to a queue, on the list kombu uses for its
// priority.
func (b *Broker) Publish(ctx context.Context, queue string, priority int, raw []byte) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Do("LPUSH", b.k.list(queue, priority), raw); err != nil {
		return fmt.Errorf("publish to %s: %w", queue, err)
	}
	return nil
}

// RevokedKey is the sorted set of revoked task ids (scored by the time
// until which they stay revoked) that every certmgr worker of the broker
// shares, so that a revoke outlives a restart and reaches a replica that
// missed the broadcast. Celery keeps these in each worker's memory only.
const RevokedKey = "certmgr.revoked"

// AddRevoked marks task ids revoked until the given time, drops the expired
// ones and keeps at most max (Celery's REVOKES_MAX).
func (b *Broker) AddRevoked(ctx context.Context, ids []string, until time.Time, max int) error {
	if len(ids) == 0 {
		return nil
	}
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	args := []any{b.k.prefix + RevokedKey}
	for _, id := range ids {
		args = append(args, epoch(until), id)
	}
	_ = c.Send("MULTI")
	_ = c.Send("ZADD", args...)
	_ = c.Send("ZREMRANGEBYSCORE", b.k.prefix+RevokedKey, "-inf", epoch(time.Now()))
	_ = c.Send("ZREMRANGEBYRANK", b.k.prefix+RevokedKey, 0, -(max + 1))
	_ = c.Send("PEXPIREAT", b.k.prefix+RevokedKey, until.UnixMilli())
	if _, err := c.Do("EXEC"); err != nil {
		return fmt.Errorf("add %d revoked ids: %w", len(ids), err)
	}
	return nil
}

// Revoked returns the ids revoked and not yet expired, with their expiry.
func (b *Broker) Revoked(ctx context.Context) (map[string]time.Time, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	vals, err := redis.Strings(c.Do("ZRANGEBYSCORE", b.k.prefix+RevokedKey, epoch(time.Now()), "+inf", "WITHSCORES"))
	if err != nil {
		return nil, fmt.Errorf("read revoked ids: %w", err)
	}
	out := make(map[string]time.Time, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		f, _ := strconv.ParseFloat(vals[i+1], 64)
		out[vals[i]] = time.UnixMicro(int64(f * 1e6))
	}
	return out, nil
}
