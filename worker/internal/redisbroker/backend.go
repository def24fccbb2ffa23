package redisbroker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// BackendConfig configures a Backend.
type BackendConfig struct {
	// URL is the result backend, in any form ParseURL takes. Required.
	URL string
	// Options are the connection options of result_backend_transport_options
	// (master_name and sentinel_kwargs for sentinel:// URLs).
	Options Options
	// Expires is how long results are kept (SETEX). Default 24h, Celery's
	// result_expires; negative keeps them forever.
	Expires time.Duration
	// DialTimeout and CommandTimeout as in Config. Defaults 5s and 10s.
	DialTimeout    time.Duration
	CommandTimeout time.Duration
}

// Backend stores task states in Celery's Redis result backend format.
type Backend struct {
	cfg  BackendConfig
	pool *redis.Pool
}

// NewBackend prepares a result backend; it does not connect.
func NewBackend(cfg BackendConfig) (*Backend, error) {
	if cfg.URL == "" {
		return nil, errors.New("redisbroker: backend URL is required")
	}
	cfg.Expires = cmp.Or(cfg.Expires, 24*time.Hour)
	d, err := newDialer(cfg.URL, cfg.Options, cmp.Or(cfg.DialTimeout, 5*time.Second), cmp.Or(cfg.CommandTimeout, 10*time.Second))
	if err != nil {
		return nil, err
	}
	return &Backend{cfg: cfg, pool: d.pool(16)}, nil
}

// Close releases the backend's connections.
func (b *Backend) Close() error { return b.pool.Close() }

// storeScript is Celery's RedisBackend._set with the check _store_result does
// first: a SUCCESS already stored is never overwritten (a duplicate delivery
// must not turn a success into a failure).
var storeScript = redis.NewScript(1, `
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, m = pcall(cjson.decode, cur)
  if ok and type(m) == 'table' and m.status == 'SUCCESS' then return 0 end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
`)

// Store writes a task's state: SETEX celery-task-meta-<id> and PUBLISH on the
// same name, which is what AsyncResult.get() waits on.
func (b *Backend) Store(ctx context.Context, meta celery.ResultMeta) error {
	raw, err := meta.Encode()
	if err != nil {
		return fmt.Errorf("encode result of %s: %w", meta.TaskID, err)
	}
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("result backend connection: %w", err)
	}
	defer c.Close()
	expires := b.ttlSeconds()
	if _, err := storeScript.Do(c, celery.ResultKeyPrefix+meta.TaskID, raw, expires); err != nil {
		return fmt.Errorf("store %s of %s: %w", meta.Status, meta.TaskID, err)
	}
	return nil
}

// ttlSeconds is the results' expiry for SETEX; 0 keeps them forever.
func (b *Backend) ttlSeconds() int64 {
	if b.cfg.Expires <= 0 {
		return 0
	}
	return max(int64(b.cfg.Expires/time.Second), 1)
}

// Result is an encoded result document (celery.ResultMeta.Encode).
type Result = celery.EncodedResult

// StoreMany writes several states in one pipelined round trip, in order.
func (b *Backend) StoreMany(ctx context.Context, metas []Result) error {
	if len(metas) == 0 {
		return nil
	}
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("result backend connection: %w", err)
	}
	defer c.Close()
	expires := b.ttlSeconds()
	for range 2 {
		for i, m := range metas {
			if err := storeScript.SendHash(c, celery.ResultKeyPrefix+metas[i].TaskID, m.Raw, expires); err != nil {
				return fmt.Errorf("store %d results: %w", len(metas), err)
			}
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("store %d results: %w", len(metas), err)
		}
		var firstErr error
		noScript := false
		for range metas {
			if _, err := c.Receive(); err != nil {
				if strings.HasPrefix(err.Error(), "NOSCRIPT") {
					noScript = true
				} else if firstErr == nil {
					firstErr = err
				}
			}
		}
		if firstErr != nil {
			return fmt.Errorf("store %d results: %w", len(metas), firstErr)
		}
		if !noScript {
			return nil
		}
		if err := storeScript.Load(c); err != nil {
			return fmt.Errorf("load result script: %w", err)
		}
	}
	return errors.New("store results: script kept disappearing")
}

// Get reads a stored result (for tests and tools).
func (b *Backend) Get(ctx context.Context, taskID string) ([]byte, error) {
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("result backend connection: %w", err)
	}
	defer c.Close()
	v, err := redis.Bytes(c.Do("GET", celery.ResultKeyPrefix+taskID))
	if errors.Is(err, redis.ErrNil) {
		return nil, nil
	}
	return v, err
}

