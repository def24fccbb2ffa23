package amqpbroker

import (
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"amqp://guest:guest@h:5672//":  "amqp://guest:guest@h:5672//",
		"pyamqp://u:p@h/vh":            "amqp://u:p@h/vh",
		"amqps://u:p@h:5671/vh":        "amqps://u:p@h:5671/vh",
		"amqp://u:p@h/vh?heartbeat=30": "amqp://u:p@h/vh?heartbeat=30",
	} {
		got, _, _, err := ParseURL(in)
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", in, got, err, want)
		}
	}
	_, tlsCfg, _, err := ParseURL("amqps://u:p@h/vh?ssl_cert_reqs=CERT_NONE")
	if err != nil || tlsCfg == nil || !tlsCfg.InsecureSkipVerify {
		t.Errorf("amqps with CERT_NONE: %+v %v", tlsCfg, err)
	}
	for in, want := range map[string]string{
		"amqp://u:hunter2@h/vh?ssl_cert_reqs=required": "need the amqps:// scheme",
		"amqp://u:hunter2@h/vh?confirm_publish=1":      `"confirm_publish" is not supported`,
		"qpid://u:hunter2@h/vh":                        `scheme "qpid"`,
		"amqp://u:hunter2@/vh":                         "no host",
	} {
		_, _, _, err := ParseURL(in)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v", in, err)
		}
	}
}

// An AMQP delivery becomes kombu's envelope (the worker's decoder reads it)
// and a retry envelope becomes an AMQP message with the same header types.
func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	body := `[["x"], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`
	d := amqp.Delivery{
		Headers: amqp.Table{"lang": "py", "task": "certmgr.ping", "id": "6c1c1d5e-0000-4000-8000-000000000001",
			"retries": int32(0), "timelimit": []any{nil, nil}, "eta": nil, "root_id": "6c1c1d5e-0000-4000-8000-000000000001",
			"parent_id": nil, "group": nil, "argsrepr": "['x']", "kwargsrepr": "{}", "ignore_result": false},
		ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: 2, Priority: 3,
		CorrelationId: "6c1c1d5e-0000-4000-8000-000000000001", ReplyTo: "reply-q", Exchange: "certmgr", RoutingKey: "certmgr",
		Body: []byte(body),
	}
	raw, err := Envelope(d, "1.7")
	if err != nil {
		t.Fatal(err)
	}
	m, err := celery.DecodeMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	if m.Task != "certmgr.ping" || m.ID != d.CorrelationId || len(m.Args) != 1 || m.Priority != 3 {
		t.Fatalf("decoded %+v", m)
	}
	retry, err := celery.RetryEnvelope(raw, 1, time.Now().Add(time.Minute), "x")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Publishing(retry)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Body) != body || p.CorrelationId != d.CorrelationId || p.ReplyTo != "reply-q" || p.DeliveryMode != 2 {
		t.Errorf("publishing %+v", p)
	}
	if r, ok := p.Headers["retries"].(int64); !ok || r != 1 {
		t.Errorf("retries header %T %v, want int64 1", p.Headers["retries"], p.Headers["retries"])
	}
	if _, ok := p.Headers["eta"].(string); !ok {
		t.Errorf("eta header %T", p.Headers["eta"])
	}
	if err := p.Headers.Validate(); err != nil {
		t.Errorf("headers not a valid AMQP table: %v", err)
	}
}

// The reason RabbitMQ gives when it closes a channel is carried in Fetch's
// error, and an expired consumer_timeout is told apart (errors.Is).
func TestCloseError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc     string
		reason   *amqp.Error
		want     string
		deadline bool
	}{
		{desc: "no reason", want: "consume q: the channel closed"},
		{desc: "consumer_timeout", reason: &amqp.Error{Code: amqp.PreconditionFailed, Server: true,
			Reason: "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1800000 ms. This timeout value can be configured, see consumers doc guide to learn more"},
			want: "consumer_timeout", deadline: true},
		{desc: "closed by an operator", reason: &amqp.Error{Code: amqp.ConnectionForced, Server: true, Reason: "CONNECTION_FORCED - test"},
			want: "CONNECTION_FORCED - test"},
		{desc: "another precondition", reason: &amqp.Error{Code: amqp.PreconditionFailed, Server: true, Reason: "PRECONDITION_FAILED - unknown delivery tag 1"},
			want: "unknown delivery tag"},
	} {
		ch := make(chan *amqp.Error, 1)
		if tc.reason != nil {
			ch <- tc.reason
		}
		err := closeError("q", ch)
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to mention %q", tc.desc, err, tc.want)
		}
		if got := errors.Is(err, ErrConsumerTimeout); got != tc.deadline {
			t.Errorf("%s: errors.Is(%v, ErrConsumerTimeout) = %v", tc.desc, err, got)
		}
	}
}

// basic.qos's prefetch count is a short: past 65535 held eta messages it is
// 0 (no limit), as kombu's QoS does, instead of wrapping around to ~1.
func TestPrefetchCount(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc          string
		prefetch, eta int
		want          int
	}{
		{desc: "no eta", prefetch: 4, want: 4},
		{desc: "some eta", prefetch: 4, eta: 10, want: 14},
		{desc: "at the limit", prefetch: 4, eta: 65531, want: 65535},
		{desc: "one past the limit", prefetch: 4, eta: 65532, want: 0},
		{desc: "far past the limit", prefetch: 4, eta: 200000, want: 0},
	} {
		if got := prefetchCount(tc.prefetch, tc.eta); got != tc.want {
			t.Errorf("%s: prefetchCount(%d, %d) = %d, want %d", tc.desc, tc.prefetch, tc.eta, got, tc.want)
		}
	}
}
