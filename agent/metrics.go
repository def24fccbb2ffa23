package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	syncs       *prometheus.CounterVec
	syncSeconds prometheus.Histogram
	reloads     prometheus.Counter
	reconnects  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, a *Agent) (*metrics, error) {
	m := &metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "certmgr_agent_syncs_total",
			Help: "Syncs with the certificate store, by result (ok, failed, timeout: not done within SyncTimeout)."}, []string{"result"}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "certmgr_agent_sync_duration_seconds",
			Help: "Time a sync took, from the store snapshot to the nginx reload.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10)}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{Name: "certmgr_agent_nginx_reloads_total",
			Help: "Reloads of this pod's nginx."}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "certmgr_agent_listen_connections_total",
			Help: "LISTEN connections opened (the first and every reconnection)."}),
	}
	if reg == nil {
		return m, nil
	}
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "certmgr_agent_applied_version",
			Help: "Store version this pod's nginx serves."}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return float64(a.applied)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "certmgr_agent_store_version",
			Help: "Newest store version the agent has heard of."}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return float64(a.seen)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "certmgr_agent_last_sync_timestamp_seconds",
			Help: "When the last successful sync finished (Unix time)."}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.lastSync.IsZero() {
				return 0
			}
			return float64(a.lastSync.UnixNano()) / 1e9
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "certmgr_agent_lag_seconds",
			Help: "How long a newer store version has been known and not yet served; 0 when caught up."}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.behind.IsZero() {
				return 0
			}
			return a.cfg.Now().Sub(a.behind).Seconds()
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "certmgr_agent_listening",
			Help: "1 while the LISTEN connection to the store is up."}, func() float64 {
			if a.listening.Load() {
				return 1
			}
			return 0
		}),
	}
	for _, c := range append(gauges, m.syncs, m.syncSeconds, m.reloads, m.reconnects) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
