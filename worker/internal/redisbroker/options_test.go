package redisbroker

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	t.Parallel()
	o, err := ParseOptions("X", `{"global_keyprefix": "midsummer:", "sep": ":", "priority_steps": [0,1,2,3,4,5,6,7,8,9],
		"queue_order_strategy": "priority", "visibility_timeout": 7200.5, "unacked_mutex_expire": 60, "max_connections": 20,
		"master_name": "mymaster", "sentinel_kwargs": {"password": "pw"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if o.GlobalKeyPrefix != "midsummer:" || o.Sep != ":" || !slices.Equal(o.PrioritySteps, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) ||
		o.QueueOrderStrategy != PriorityOrder || o.VisibilityTimeout != 7200500*time.Millisecond ||
		o.UnackedMutexExpire != time.Minute || o.MaxConnections != 20 || o.MasterName != "mymaster" || o.SentinelPassword != "pw" {
		t.Fatalf("options = %+v", o)
	}
}

func TestParseOptionsNamesEveryBadOption(t *testing.T) {
	t.Parallel()
	_, err := ParseOptions("CELERY_BROKER_TRANSPORT_OPTIONS", `{"fanout_prefix": false, "priority_steps": [3, 0], "queue_order_strategy": "random", "visibility_timeout": "soon", "sep": ""}`)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`CELERY_BROKER_TRANSPORT_OPTIONS: option "fanout_prefix": not supported`, `"priority_steps"`, `"queue_order_strategy"`, `"visibility_timeout"`, `"sep"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	var oe *OptionError
	if !errors.As(err, &oe) {
		t.Errorf("%T is not an *OptionError", err)
	}
	if _, err := ParseOptions("X", `[1]`); err == nil || !strings.Contains(err.Error(), "not a JSON object") {
		t.Errorf("a list: %v", err)
	}
}

// The key names follow kombu's _q_for_pri and priority(): the highest step at
// or below the priority, clamped to 0..9.
func TestKeysFollowKombu(t *testing.T) {
	t.Parallel()
	k := newKeys(Options{GlobalKeyPrefix: "p:", Sep: ":", PrioritySteps: []int{0, 3, 6, 9}}.withDefaults())
	for pri, want := range map[int]string{-1: "p:q", 0: "p:q", 2: "p:q", 3: "p:q:3", 5: "p:q:3", 9: "p:q:9", 12: "p:q:9"} {
		if got := k.list("q", pri); got != want {
			t.Errorf("priority %d: %q, want %q", pri, got, want)
		}
	}
	if got := k.fanout(3, "celeryev", "worker.heartbeat"); got != "p:/3.celeryev/worker.heartbeat" {
		t.Errorf("fanout %q", got)
	}
	if got := k.binding("reply.celery.pidbox"); got != "p:_kombu.binding.reply.celery.pidbox" {
		t.Errorf("binding %q", got)
	}
}
