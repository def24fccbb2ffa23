package redisbroker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Options are the kombu Redis transport options certmgr implements, as
// Django sets them in CELERY_BROKER_TRANSPORT_OPTIONS (broker_transport_options).
// The zero value is kombu's defaults.
type Options struct {
	// GlobalKeyPrefix is prepended to every key and channel kombu uses:
	// queue lists, unacked, unacked_index, unacked_mutex, the binding sets
	// (pidbox replies) and the fanout channels (events, broadcast).
	GlobalKeyPrefix string
	// Sep separates a queue's name from its priority step, and the fields
	// of a binding. Default "\x06\x16".
	Sep string
	// PrioritySteps are the priorities that get a list of their own; a
	// message goes to the highest step at or below its priority, and lists
	// are served in step order (lowest first). Default [0, 3, 6, 9].
	PrioritySteps []int
	// QueueOrderStrategy is round_robin (default), sorted or priority. It
	// orders several consumed queues; certmgr consumes one queue, so the
	// three behave alike here.
	QueueOrderStrategy QueueOrder
	// VisibilityTimeout overrides the worker's visibility timeout when set.
	VisibilityTimeout time.Duration
	// UnackedKey, UnackedIndexKey and UnackedMutexKey rename kombu's keys
	// (before the global prefix). Defaults unacked, unacked_index, unacked_mutex.
	UnackedKey, UnackedIndexKey, UnackedMutexKey string
	// UnackedMutexExpire bounds how long unacked_mutex is held. Default 300s.
	UnackedMutexExpire time.Duration
	// SocketTimeout bounds each command; SocketConnectTimeout connecting.
	SocketTimeout, SocketConnectTimeout time.Duration
	// MaxConnections bounds the connection pool. Default 10, kombu's.
	MaxConnections int
	// MasterName is the Sentinel master group (sentinel:// URLs only).
	MasterName string
	// SentinelUsername and SentinelPassword authenticate to the sentinels
	// (sentinel_kwargs {"username": ..., "password": ...}).
	SentinelUsername, SentinelPassword string
}

// QueueOrder is kombu's queue_order_strategy.
type QueueOrder string

// The queue orders kombu knows.
const (
	RoundRobin    QueueOrder = "round_robin"
	SortedOrder   QueueOrder = "sorted"
	PriorityOrder QueueOrder = "priority"
)

// ParseQueueOrder parses a queue_order_strategy.
func ParseQueueOrder(s string) (QueueOrder, error) {
	switch q := QueueOrder(s); q {
	case RoundRobin, SortedOrder, PriorityOrder:
		return q, nil
	}
	return "", fmt.Errorf("queue_order_strategy %q: want round_robin, sorted or priority", s)
}

// defaultPrioritySteps is kombu's PRIORITY_STEPS.
var defaultPrioritySteps = []int{0, 3, 6, 9}

func (o Options) withDefaults() Options {
	if o.Sep == "" {
		o.Sep = "\x06\x16"
	}
	if len(o.PrioritySteps) == 0 {
		o.PrioritySteps = defaultPrioritySteps
	}
	if o.QueueOrderStrategy == "" {
		o.QueueOrderStrategy = RoundRobin
	}
	if o.UnackedKey == "" {
		o.UnackedKey = UnackedKey
	}
	if o.UnackedIndexKey == "" {
		o.UnackedIndexKey = UnackedIndexKey
	}
	if o.UnackedMutexKey == "" {
		o.UnackedMutexKey = UnackedMutexKey
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = 10
	}
	return o
}

// OptionError is a transport option certmgr cannot honour: unknown to it, or
// of the wrong type.
type OptionError struct {
	Setting string // CELERY_BROKER_TRANSPORT_OPTIONS or CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS
	Option  string
	Problem string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("%s: option %q: %s", e.Setting, e.Option, e.Problem)
}

