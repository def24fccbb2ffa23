package amqpbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// kombu's exchanges for events and remote control, with the flags Celery
// declares them with (a mismatch would close the channel).
var exchangeKinds = map[string]struct {
	kind    string
	durable bool
}{
	celery.EventExchange:  {"topic", true},
	celery.PidboxExchange: {"fanout", false},
	"reply.celery.pidbox": {"direct", false},
}

// side opens a channel for events, replies and the pidbox, separate from
// the consumer's so that a refused publish cannot stop consumption.
func (b *Broker) side() (*amqp.Channel, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.connect(); err != nil {
		return nil, err
	}
	return b.conn.Channel()
}

func declareExchange(ch *amqp.Channel, name string) error {
	k, ok := exchangeKinds[name]
	if !ok {
		k.kind = "direct"
	}
	return ch.ExchangeDeclare(name, k.kind, k.durable, false, false, false, nil)
}

func (b *Broker) publishOn(ctx context.Context, exchange, routingKey string, raw []byte) error {
	msg, err := Publishing(raw)
	if err != nil {
		return err
	}
	ch, err := b.side()
	if err != nil {
		return err
	}
	defer ch.Close()
	if exchange != "" {
		if err := declareExchange(ch, exchange); err != nil {
			return fmt.Errorf("declare exchange %s: %w", exchange, err)
		}
	}
	return ch.PublishWithContext(ctx, exchange, routingKey, false, false, msg)
}

// PublishFanout publishes an event or broadcast on its exchange.
func (b *Broker) PublishFanout(ctx context.Context, exchange, routingKey string, raw []byte) error {
	if err := b.publishOn(ctx, exchange, routingKey, raw); err != nil {
		return fmt.Errorf("publish on %s: %w", exchange, err)
	}
	return nil
}

// PublishDirect publishes a remote-control reply (on reply.celery.pidbox,
// declared as kombu's _publish_reply does) or to a queue by name ("").
func (b *Broker) PublishDirect(ctx context.Context, exchange, routingKey string, raw []byte) error {
	if err := b.publishOn(ctx, exchange, routingKey, raw); err != nil {
		return fmt.Errorf("publish to %s/%s: %w", exchange, routingKey, err)
	}
	return nil
}

// Subscribe consumes the worker's pidbox queue, <hostname>.celery.pidbox,
// declared and bound as kombu's Mailbox.get_queue does, until ctx ends or
// the channel closes.
func (b *Broker) Subscribe(ctx context.Context, exchange string, fn func([]byte)) error {
	if b.cfg.Hostname == "" {
		return errors.New("subscribe: no hostname for the pidbox queue")
	}
	ch, err := b.side()
	if err != nil {
		return err
	}
	// Closing a channel whose deliveries nobody reads can block in
	// amqp091: drain them while it closes.
	defer func() {
		done := make(chan struct{})
		go func() { _ = ch.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second): // returns when the connection closes
		}
	}()
	queue := b.cfg.Hostname + "." + exchange
	if err := declareExchange(ch, exchange); err != nil {
		return fmt.Errorf("declare exchange %s: %w", exchange, err)
	}
	args := amqp.Table{"x-expires": int32(10000), "x-message-ttl": int32(300000)}
	if _, err := ch.QueueDeclare(queue, false, true, false, false, args); err != nil {
		return fmt.Errorf("declare %s: %w", queue, err)
	}
	if err := ch.QueueBind(queue, "", exchange, false, nil); err != nil {
		return fmt.Errorf("bind %s: %w", queue, err)
	}
	ds, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", queue, err)
	}
	defer func() {
		go func() {
			for range ds { // until the channel closes
			}
		}()
	}()
	for {
		select {
		case d, ok := <-ds:
			if !ok {
				return fmt.Errorf("consume %s: the channel closed", queue)
			}
			if raw, err := Envelope(d, "pidbox."+strconv.FormatUint(d.DeliveryTag, 10)); err == nil {
				fn(raw)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// rpcResult is the message Celery's rpc backend sends (RPCBackend._to_result).
type rpcResult struct {
	TaskID    string          `json:"task_id"`
	Status    string          `json:"status"`
	Result    json.RawMessage `json:"result"`
	Traceback *string         `json:"traceback"`
	Children  json.RawMessage `json:"children"`
}

// StoreMany is Celery's rpc:// result backend: each state goes to the reply
// queue the task's caller named (reply_to, the default exchange), with the
// task id as correlation id, transient, as RPCBackend.store_result sends it.
// Tasks sent without reply_to get nothing, as in Celery.
func (b *Broker) StoreMany(ctx context.Context, results []celery.EncodedResult) error {
	for _, r := range results {
		var m rpcResult
		if err := json.Unmarshal(r.Raw, &m); err != nil {
			return fmt.Errorf("rpc result of %s: %w", r.TaskID, err)
		}
		m.TaskID = r.TaskID
		if len(m.Children) == 0 {
			m.Children = json.RawMessage("[]")
		}
		body, err := json.Marshal(m)
		if err != nil {
			return err
		}
		b.mu.Lock()
		replyTo := b.replyToOf(r.TaskID)
		b.mu.Unlock()
		if replyTo == "" {
			continue
		}
		ch, err := b.side()
		if err != nil {
			return err
		}
		err = ch.PublishWithContext(ctx, "", replyTo, false, false, amqp.Publishing{
			ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: amqp.Transient,
			CorrelationId: r.TaskID, Body: body,
		})
		ch.Close()
		if err != nil {
			return fmt.Errorf("rpc result of %s to %s: %w", r.TaskID, replyTo, err)
		}
	}
	return nil
}

// replyToOf (under mu) is the reply_to of the held message of task id: the
// worker stores a task's states before it settles the message. An oversize
// message, never held, is looked up (once) in replyTo.
func (b *Broker) replyToOf(id string) string {
	for _, h := range b.held {
		if h.d.CorrelationId == id && h.d.ReplyTo != "" {
			return h.d.ReplyTo
		}
	}
	if r, ok := b.replyTo[id]; ok {
		delete(b.replyTo, id)
		return r
	}
	return ""
}
