package worker

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// BrokerURL is the broker Django sends to (CELERY_BROKER_URL): a Redis
	// URL (redis://, rediss://, redis+socket://, unix://, sentinel://) or
	// RabbitMQ's (amqp://, pyamqp://, amqps://).
	// Default redis://localhost:6379/0.
	BrokerURL string
	// ResultBackendURL is CELERY_RESULT_BACKEND: a Redis URL in any form
	// BrokerURL takes (Celery's Redis result backend), "django-db"
	// (django-celery-results' table in DatabaseURL) or "disabled" (no
	// results). Default: BrokerURL.
	ResultBackendURL string
	// ResultBackendTransportOptions are Celery's
	// result_backend_transport_options as JSON
	// (CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS): master_name and
	// sentinel_kwargs for a sentinel:// backend. When the backend is the
	// broker's URL and these are empty, the broker's master_name and
	// sentinel_kwargs are used. Anything else fails NewServer.
	ResultBackendTransportOptions string
	// DatabaseURL is the Django app's PostgreSQL (MIDSUMMER_DB_URL), where
	// the django-db result backend writes. Required with django-db only.
	DatabaseURL string
	// BrokerTransportOptions are kombu's Redis transport options as JSON
	// (CELERY_BROKER_TRANSPORT_OPTIONS): global_keyprefix, sep,
	// priority_steps, queue_order_strategy, visibility_timeout (which wins
	// over VisibilityTimeout) and the others redisbroker.ParseOptions lists.
	// An option certmgr does not implement fails NewServer. Default: none.
	BrokerTransportOptions string
	// MaxMessageBytes is the largest message the worker takes
	// (CERTMGR_MAX_MESSAGE_BYTES); a bigger one is moved to the dead list
	// inside Redis, without its body reaching the worker, and its task gets
	// a FAILURE result (kombu.exceptions.LimitExceeded) naming the limit.
	// Default 1 MiB; negative: no limit.
	MaxMessageBytes int
	// Queue is the queue consumed (CUSTOM_DOMAIN_CELERY_QUEUE). Default certmgr.
	Queue string
	// DefaultQueue is where canvas tasks (link callbacks, errbacks, chain
	// steps, chord bodies) go when their signature names no queue, as
	// Celery's task_default_queue (CELERY_TASK_DEFAULT_QUEUE). Default celery.
	DefaultQueue string
	// VisibilityTimeout is kombu's visibility_timeout
	// (CELERY_VISIBILITY_TIMEOUT): a message left unacknowledged by a dead
	// worker is redelivered after it. Must match the Django side. Default 1h.
	VisibilityTimeout time.Duration
	// Concurrency is how many tasks run at once. Default 4.
	Concurrency int
	// Prefetch is how many messages may wait locally beyond the running ones
	// (fetched in one round trip). Default 4 × Concurrency, Celery's
	// worker_prefetch_multiplier. Messages waiting for their eta do not count.
	Prefetch int
	// Hostname is the worker's node name in events and `celery inspect`.
	// Default certmgr@<os hostname>.
	Hostname string
	// ResultExpires is how long results are kept (Celery's result_expires).
	// Default 24h.
	ResultExpires time.Duration
	// TrackStarted stores the STARTED state when a task starts
	// (task_track_started). Default false.
	TrackStarted bool
	// ResultExtended adds the request's name, args, kwargs, worker,
	// retries and queue to every stored state (result_extended). Default
	// false.
	ResultExtended bool
	// SendTaskEvents publishes task events (celery worker -E). Worker
	// heartbeats are always published. Default false.
	SendTaskEvents bool
	// MaxRetries is how many times RetryAfter may re-send a task before it
	// fails (Celery's max_retries). Default 3; negative: unlimited.
	MaxRetries int
	// RevokeExpires is how long a revoked task id is remembered (Celery's
	// REVOKE_EXPIRES, CELERY_WORKER_REVOKE_EXPIRES). Revoked ids are kept in
	// the broker's database, so every replica and a restarted worker honour
	// them. Default 3h.
	RevokeExpires time.Duration
	// ShutdownGrace bounds Stop: running tasks have this long to finish
	// before they are cancelled and their messages given back to the queue,
	// and writes still retrying then (a broker or result backend outage)
	// give up after a few last attempts (at most 3s more), leaving their
	// messages unacked for the visibility timeout. Default 25s (under
	// Kubernetes' default 30s terminationGracePeriodSeconds).
	ShutdownGrace time.Duration
	// DefaultTimeLimit is the handler deadline for tasks sent without a
	// timelimit. Default 0: none.
	DefaultTimeLimit time.Duration
	// HeartbeatInterval is the worker-heartbeat period. Default 2s (Celery's).
	HeartbeatInterval time.Duration
	// RefreshInterval is how often the unacked_index scores of held messages
	// are renewed. Default VisibilityTimeout/4, at most 1 minute.
	RefreshInterval time.Duration
	// RestoreInterval is how often messages of dead workers are looked for.
	// Default 30s, at most VisibilityTimeout/2.
	RestoreInterval time.Duration
	// RestoreMutexTTL bounds how long unacked_mutex is held during a restore
	// (kombu's unacked_mutex_expire): a worker killed while holding it
	// blocks every restore for this long. Default 300s, kombu's.
	RestoreMutexTTL time.Duration
	// PollInterval bounds how long a fetch blocks; the priority lists are
	// checked at least this often. Default 1s.
	PollInterval time.Duration
	// Logger receives the worker's logs. Default: no logging.
	Logger zerolog.Logger
}

