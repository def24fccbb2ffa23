package worker

import (
	"context"
	"fmt"
	"strings"

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
func CheckResultBackend(v string) error {
	switch {
	case v == BackendDjangoDB || v == BackendDisabled:
		return nil
	case strings.HasPrefix(v, "rpc://"):
		return fmt.Errorf("result backend rpc:// replies over AMQP, and certmgr's broker is Redis: use redis://, django-db or disabled")
	case strings.HasPrefix(v, "db+"), strings.HasPrefix(v, "django-cache"), strings.HasPrefix(v, "cache+"),
		strings.HasPrefix(v, "mongodb"), strings.HasPrefix(v, "s3"), strings.HasPrefix(v, "elasticsearch"):
		scheme, _, _ := strings.Cut(v, ":")
		return fmt.Errorf("result backend %q is not supported: use redis://, rediss://, django-db or disabled", scheme)
	}
	return CheckURL(v)
}

func newResultBackend(cfg Config) (backend, error) {
	switch cfg.ResultBackendURL {
	case BackendDjangoDB:
		return djangodb.New(cfg.DatabaseURL)
	case BackendDisabled:
		return disabledBackend{}, nil
	}
	if err := CheckResultBackend(cfg.ResultBackendURL); err != nil {
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
