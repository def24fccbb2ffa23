package celery

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
)

// outEnvelope is an envelope the worker publishes (events, pidbox replies).
type outEnvelope struct {
	Body            string         `json:"body"`
	ContentEncoding string         `json:"content-encoding"`
	ContentType     string         `json:"content-type"`
	Headers         map[string]any `json:"headers"`
	Properties      outProperties  `json:"properties"`
}

type outProperties struct {
	DeliveryMode int          `json:"delivery_mode"`
	DeliveryInfo DeliveryInfo `json:"delivery_info"`
	Priority     int          `json:"priority"`
	BodyEncoding string       `json:"body_encoding"`
	DeliveryTag  string       `json:"delivery_tag"`
}

// NewEnvelope wraps body (any JSON value) in a kombu envelope, base64 body,
// transient delivery, as kombu publishes events and pidbox replies.
func NewEnvelope(body any, headers map[string]any, exchange, routingKey, deliveryTag string) ([]byte, error) {
	b, err := marshalPlain(body)
	if err != nil {
		return nil, fmt.Errorf("encode body: %w", err)
	}
	if headers == nil {
		headers = map[string]any{}
	}
	return marshalPlain(outEnvelope{
		Body:            base64.StdEncoding.EncodeToString(b),
		ContentEncoding: "utf-8",
		ContentType:     ContentTypeJSON,
		Headers:         headers,
		Properties: outProperties{
			DeliveryMode: 1,
			DeliveryInfo: DeliveryInfo{Exchange: exchange, RoutingKey: routingKey},
			BodyEncoding: "base64",
			DeliveryTag:  deliveryTag,
		},
	})
}

// Event exchange and the pidbox exchanges of Celery's default app.
const (
	EventExchange       = "celeryev"
	PidboxExchange      = "celery.pidbox"
	PidboxReplyExchange = "reply.celery.pidbox"
)

// FanoutChannel is the pub/sub channel kombu's Redis transport uses for a
// fanout exchange in database db: "/<db>.<exchange>", with "/<routing key>"
// appended when there is one (fanout patterns).
func FanoutChannel(db int, exchange, routingKey string) string {
	if routingKey == "" {
		return fmt.Sprintf("/%d.%s", db, exchange)
	}
	return fmt.Sprintf("/%d.%s/%s", db, exchange, routingKey)
}

// ControlRequest is a remote-control command (celery inspect / control).
type ControlRequest struct {
	Method      string          `json:"method"`
	Arguments   json.RawMessage `json:"arguments"`
	Destination []string        `json:"destination"`
	Pattern     *string         `json:"pattern"`
	Matcher     *string         `json:"matcher"`
	Ticket      string          `json:"ticket"`
	ReplyTo     *struct {
		Exchange   string `json:"exchange"`
		RoutingKey string `json:"routing_key"`
	} `json:"reply_to"`
}

// DecodeControl reads a pidbox message published on the mailbox channel.
func DecodeControl(raw []byte) (*ControlRequest, error) {
	env, err := ParseEnvelope(raw)
	if err != nil {
		return nil, err
	}
	body, err := env.DecodedBody()
	if err != nil {
		return nil, err
	}
	var req ControlRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("control body: %w", err)
	}
	return &req, nil
}

// For tells whether the command is addressed to hostname. Pattern matching
// (glob/pcre) is not supported: such a request is not answered.
func (r *ControlRequest) For(hostname string) bool {
	if len(r.Destination) > 0 {
		return slices.Contains(r.Destination, hostname)
	}
	if r.Pattern != nil && r.Matcher != nil {
		return false
	}
	return true
}