// ParseOptions reads kombu Redis transport options from JSON (the Python
// dict of CELERY_BROKER_TRANSPORT_OPTIONS written as JSON). An option kombu
// has but certmgr does not implement, or any other key, is an error naming
// it: an ignored option would leave messages where nobody looks.
func ParseOptions(setting, raw string) (Options, error) {
	var o Options
	if strings.TrimSpace(raw) == "" {
		return o, nil
	}
	var m map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return o, fmt.Errorf("%s: not a JSON object: %w", setting, err)
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var errs []error
	bad := func(k, format string, args ...any) {
		errs = append(errs, &OptionError{Setting: setting, Option: k, Problem: fmt.Sprintf(format, args...)})
	}
	for _, k := range names {
		v := m[k]
		switch k {
		case "global_keyprefix":
			if err := json.Unmarshal(v, &o.GlobalKeyPrefix); err != nil {
				bad(k, "want a string")
			}
		case "sep":
			if err := json.Unmarshal(v, &o.Sep); err != nil || o.Sep == "" {
				bad(k, "want a non-empty string")
			}
		case "priority_steps":
			if err := json.Unmarshal(v, &o.PrioritySteps); err != nil || len(o.PrioritySteps) == 0 {
				bad(k, "want a non-empty list of whole numbers")
				break
			}
			if !strictlyAscending(o.PrioritySteps) || o.PrioritySteps[0] != 0 || o.PrioritySteps[len(o.PrioritySteps)-1] > 255 {
				bad(k, "want distinct ascending priorities starting at 0, like [0, 3, 6, 9]")
			}
		case "queue_order_strategy":
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				bad(k, "want a string")
				break
			}
			q, err := ParseQueueOrder(s)
			if err != nil {
				bad(k, "%v", err)
			}
			o.QueueOrderStrategy = q
		case "visibility_timeout":
			o.VisibilityTimeout = seconds(v, func(p string) { bad(k, "%s", p) })
		case "unacked_mutex_expire":
			o.UnackedMutexExpire = seconds(v, func(p string) { bad(k, "%s", p) })
		case "socket_timeout":
			o.SocketTimeout = seconds(v, func(p string) { bad(k, "%s", p) })
		case "socket_connect_timeout":
			o.SocketConnectTimeout = seconds(v, func(p string) { bad(k, "%s", p) })
		case "unacked_key", "unacked_index_key", "unacked_mutex_key":
			var s string
			if err := json.Unmarshal(v, &s); err != nil || s == "" {
				bad(k, "want a non-empty string")
			}
			switch k {
			case "unacked_key":
				o.UnackedKey = s
			case "unacked_index_key":
				o.UnackedIndexKey = s
			default:
				o.UnackedMutexKey = s
			}
		case "max_connections":
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil || n < 1 {
				bad(k, "want a whole number of at least 1")
			}
			o.MaxConnections = n
		case "master_name":
			if err := json.Unmarshal(v, &o.MasterName); err != nil || o.MasterName == "" {
				bad(k, "want a non-empty string")
			}
		case "sentinel_kwargs":
			var sk map[string]json.RawMessage
			if err := json.Unmarshal(v, &sk); err != nil {
				bad(k, "want an object")
				break
			}
			for sk2, sv := range sk {
				switch sk2 {
				case "password":
					if json.Unmarshal(sv, &o.SentinelPassword) != nil {
						bad(k, "password: want a string")
					}
				case "username":
					if json.Unmarshal(sv, &o.SentinelUsername) != nil {
						bad(k, "username: want a string")
					}
				default:
					bad(k, "key %q is not supported (only username and password)", sk2)
				}
			}
		default:
			bad(k, "not supported by certmgr (supported: global_keyprefix, sep, priority_steps, "+
				"queue_order_strategy, visibility_timeout, unacked_key, unacked_index_key, unacked_mutex_key, "+
				"unacked_mutex_expire, socket_timeout, socket_connect_timeout, max_connections, master_name, sentinel_kwargs)")
		}
	}
	return o, errors.Join(errs...)
}

func strictlyAscending(s []int) bool {
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			return false
		}
	}
	return true
}

// ParseBackendOptions reads Celery's result_backend_transport_options for a
// Redis result backend (CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS): only
// master_name and sentinel_kwargs, for sentinel:// backends; anything else
// is an error naming it.
func ParseBackendOptions(setting, raw string) (Options, error) {
	if strings.TrimSpace(raw) == "" {
		return Options{}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return Options{}, fmt.Errorf("%s: not a JSON object: %w", setting, err)
	}
	var errs []error
	for k := range m {
		if k != "master_name" && k != "sentinel_kwargs" {
			errs = append(errs, &OptionError{Setting: setting, Option: k, Problem: "not supported by certmgr (supported: master_name, sentinel_kwargs)"})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Options{}, err
	}
	return ParseOptions(setting, raw)
}

// seconds reads a positive number of seconds.
func seconds(v json.RawMessage, bad func(string)) time.Duration {
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64)
	if err != nil || f <= 0 {
		bad("want a positive number of seconds")
		return 0
	}
	return time.Duration(f * float64(time.Second))
}

// keys are kombu's key and channel names under a set of options.
type keys struct {
	prefix, sep                  string
	steps                        []int
	unacked, unackedIndex, mutex string
	bindingPrefix                string
}

func newKeys(o Options) keys {
	return keys{
		prefix:        o.GlobalKeyPrefix,
		sep:           o.Sep,
		steps:         o.PrioritySteps,
		unacked:       o.GlobalKeyPrefix + o.UnackedKey,
		unackedIndex:  o.GlobalKeyPrefix + o.UnackedIndexKey,
		mutex:         o.GlobalKeyPrefix + o.UnackedMutexKey,
		bindingPrefix: o.GlobalKeyPrefix + bindingPrefix,
	}
}

// step is kombu's Channel.priority: the highest step at or below n, with n
// clamped to 0..9 first.
func (k keys) step(n int) int {
	n = min(max(n, 0), 9)
	s := k.steps[0]
	for _, st := range k.steps {
		if n >= st {
			s = st
		}
	}
	return s
}

// queueName is kombu's _q_for_pri, without the global prefix: the name as it
// appears inside messages and bindings.
func (k keys) queueName(queue string, priority int) string {
	if s := k.step(priority); s != 0 {
		return queue + k.sep + strconv.Itoa(s)
	}
	return queue
}

// list is the Redis key of queue's list for a priority.
func (k keys) list(queue string, priority int) string {
	return k.prefix + k.queueName(queue, priority)
}

// lists are queue's lists in the order they are served.
func (k keys) lists(queue string) []string {
	out := make([]string, 0, len(k.steps))
	for _, s := range k.steps {
		out = append(out, k.list(queue, s))
	}
	return out
}

// binding is the key of an exchange's binding set.
func (k keys) binding(exchange string) string { return k.bindingPrefix + exchange }

// fanout is the channel a fanout exchange publishes on (kombu's
// _get_publish_topic with fanout_prefix and fanout_patterns on).
func (k keys) fanout(db int, exchange, routingKey string) string {
	ch := k.prefix + "/" + strconv.Itoa(db) + "." + exchange
	if routingKey != "" {
		ch += "/" + routingKey
	}
	return ch
}
