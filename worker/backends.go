package worker

import (
	"context"
	"fmt"
	"strings"

	"github.com/midsummer/certmgr/worker/internal/amqpbroker"
	"github.com/midsummer/certmgr/worker/internal/celery"
	"github.com/midsummer/certmgr/worker/internal/djangodb"
	"github.com/midsummer/certmgr/worker/internal/redisbroker"
)

// The result backends besides Redis URLs, by their CELERY_RESULT_BACKEND name.
const (
	// BackendDjangoDB is django-celery-results' DatabaseBackend: rows of
	// django_celery_results_taskresult in Config.DatabaseURL.
	BackendDjangoDB = "django-db"
	// BackendDisabled stores no result at all, as Celery's DisabledBackend.
	BackendDisabled = "disabled"
)

// CheckResultBackend parses CELERY_RESULT_BACKEND the way NewServer will: a
// Redis URL, django-db or disabled. rpc:// and the other Celery backends are
// refused by name.
func CheckResultBackend(brokerURL, v string) error {
	switch {
	case v == BackendDjangoDB || v == BackendDisabled:
		return nil
	case strings.HasPrefix(v, "rpc://"):
		if !amqpbroker.IsURL(brokerURL) {
			return fmt.Errorf("result backend rpc:// replies over AMQP, and the broker is Redis: use redis://, django-db or disabled")
		}
		return nil
	case amqpbroker.IsURL(v):
		if v == brokerURL {
			return nil // unset: disabled, as Celery's default with an AMQP broker
		}
		return fmt.Errorf("result backend amqp:// was removed from Celery: use rpc://")
	case strings.HasPrefix(v, "db+"), strings.HasPrefix(v, "django-cache"), strings.HasPrefix(v, "cache+"),
		strings.HasPrefix(v, "mongodb"), strings.HasPrefix(v, "s3"), strings.HasPrefix(v, "elasticsearch"):
		scheme, _, _ := strings.Cut(v, ":")
		return fmt.Errorf("result backend %q is not supported: use redis://, rediss://, django-db or disabled", scheme)
	}
	return CheckURL(v)
}

// newAMQPServer is NewServer for a RabbitMQ broker. Its result backend is
// rpc:// (the broker itself), a Redis URL, django-db or disabled; with none
// configured (the broker's URL, certmgr's default) it is disabled, as
// Celery's is when result_backend is unset.
func newAMQPServer(cfg Config, h Handler) (*Server, error) {
	if cfg.BrokerTransportOptions != "" {
		return nil, fmt.Errorf("worker broker: CELERY_BROKER_TRANSPORT_OPTIONS are kombu's Redis options; certmgr takes none for amqp://")
	}
	broker, err := amqpbroker.New(amqpbroker.Config{URL: cfg.BrokerURL, Queue: cfg.Queue, Prefetch: cfg.Concurrency,
		Hostname: cfg.Hostname, MaxMessageBytes: max(cfg.MaxMessageBytes, 0),
		RPCResults: strings.HasPrefix(cfg.ResultBackendURL, "rpc://")})
	if err != nil {
		return nil, fmt.Errorf("worker broker: %w", err)
	}
	var results backend
	switch {
	case strings.HasPrefix(cfg.ResultBackendURL, "rpc://"):
		results = nopCloser{broker}
	case cfg.ResultBackendURL == cfg.BrokerURL:
		results = disabledBackend{}
	default:
		if results, err = newResultBackend(cfg); err != nil {
			broker.Close()
			return nil, fmt.Errorf("worker result backend: %w", err)
		}
	}
	return newServer(cfg, h, broker, results, nil), nil
}

// RabbitMQ redelivers what a lost connection held: the executor must know.
var _ lostChecker = (*amqpbroker.Broker)(nil)

// nopCloser is the broker as its own result backend (rpc://): the Server
// closes the broker once, as the broker.
type nopCloser struct{ resultStore }

func (nopCloser) Close() error { return nil }

func newResultBackend(cfg Config) (backend, error) {
	switch cfg.ResultBackendURL {
	case BackendDjangoDB:
		return djangodb.New(cfg.DatabaseURL)
	case BackendDisabled:
		return disabledBackend{}, nil
	}
	if err := CheckResultBackend(cfg.BrokerURL, cfg.ResultBackendURL); err != nil {
		return nil, err
	}
	opts, err := redisbroker.ParseBackendOptions("CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS", cfg.ResultBackendTransportOptions)
	if err != nil {
		return nil, err
	}
	if cfg.ResultBackendURL == cfg.BrokerURL && cfg.ResultBackendTransportOptions == "" {
		// The broker's own database: reach it the way the broker does.
		bo, err := redisbroker.ParseOptions("CELERY_BROKER_TRANSPORT_OPTIONS", cfg.BrokerTransportOptions)
		if err != nil {
			return nil, err
		}
		opts.MasterName, opts.SentinelUsername, opts.SentinelPassword = bo.MasterName, bo.SentinelUsername, bo.SentinelPassword
	}
	return redisbroker.NewBackend(redisbroker.BackendConfig{URL: cfg.ResultBackendURL, Options: opts, Expires: cfg.ResultExpires})
}

// disabledBackend is CELERY_RESULT_BACKEND = 'disabled': results are dropped.
type disabledBackend struct{}

func (disabledBackend) StoreMany(context.Context, []celery.EncodedResult) error { return nil }
func (disabledBackend) Close() error                                            { return nil }
