package tasks

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/worker"
)

// metrics are the pipeline's Prometheus series, served on /metrics.
type metrics struct {
	tasks         *prometheus.CounterVec   // by task and outcome
	taskSeconds   *prometheus.HistogramVec // by task
	failures      *prometheus.CounterVec   // by exc_type
	issued        prometheus.Counter
	renewed       prometheus.Counter
	sweeps        prometheus.Counter
	issueSeconds  prometheus.Histogram
	regenerations *prometheus.CounterVec // changed, unchanged, rejected
	regenSeconds  prometheus.Histogram
	reloads       *prometheus.CounterVec // by pod outcome
	expiry        *prometheus.GaugeVec   // notAfter of each domain's served certificate
	certMode      *prometheus.GaugeVec   // 1 for the mode the last regeneration rendered
	certCache     prometheus.Gauge       // its ssl_certificate_cache max=, 0 for none
	luaCache      prometheus.Gauge       // lua mode's per-worker cache, 0 in other modes
	// accountOrdersLeft is what the last reservation left of the account's
	// orders per 3 hours; budgetRefusals counts orders refused by budget.
	accountOrdersLeft prometheus.Gauge
	budgetRefusals    *prometheus.CounterVec
	sharedPublishes   prometheus.Counter // regenerations shared by issue tasks
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "certmgr_tasks_total",
			Help: "Celery tasks handled, by task name and outcome (success, retry, failure)."}, []string{"task", "outcome"}),
		taskSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "certmgr_task_duration_seconds",
			Help: "Time handlers took.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"task"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "certmgr_pipeline_failures_total",
			Help: "Pipeline failures by exc_type."}, []string{"exc_type"}),
		issued:  prometheus.NewCounter(prometheus.CounterOpts{Name: "certmgr_certificates_issued_total", Help: "Certificates ordered and stored by the issue pipeline."}),
		renewed: prometheus.NewCounter(prometheus.CounterOpts{Name: "certmgr_certificates_renewed_total", Help: "Certificates renewed by sweeps."}),
		sweeps:  prometheus.NewCounter(prometheus.CounterOpts{Name: "certmgr_renewal_sweeps_total", Help: "Renewal sweeps run."}),
		issueSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "certmgr_acme_issue_duration_seconds",
			Help: "Time an ACME order took, from new order to stored certificate.", Buckets: prometheus.ExponentialBuckets(0.5, 2, 10)}),
		regenerations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "certmgr_nginx_regenerations_total",
			Help: "nginx configuration regenerations, by result (changed, unchanged, rejected)."}, []string{"result"}),
		regenSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "certmgr_nginx_regeneration_duration_seconds",
			Help: "Time to vet, render, nginx -t and swap the configuration.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "certmgr_nginx_reloads_total",
			Help: "nginx reloads by pod outcome (reloaded, failed, timed_out, skipped, restarted)."}, []string{"outcome"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "certmgr_certificate_expiry_timestamp_seconds",
			Help: "notAfter of each domain's certificate, as Unix time; alert on it minus time()."}, []string{"domain"}),
		certMode: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "certmgr_nginx_cert_mode",
			Help: "1 for the certificate mode the last regeneration rendered (per-server, variable or lua), with the rule that chose it (configured, lua, cert-cache, small-fleet, large-fleet, keys-unreadable) and how HTTP/2 is turned on; the log says why in words."},
			[]string{"mode", "rule", "http2"}),
		certCache: prometheus.NewGauge(prometheus.GaugeOpts{Name: "certmgr_nginx_ssl_certificate_cache_max",
			Help: "max= of the ssl_certificate_cache the last regeneration rendered; 0 for none (nginx before 1.27.4, or per-server mode)."}),
		luaCache: prometheus.NewGauge(prometheus.GaugeOpts{Name: "certmgr_nginx_lua_cache_max",
			Help: "Lineages each nginx worker keeps parsed in lua mode, as the last regeneration rendered; 0 in the other modes."}),
		accountOrdersLeft: prometheus.NewGauge(prometheus.GaugeOpts{Name: "certmgr_acme_account_orders_remaining",
			Help: "ACME orders the account may still make in the current 3-hour window (Let's Encrypt: 300), as of the last order certmgr made, counted across replicas."}),
		budgetRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "certmgr_order_budget_refusals_total",
			Help: "Orders refused before reaching the CA, by budget (forced_reissue, tenant_orders_per_hour, account_orders_per_3h, certificates_per_registered_domain_per_week, duplicate_certificates_per_week, failed_validations_per_hour)."}, []string{"budget"}),
		sharedPublishes: prometheus.NewCounter(prometheus.CounterOpts{Name: "certmgr_shared_publishes_total",
			Help: "Regenerations and reloads that issue tasks finishing close together shared (at most one per CERTMGR_RELOAD_MIN_INTERVAL)."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.tasks, m.taskSeconds, m.failures, m.issued, m.renewed, m.sweeps,
		m.issueSeconds, m.regenerations, m.regenSeconds, m.reloads, m.expiry, m.certMode, m.certCache, m.luaCache,
		m.accountOrdersLeft, m.budgetRefusals, m.sharedPublishes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// middleware counts every task the mux dispatches by name and outcome.
func (m *metrics) middleware(next worker.Handler) worker.Handler {
	return worker.HandlerFunc(func(ctx context.Context, t *worker.Task) error {
		start := time.Now()
		err := next.ProcessTask(ctx, t)
		m.taskSeconds.WithLabelValues(t.Name).Observe(time.Since(start).Seconds())
		outcome := "success"
		switch {
		case err == nil:
		case errors.As(err, new(*worker.RetryError)) && !errors.Is(err, worker.SkipRetry):
			outcome = "retry"
		default:
			outcome = "failure"
		}
		m.tasks.WithLabelValues(t.Name, outcome).Inc()
		return err
	})
}

// RefreshExpiry sets the expiry gauge from the certificate store, without
// asking the CA anything. The worker calls it once at start; issues, renewals
// and sweeps keep it current afterwards.
func (s *Service) RefreshExpiry(ctx context.Context) error {
	statuses, err := s.cfg.Issuer.Statuses(ctx, false)
	if err != nil {
		return err
	}
	for _, st := range statuses {
		s.setExpiry(st.Lineage)
	}
	return nil
}

func (s *Service) setExpiry(l acme.Lineage) {
	if l.Err != nil || l.NotAfter.IsZero() {
		return
	}
	for _, d := range l.Names() {
		s.metrics.expiry.WithLabelValues(string(d)).Set(float64(l.NotAfter.Unix()))
	}
}
