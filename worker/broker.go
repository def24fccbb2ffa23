package worker

import (
	"context"
	"time"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// The worker's parts each name the little they need from the broker and the
// result backend. A transport (kombu's Redis today) implements them all; see
// transport.

// fetchSource is what the fetcher takes messages from.
type fetchSource interface {
	// Fetch takes up to max messages, waiting up to wait for the first. Every
	// returned Delivery with a Tag is held by the broker until it is settled;
	// one without a Tag was moved to the dead list already.
	Fetch(ctx context.Context, max int, wait time.Duration) ([]celery.Delivery, error)
	// DeadQueue names where undecodable messages go (for the logs).
	DeadQueue() string
}

// settleSink is what the executor and the settler do with a held message.
type settleSink interface {
	// Ack removes messages for good: they are done.
	Ack(ctx context.Context, tags ...string) error
	// Republish atomically replaces a held message by raw (a retry).
	Republish(ctx context.Context, tag string, raw []byte, priority int) error
	// DeadLetter atomically moves a held message to the dead list.
	DeadLetter(ctx context.Context, tag string, raw []byte) error
	// Requeue gives a held message back to its queue at once.
	Requeue(ctx context.Context, tag string) error
}

// lostChecker is an optional capability of a broker that redelivers by
// itself what a lost connection held (RabbitMQ): Lost tells whether a held
// message belongs to a connection that is gone. The executor drops such a
// message instead of running it, since the broker's copy runs; Celery's
// consumer likewise forgets its reserved and eta-held requests when its
// connection closes (Consumer.on_close).
type lostChecker interface {
	Lost(tag string) bool
}

// publisher sends task messages: callbacks, chain steps, chord bodies,
// errbacks.
type publisher interface {
	Publish(ctx context.Context, queue string, priority int, raw []byte) error
}

// keeper is what maintenance keeps alive: held messages' leases and the
// messages of workers that died holding them.
type keeper interface {
	Refresh(ctx context.Context, tags []string) error
	RestoreVisible(ctx context.Context) (int, error)
}

// mailbox carries events and remote control (fanout and direct exchanges).
type mailbox interface {
	PublishFanout(ctx context.Context, exchange, routingKey string, raw []byte) error
	PublishDirect(ctx context.Context, exchange, routingKey string, raw []byte) error
	Subscribe(ctx context.Context, exchange string, fn func([]byte)) error
}

// resultStore is the result backend: it writes encoded result documents, in
// order, as Celery's backend does (never overwriting a SUCCESS).
type resultStore interface {
	StoreMany(ctx context.Context, results []celery.EncodedResult) error
}

// chordJoiner completes chords the way Celery 5.2's Redis and django-db
// result backends do (redisbroker.Backend.ChordPartReturn,
// djangodb.Backend.ChordPartReturn). It is an optional capability of a
// result backend.
type chordJoiner interface {
	ChordPartReturn(ctx context.Context, group string, index *int, encoded []byte) ([][]byte, bool, error)
}

// storeAcker is an optional capability of a broker whose database is also
// the result backend: store results and acknowledge messages in one atomic
// step. The settler uses it when CELERY_RESULT_BACKEND is the broker.
type storeAcker interface {
	StoreAndAck(ctx context.Context, results []celery.EncodedResult, expires time.Duration, tags []string) error
}

// transport is a broker connection as the Server holds it.
type transport interface {
	fetchSource
	settleSink
	publisher
	keeper
	mailbox
	Close() error
}

// backend is a result backend as the Server holds it.
type backend interface {
	resultStore
	Close() error
}