func (c Config) withDefaults() Config {
	c.BrokerURL = cmp.Or(c.BrokerURL, "redis://localhost:6379/0")
	c.ResultBackendURL = cmp.Or(c.ResultBackendURL, c.BrokerURL)
	c.Queue = cmp.Or(c.Queue, "certmgr")
	c.DefaultQueue = cmp.Or(c.DefaultQueue, "celery")
	c.VisibilityTimeout = cmp.Or(c.VisibilityTimeout, time.Hour)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, DefaultMaxMessageBytes)
	c.Concurrency = cmp.Or(c.Concurrency, 4)
	c.Prefetch = cmp.Or(c.Prefetch, 4*c.Concurrency)
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Hostname = "certmgr@" + h
	}
	c.ResultExpires = cmp.Or(c.ResultExpires, 24*time.Hour)
	c.MaxRetries = cmp.Or(c.MaxRetries, 3)
	c.RevokeExpires = cmp.Or(c.RevokeExpires, 3*time.Hour)
	c.ShutdownGrace = cmp.Or(c.ShutdownGrace, 25*time.Second)
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, 2*time.Second)
	c.RefreshInterval = cmp.Or(c.RefreshInterval, min(c.VisibilityTimeout/4, time.Minute))
	c.RestoreInterval = cmp.Or(c.RestoreInterval, min(30*time.Second, c.VisibilityTimeout/2))
	c.PollInterval = cmp.Or(c.PollInterval, time.Second)
	c.RestoreMutexTTL = cmp.Or(c.RestoreMutexTTL, 300*time.Second)
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Concurrency < 1 {
		//lint:ignore ST1005 validate names the Config field first
		errs = append(errs, fmt.Errorf("Concurrency %d: must be at least 1", c.Concurrency))
	}
	if c.Prefetch < 0 {
		//lint:ignore ST1005 validate names the Config field first
		errs = append(errs, fmt.Errorf("Prefetch %d: must not be negative", c.Prefetch))
	}
	if c.VisibilityTimeout < time.Second {
		errs = append(errs, fmt.Errorf("VisibilityTimeout %s: must be at least 1s", c.VisibilityTimeout))
	}
	if c.RefreshInterval >= c.VisibilityTimeout {
		errs = append(errs, fmt.Errorf("RefreshInterval %s: must be shorter than VisibilityTimeout %s", c.RefreshInterval, c.VisibilityTimeout))
	}
	if c.PollInterval > 5*time.Second || c.PollInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("PollInterval %s: must be between 10ms and 5s", c.PollInterval))
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, fmt.Errorf("ShutdownGrace %s: must not be negative", c.ShutdownGrace))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("worker config: %w", err)
	}
	return nil
}
