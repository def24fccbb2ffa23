package tasks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/worker"
)

// The Celery task names of the contract.
const (
	IssueTask  = "tenant.tasks.issue_custom_domain_task"
	VerifyTask = "tenant.tasks.verify_custom_domain_dns_task"
	RemoveTask = "tenant.tasks.remove_custom_domain_task"
	RegenTask  = "tenant.tasks.regen_custom_domains_nginx_task"
	RenewTask  = "tenant.tasks.renew_custom_domains_task"
)

// Domains is what the tasks need of Django's table (domaindb.Store).
type Domains interface {
	MarkDNSVerified(ctx context.Context, id int64, at time.Time, keepError bool) (domaindb.Status, error)
	MarkFailed(ctx context.Context, id int64, msg string) (domaindb.Status, error)
	SetLastError(ctx context.Context, id int64, msg string) error
	Get(ctx context.Context, id int64) (domaindb.CustomDomain, error)
	GetByName(ctx context.Context, name domain.Name) (domaindb.CustomDomain, error)
	ListServable(ctx context.Context) ([]domaindb.CustomDomain, []*domaindb.BadRowError, error)
	Lock(ctx context.Context, name domain.Name) (domaindb.Unlock, error)
	TryLock(ctx context.Context, name string) (domaindb.Unlock, bool, error)
	LockName(ctx context.Context, name string) (domaindb.Unlock, error)
	MarkIssued(ctx context.Context, id int64, issuedAt, notAfter time.Time) error
	MarkDropped(ctx context.Context, id int64, msg string) error
	// RecordOwner and CertOwners keep which row each stored certificate
	// serves, so that it never serves another row without a fresh check.
	RecordOwner(ctx context.Context, name domain.Name, row domaindb.CustomDomain) error
	CertOwners(ctx context.Context) (map[domain.Name]domaindb.CertOwner, error)
	// ReserveOrder and FinishOrder count ACME orders against the budgets,
	// across replicas.
	ReserveOrder(ctx context.Context, req domaindb.OrderRequest, b domaindb.Budgets) (int64, domaindb.Remaining, error)
	FinishOrder(ctx context.Context, id int64, outcome string) error
	LinkCertificate(ctx context.Context, id int64, issuedAt, notAfter time.Time) (bool, error)
	ListAll(ctx context.Context) ([]domaindb.CustomDomain, []*domaindb.BadRowError, error)
}

// DNS checks that a domain points at the platform (dnscheck.Checker). It
// only looks: the tasks record its verdicts on the rows.
type DNS interface {
	// CheckOwner checks name and, with CUSTOM_DOMAIN_OWNERSHIP=txt, its
	// owner's record: before an order, on verify, and before a renewal.
	CheckOwner(ctx context.Context, name domain.Name, owner string) (dnscheck.Result, error)
}

// Issuer orders and renews certificates (acme.Manager).
type Issuer interface {
	// Backoff is a *acme.BackoffError while an order for d would be refused
	// after failed validations (asked before an order is counted).
	Backoff(d domain.Name) error
	Issue(ctx context.Context, d domain.Name) (acme.Lineage, error)
	Renew(ctx context.Context, n acme.LineageName) (acme.Lineage, error)
	// RenewFor renews lineage n for some of its names only.
	RenewFor(ctx context.Context, n acme.LineageName, names []domain.Name) (acme.Lineage, error)
	Check(ctx context.Context, l acme.Lineage) acme.Decision
	Statuses(ctx context.Context, ari bool) ([]acme.Status, error)
}

// Certificates finds and removes lineages in the certbot-layout store
// (acme.Store).
type Certificates interface {
	Find(d domain.Name) (acme.Lineage, bool, error)
	// Serving maps each domain to the lineage that serves it.
	Serving() (map[domain.Name]acme.Lineage, error)
	Load(n acme.LineageName) (acme.Lineage, error)
	Remove(n acme.LineageName) error
}

