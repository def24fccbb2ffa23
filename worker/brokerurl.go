package worker

import (
	"context"
	"time"

	"github.com/midsummer/certmgr/worker/internal/amqpbroker"
	"github.com/midsummer/certmgr/worker/internal/redisbroker"
)

// CheckURL parses a broker or result backend URL the way NewServer will.
// Its error names the problem and never contains the URL's password.
func CheckURL(rawURL string) error {
	if amqpbroker.IsURL(rawURL) {
		_, _, _, err := amqpbroker.ParseURL(rawURL)
		return err
	}
	_, err := redisbroker.ParseURL(rawURL)
	return err
}

// RedactURL is rawURL with its password replaced by "***", for messages.
func RedactURL(rawURL string) string { return redisbroker.Redact(rawURL) }

// CheckTransportOptions parses CELERY_BROKER_TRANSPORT_OPTIONS the way
// NewServer will; the error names every option certmgr does not implement.
func CheckTransportOptions(setting, raw string) error {
	_, err := redisbroker.ParseOptions(setting, raw)
	return err
}

// CheckBackendTransportOptions parses CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS
// the way NewServer will.
func CheckBackendTransportOptions(setting, raw string) error {
	_, err := redisbroker.ParseBackendOptions(setting, raw)
	return err
}

// BrokerPinger checks that the broker answers, for readiness probes.
type BrokerPinger struct {
	b interface {
		Ping(context.Context) error
		Close() error
	}
}

// NewBrokerPinger prepares a pinger for cfg's broker; it does not connect.
func NewBrokerPinger(cfg Config) (*BrokerPinger, error) {
	cfg = cfg.withDefaults()
	if amqpbroker.IsURL(cfg.BrokerURL) {
		b, err := amqpbroker.New(amqpbroker.Config{URL: cfg.BrokerURL, Queue: cfg.Queue, DialTimeout: 2 * time.Second})
		if err != nil {
			return nil, err
		}
		return &BrokerPinger{b: b}, nil
	}
	opts, err := redisbroker.ParseOptions("CELERY_BROKER_TRANSPORT_OPTIONS", cfg.BrokerTransportOptions)
	if err != nil {
		return nil, err
	}
	b, err := redisbroker.New(redisbroker.Config{URL: cfg.BrokerURL, Queue: cfg.Queue, Options: opts,
		DialTimeout: 2 * time.Second, CommandTimeout: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	return &BrokerPinger{b: b}, nil
}

// Ping checks the connection (RabbitMQ: connects once and keeps it).
func (p *BrokerPinger) Ping(ctx context.Context) error { return p.b.Ping(ctx) }

// Close releases the connection.
func (p *BrokerPinger) Close() { p.b.Close() }