// settleScript stores results (as storeScript does, never overwriting a
// SUCCESS) and then acknowledges messages, in one atomic step.
var settleScript = redis.NewScript(-1, `
local exp = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
for i = 1, n do
  local key = KEYS[2 + i]
  local val = ARGV[2 + i]
  local keep = false
  local cur = redis.call('GET', key)
  if cur then
    local ok, m = pcall(cjson.decode, cur)
    keep = ok and type(m) == 'table' and m.status == 'SUCCESS'
  end
  if not keep then
    if exp > 0 then
      redis.call('SETEX', key, exp, val)
    else
      redis.call('SET', key, val)
    end
    redis.call('PUBLISH', key, val)
  end
end
for i = 3 + n, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[1], ARGV[i])
end
return 1
`)

// StoreAndAck stores results in the broker's own database and acknowledges
// messages, atomically and in one round trip. Use it only when the result
// backend is the broker's database (CELERY_RESULT_BACKEND unset or equal).
func (b *Broker) StoreAndAck(ctx context.Context, results []Result, expires time.Duration, tags []string) error {
	if len(results) == 0 && len(tags) == 0 {
		return nil
	}
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	exp := int64(0)
	if expires > 0 {
		exp = max(int64(expires/time.Second), 1)
	}
	keys := make([]any, 0, 2+len(results))
	keys = append(keys, b.k.unacked, b.k.unackedIndex)
	args := make([]any, 0, 2+len(results)+len(tags))
	args = append(args, exp, len(results))
	for _, r := range results {
		keys = append(keys, celery.ResultKeyPrefix+r.TaskID)
		args = append(args, r.Raw)
	}
	for _, t := range tags {
		args = append(args, t)
	}
	if _, err := settleScript.Do(c, append(append([]any{len(keys)}, keys...), args...)...); err != nil {
		return fmt.Errorf("store %d results and ack %d messages: %w", len(results), len(tags), err)
	}
	return nil
}

// chordScript is Celery 5.2's RedisBackend.on_chord_part_return in one
// atomic step: add the part's encoded result to the join set
// (celery-taskset-meta-<group>.j, scored by group_index), and when as many
// parts are there as the chord size (.s) plus adjustments (.t), hand all of
// them back and delete the keys. A group result saved under the plain key
// means a nested header this worker cannot join: reported, keys kept.
var chordScript = redis.NewScript(4, `
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
local diff = tonumber(redis.call('GET', KEYS[2]) or '0')
local size = redis.call('GET', KEYS[3])
local exp = tonumber(ARGV[3])
if exp > 0 then
  redis.call('EXPIRE', KEYS[1], exp)
  redis.call('EXPIRE', KEYS[2], exp)
  redis.call('EXPIRE', KEYS[3], exp)
end
if not size or ready ~= tonumber(size) + diff then
  return {0}
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {2}
end
local all = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {1, all}
`)

// ErrNestedChord is returned when a chord's header holds groups: joining
// them needs Celery's GroupResult, which only Python can restore.
var ErrNestedChord = errors.New("chord header holds nested groups")

// ChordPartReturn records one header task's result (encoded as Celery
// encodes [1, task_id, state, result]) for chord group; when it is the last
// part, it returns every part's encoding in group order, and the chord's
// keys are gone.
func (b *Backend) ChordPartReturn(ctx context.Context, group string, index *int, encoded []byte) ([][]byte, bool, error) {
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("result backend connection: %w", err)
	}
	defer c.Close()
	score := "+inf"
	if index != nil {
		score = fmt.Sprint(*index)
	}
	key := celery.GroupKeyPrefix + group
	reply, err := redis.Values(chordScript.Do(c, key+".j", key+".t", key+".s", key, encoded, score, b.ttlSeconds()))
	if err != nil {
		return nil, false, fmt.Errorf("chord %s part return: %w", group, err)
	}
	state, _ := redis.Int(reply[0], nil)
	switch state {
	case 0:
		return nil, false, nil
	case 2:
		return nil, false, fmt.Errorf("chord %s: %w", group, ErrNestedChord)
	}
	parts, err := redis.ByteSlices(reply[1], nil)
	if err != nil {
		return nil, false, fmt.Errorf("chord %s parts: %w", group, err)
	}
	return parts, true, nil
}

// transientReplies are the Redis error codes that say the server cannot
// serve the command now, not that the command is wrong: loading its data,
// a replica or a master that is down or failing over, a busy script, a full
// memory, a failed disk save, or a login that an operator may fix.
var transientReplies = []string{
	"LOADING", "READONLY", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS",
	"OOM", "MISCONF", "NOSCRIPT", "NOAUTH", "WRONGPASS", "NOPERM", "MOVED", "ASK",
}

// Permanent reports whether err is Redis refusing a command for what it
// is (an error reply such as WRONGTYPE on a key holding another type),
// which sending it again cannot change. Connection errors, timeouts and
// the replies in transientReplies are not permanent. An error raised by a
// call inside a script keeps its code after the script's prefix.
func Permanent(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := string(re)
	for _, code := range transientReplies {
		if strings.HasPrefix(msg, code+" ") || msg == code ||
			strings.Contains(msg, ": "+code+" ") || strings.Contains(msg, "-"+code+" ") {
			return false
		}
	}
	return true
}