// Syncer brings a local copy of the certificate store up to date (fleet
// mode: certstore's mirror of the PostgreSQL store, which Certificates and
// Issuer then read).
type Syncer interface {
	Pull(ctx context.Context) error
}

// NginxConfig regenerates custom-domains.conf (nginxconf.Generator).
type NginxConfig interface {
	Regenerate(ctx context.Context, ds []nginxconf.Domain) (nginxconf.Result, error)
	Reloaded() error
}

// Reloader makes every nginx load the new file (podreload.Reloader).
type Reloader interface {
	Reload(ctx context.Context) (podreload.Result, error)
}

var (
	_ Domains      = (*domaindb.Store)(nil)
	_ DNS          = (*dnscheck.Checker)(nil)
	_ Issuer       = (*acme.Manager)(nil)
	_ Certificates = (*acme.Store)(nil)
	_ NginxConfig  = (*nginxconf.Generator)(nil)
	_ Reloader     = (*podreload.Reloader)(nil)
)

// Config wires the tasks to the components. Every component is required
// except Metrics.
type Config struct {
	Domains      Domains
	DNS          DNS
	Issuer       Issuer
	Certificates Certificates
	Nginx        NginxConfig
	Reloader     Reloader
	// Sync, when set, is pulled before the pipeline reads the certificate
	// store: after a domain's lock is taken, at the start of a sweep and
	// before a purge. Default: none (files mode reads the directory itself).
	Sync Syncer
	// Budgets limit ACME orders per domain, owner and account
	// (CERTMGR_FORCE_INTERVAL, CERTMGR_TENANT_ORDERS_PER_HOUR, Let's
	// Encrypt's account limits). Zero fields take domaindb's defaults.
	Budgets domaindb.Budgets
	// ReloadMinInterval spaces the regenerations and reloads that issue tasks
	// share: issuances that finish close together are published by one
	// regeneration and one reload per pod, at most one per interval
	// (CERTMGR_RELOAD_MIN_INTERVAL). Default 2s.
	ReloadMinInterval time.Duration
	// Names validates names that arrive in task arguments and flags.
	Names domain.Policy
	// Logger receives the pipeline's logs (component=tasks). Default: none.
	Logger zerolog.Logger
	// Metrics registers the pipeline's counters. Default: not registered.
	Metrics prometheus.Registerer
	// Now is the clock of row timestamps. Default time.Now.
	Now func() time.Time
	// RetryBase is the first retry delay of a transient failure; it doubles
	// per retry up to RetryMax. Defaults DefaultRetryBase and DefaultRetryMax.
	RetryBase, RetryMax time.Duration
	// MaxRetries is how many times a task is retried after transient
	// failures before it fails (Celery's max_retries for these tasks); the
	// row of an issue that gives up is marked failed, with no promise to
	// retry. Default DefaultMaxRetries (about an hour with the default
	// delays); negative: unlimited.
	MaxRetries int
	// SweepEvery is the period of the worker's own renewal sweep, with up to
	// SweepJitter added at random. Defaults 12h and 1h.
	SweepEvery, SweepJitter time.Duration
}

// Defaults of Config's retry timing.
const (
	DefaultRetryBase  = 10 * time.Second
	DefaultRetryMax   = 10 * time.Minute
	DefaultMaxRetries = 10
)

func (c Config) withDefaults() Config {
	if c.Now == nil {
		c.Now = time.Now
	}
	c.RetryBase = cmp.Or(c.RetryBase, DefaultRetryBase)
	c.RetryMax = cmp.Or(c.RetryMax, DefaultRetryMax)
	c.MaxRetries = cmp.Or(c.MaxRetries, DefaultMaxRetries)
	c.SweepEvery = cmp.Or(c.SweepEvery, 12*time.Hour)
	c.SweepJitter = cmp.Or(c.SweepJitter, time.Hour)
	c.ReloadMinInterval = cmp.Or(c.ReloadMinInterval, 2*time.Second)
	return c
}

func (c Config) validate() error {
	switch {
	case c.Domains == nil:
		return errors.New("tasks: Domains is required")
	case c.DNS == nil:
		return errors.New("tasks: DNS is required")
	case c.Issuer == nil:
		return errors.New("tasks: Issuer is required")
	case c.Certificates == nil:
		return errors.New("tasks: Certificates is required")
	case c.Nginx == nil:
		return errors.New("tasks: Nginx is required")
	case c.Reloader == nil:
		return errors.New("tasks: Reloader is required")
	case c.RetryMax < c.RetryBase:
		return fmt.Errorf("tasks: RetryMax %s is shorter than RetryBase %s", c.RetryMax, c.RetryBase)
	}
	return c.Names.Validate()
}

// Service runs certmgr's tasks.
type Service struct {
	cfg     Config
	log     zerolog.Logger
	metrics *metrics
	shared  *sharedPublish
}

// New checks cfg and returns the Service.
func New(cfg Config) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	m.accountOrdersLeft.Set(float64(cmp.Or(cfg.Budgets.AccountOrdersPer3h, 300)))
	s := &Service{cfg: cfg, log: cfg.Logger.With().Str("component", "tasks").Logger(), metrics: m}
	s.shared = newSharedPublish(s)
	return s, nil
}

// Register puts every task of the contract on mux, with the metrics
// middleware.
func (s *Service) Register(mux *worker.ServeMux) {
	mux.Use(s.metrics.middleware, deadlineMiddleware, taskLogging)
	mux.HandleFunc(IssueTask, s.issueTask)
	mux.HandleFunc(VerifyTask, s.verifyTask)
	mux.HandleFunc(RemoveTask, s.removeTask)
	mux.HandleFunc(RegenTask, s.regenTask)
	mux.HandleFunc(RenewTask, s.renewTask)
}

// deadlineMiddleware makes a task that ran past its time limit (its ctx
// deadline: Celery's timelimit, else CERTMGR_TASK_TIME_LIMIT) fail for good,
// as Celery's TimeLimitExceeded does, instead of being retried for the
// timeout its last step saw. Its lock was released by the step's defer.
func deadlineMiddleware(next worker.Handler) worker.Handler {
	return worker.HandlerFunc(func(ctx context.Context, t *worker.Task) error {
		err := next.ProcessTask(ctx, t)
		if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, worker.SkipRetry) {
			return fmt.Errorf("%w: %w", worker.SkipRetry, err)
		}
		return err
	})
}

// taskKey carries the running task in ctx, for logFor.
type taskKey struct{}

// taskState is the running task and the domain its logger names already.
type taskState struct {
	t      *worker.Task
	domain domain.Name
}

// taskLogging puts the task in ctx so the pipeline's lines carry its task_id
// and task, and the domain once known (logFor); the worker's own lines about
// the task (succeeded, failed, retried) then carry the domain too.
func taskLogging(next worker.Handler) worker.Handler {
	return worker.HandlerFunc(func(ctx context.Context, t *worker.Task) error {
		return next.ProcessTask(context.WithValue(ctx, taskKey{}, &taskState{t: t}), t)
	})
}

// logFor is the logger for lines about domain d: the task's (task_id, task,
// domain) when running as a task, which it also marks with d; else the
// service's with domain.
func (s *Service) logFor(ctx context.Context, d domain.Name) *zerolog.Logger {
	st, ok := ctx.Value(taskKey{}).(*taskState)
	if !ok {
		l := s.log.With().Str("domain", string(d)).Logger()
		return &l
	}
	switch st.domain {
	case "":
		st.t.WithLogger(st.t.Logger().With().Str("domain", string(d)).Logger())
		st.domain = d
	case d:
	default:
		// A second domain in one task: its lines name it, not the first.
		l := s.log.With().Str("domain", string(d)).Logger()
		return &l
	}
	l := st.t.Logger().With().Str("component", "tasks").Logger()
	return &l
}
