package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/nginxconf"
)

// Agent keeps one nginx in step with the certificate store.
type Agent struct {
	cfg     Config
	log     zerolog.Logger
	metrics *metrics

	wake chan struct{} // a sync is wanted; buffered 1

	mu        sync.Mutex
	have      map[string]string // lineage → serial written to Dir
	applied   int64             // store version nginx serves
	seen      int64             // newest store version heard of
	lastSync  time.Time
	behind    time.Time // when seen first passed applied; zero when caught up
	lastErr   error
	failures  int       // syncs failed in a row
	failedAt  time.Time // when the first of them started
	ready     atomic.Bool
	listening atomic.Bool
}

// New checks cfg and returns an Agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With().Str("component", "agent").Str("pod", cfg.Pod).Logger(),
		wake: make(chan struct{}, 1), have: map[string]string{}}
	m, err := newMetrics(cfg.Metrics, a)
	if err != nil {
		return nil, err
	}
	a.metrics = m
	return a, nil
}

// Ready reports whether the first complete sync is done.
func (a *Agent) Ready() bool { return a.ready.Load() }

// Applied is the store version this nginx serves.
func (a *Agent) Applied() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applied
}

// poke asks for a sync without waiting.
func (a *Agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run syncs at start, on every notification and reconnection, and every
// Resync, until ctx ends. A failed sync is retried with backoff; nginx keeps
// serving its last good configuration meanwhile. Run returns ctx's error.
//
// When ctx ends (the pod is stopping) the agent deletes its heartbeat row, so
// that tasks stop waiting for, and reporting, a pod that is gone; nginx in
// the pod keeps serving until it is stopped itself.
func (a *Agent) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := a.cfg.Store.RemoveAgent(rctx, a.cfg.Pod); err != nil {
			a.log.Warn().Err(err).Msg("heartbeat row not removed; tasks count this pod until it ages out")
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); a.listen(ctx) }()
	go func() { defer wg.Done(); a.heartbeats(ctx) }()

	retry := a.cfg.RetryMin
	resync := time.NewTimer(a.cfg.Resync)
	defer resync.Stop()
	full := true
	for {
		err := a.sync(ctx, full)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			a.log.Warn().Err(err).Dur("retry_in", retry).Msg("sync failed; nginx keeps its last good configuration")
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(retry):
			}
			retry = min(2*retry, a.cfg.RetryMax)
			full = true
			continue
		}
		retry = a.cfg.RetryMin
		full = false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.wake:
		case <-resync.C:
			full = true
			resync.Reset(a.cfg.Resync)
		}
	}
}

// listen holds a LISTEN connection, reconnecting with backoff; each
// (re)connection asks for a full sync, each notification for a sync.
func (a *Agent) listen(ctx context.Context) {
	retry := a.cfg.RetryMin
	for ctx.Err() == nil {
		err := a.listenOnce(ctx)
		if a.listening.Swap(false) {
			retry = a.cfg.RetryMin // it was up: this is a new outage
		}
		if ctx.Err() != nil {
			return
		}
		a.log.Warn().Err(err).Dur("retry_in", retry).Msg("store notifications lost; reconnecting")
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(2*retry, a.cfg.RetryMax)
	}
}

func (a *Agent) listenOnce(ctx context.Context) error {
	cc := a.cfg.Store.ConnConfig()
	cc.RuntimeParams["application_name"] = ListenApplicationName(a.cfg.Pod)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, cc)
	cancel()
	if err != nil {
		return fmt.Errorf("listen: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+certstore.Channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var schema string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	a.listening.Store(true)
	a.metrics.reconnects.Inc()
	// Whatever happened while we were not listening is caught up now.
	a.poke()
	for {
		// A connection the network silently dropped delivers nothing and
		// reports nothing: after ListenPing without a notification, ask.
		wctx, cancel := context.WithTimeout(ctx, a.cfg.ListenPing)
		n, err := conn.WaitForNotification(wctx)
		timedOut := wctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil && timedOut {
			pctx, cancel := context.WithTimeout(ctx, a.cfg.ListenPing)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("listen: no answer to a ping within %s: %w", a.cfg.ListenPing, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		s, v, ok := strings.Cut(n.Payload, " ")
		if !ok || s != schema {
			continue // another schema's store in the same database
		}
		if ver, err := strconv.ParseInt(v, 10, 64); err == nil {
			a.mu.Lock()
			if ver > a.seen {
				a.seen = ver
				if a.behind.IsZero() && ver > a.applied {
					a.behind = a.cfg.Now()
				}
			}
			a.mu.Unlock()
		}
		a.poke()
	}
}

// ListenApplicationName is the application_name of pod's LISTEN connection,
// as pg_stat_activity shows it (PostgreSQL keeps 63 bytes of it).
func ListenApplicationName(pod string) string {
	n := "certmgr-agent-listen " + pod
	return n[:min(len(n), 63)]
}

// heartbeats refreshes the heartbeat row so workers see this pod alive.
func (a *Agent) heartbeats(ctx context.Context) {
	t := time.NewTicker(a.cfg.HeartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.heartbeat(ctx); err != nil {
				a.log.Debug().Err(err).Msg("heartbeat not recorded")
			}
		}
	}
}

func (a *Agent) heartbeat(ctx context.Context) error {
	if !a.ready.Load() {
		return nil // nothing applied yet: a worker must not count this pod as serving
	}
	a.mu.Lock()
	hb := certstore.Agent{Pod: a.cfg.Pod, AppliedVersion: a.applied, LastSync: a.lastSync}
	if a.lastErr != nil {
		hb.Detail = a.lastErr.Error()
	}
	a.mu.Unlock()
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return a.cfg.Store.Heartbeat(hctx, hb)
}

// sync makes this nginx serve the store's current snapshot. Unless full, a
// snapshot at the version already applied changes nothing. It gives up
// after SyncTimeout.
func (a *Agent) sync(parent context.Context, full bool) (err error) {
	start := a.cfg.Now()
	ctx, cancel := context.WithTimeout(parent, a.cfg.SyncTimeout)
	defer cancel()
	defer func() {
		result := "ok"
		if err != nil {
			result = "failed"
		}
		if err != nil && ctx.Err() != nil && parent.Err() == nil {
			err = fmt.Errorf("sync did not finish within %s: %w", a.cfg.SyncTimeout, err)
			result = "timeout"
		}
		a.mu.Lock()
		a.lastErr = err
		if err == nil {
			a.failures = 0
		} else if a.failures++; a.failures == 1 {
			a.failedAt = start
		}
		a.mu.Unlock()
		a.metrics.syncs.WithLabelValues(result).Inc()
		a.metrics.syncSeconds.Observe(a.cfg.Now().Sub(start).Seconds())
	}()
	snap, err := a.cfg.Store.Snapshot(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.seen = max(a.seen, snap.Version)
	unchanged := !full && a.ready.Load() && snap.Version == a.applied
	a.mu.Unlock()
	if unchanged {
		return nil
	}

	// The lineages to serve, and which of them this pod lacks.
	want := map[string]bool{}
	var fetch []string
	ds := make([]nginxconf.Domain, 0, len(snap.Served))
	for _, sv := range snap.Served {
		// The rows come from the database: a name that is not a plain
		// domain (or lineage name) would make nginx -t refuse the whole
		// file, so it is left out here, and the rest served.
		if d, err := domain.Parse(sv.Domain); err != nil || string(d) != sv.Domain {
			a.log.Warn().Str("domain", sv.Domain).Msg("served set names an invalid domain; left out")
			continue
		}
		if _, err := acme.ParseLineageName(sv.Lineage); err != nil {
			a.log.Warn().Str("domain", sv.Domain).Str("lineage", sv.Lineage).Msg("served set names an invalid lineage; left out")
			continue
		}
		st, ok := snap.Lineages[sv.Lineage]
		if !ok {
			a.log.Warn().Str("domain", sv.Domain).Str("lineage", sv.Lineage).Msg("served domain names a lineage the store does not hold")
			continue
		}
		ds = append(ds, nginxconf.Domain{Name: domain.Name(sv.Domain), Lineage: sv.Lineage})
		if want[sv.Lineage] {
			continue
		}
		want[sv.Lineage] = true
		a.mu.Lock()
		have := a.have[sv.Lineage]
		a.mu.Unlock()
		if have != st.Serial {
			fetch = append(fetch, sv.Lineage)
		}
	}
	slices.Sort(fetch)
	fetchStart := a.cfg.Now()
	written, err := a.fetch(ctx, fetch)
	if err != nil {
		return err
	}
	fetchTook := a.cfg.Now().Sub(fetchStart)
	nginxStart := a.cfg.Now()

	res, err := a.cfg.Nginx.Regenerate(ctx, ds)
	for _, s := range res.Skipped {
		a.log.Warn().Str("domain", string(s.Name)).Str("reason", s.Reason).Msg("domain left out of nginx config")
	}
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	nginxTook := a.cfg.Now().Sub(nginxStart)
	reloadStart := a.cfg.Now()
	if res.ReloadPending || written > 0 {
		if err := a.reload(ctx); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		if err := a.cfg.Nginx.Reloaded(); err != nil {
			a.log.Warn().Err(err).Msg("reload marker not cleared; the next sync reloads again")
		}
		a.metrics.reloads.Inc()
	}

	reloadTook := a.cfg.Now().Sub(reloadStart)

	// Lineages no longer served go only now: the configuration nginx loaded
	// before this sync may have named them.
	local, err := acme.LineageNames(a.cfg.Dir)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	for _, n := range local {
		if !want[string(n)] {
			if err := acme.RemoveLineage(a.cfg.Dir, n); err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			a.mu.Lock()
			delete(a.have, string(n))
			a.mu.Unlock()
		}
	}

	a.mu.Lock()
	a.applied, a.lastSync = snap.Version, a.cfg.Now()
	if a.seen <= a.applied {
		a.behind = time.Time{}
	}
	a.mu.Unlock()
	first := !a.ready.Swap(true)
	if first {
		if err := markApplied(a.cfg.Dir); err != nil {
			a.log.Warn().Err(err).Msg("synced, but a restart of this agent will not know nginx serves it")
		}
	}
	if err := a.heartbeat(ctx); err != nil {
		a.log.Warn().Err(err).Msg("synced, but the heartbeat was not recorded")
	}
	ev := a.log.Debug()
	if first || written > 0 || res.Changed {
		ev = a.log.Info()
	}
	ev.Int64("version", snap.Version).Int("domains", len(res.Served)).Int("lineages_written", written).
		Bool("config_changed", res.Changed).Dur("fetch_took", fetchTook).Dur("nginx_took", nginxTook).
		Dur("reload_took", reloadTook).Dur("took", a.cfg.Now().Sub(start)).Msg("synced")
	return nil
}

// fetch reads the named lineages from the store, in batches, and writes
// them into Dir with a few writers at once. The directory is pod-local and
// rebuilt at every start, so files are not fsynced.
func (a *Agent) fetch(ctx context.Context, names []string) (int, error) {
	written := 0
	for len(names) > 0 {
		batch := names[:min(len(names), a.cfg.FetchBatch)]
		names = names[len(batch):]
		ls, err := a.cfg.Store.Lineages(ctx, certstore.LineageFilter{Names: batch})
		if err != nil {
			if !certstore.Unreadable(err) {
				return written, fmt.Errorf("sync: %w", err)
			}
			if ls, err = a.fetchEach(ctx, batch); err != nil {
				return written, err
			}
		}
		work := make(chan certstore.Lineage)
		errs := make(chan error, writers)
		var wg sync.WaitGroup
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for l := range work {
					if _, err := certstore.WriteLineage(a.cfg.Dir, l, false); err != nil {
						errs <- fmt.Errorf("sync: %w", err)
						return
					}
					cur, _ := l.CurrentVersion()
					a.mu.Lock()
					a.have[l.Name] = cur.Serial
					a.mu.Unlock()
				}
			}()
		}
	feed:
		for _, l := range ls {
			select {
			case work <- l:
				written++
			case err := <-errs:
				errs <- err
				break feed
			}
		}
		close(work)
		wg.Wait()
		select {
		case err := <-errs:
			return written, err
		default:
		}
	}
	return written, nil
}

// fetchEach reads a batch that failed on a lineage no retry will read (a
// sealed key that does not open) lineage by lineage, so that it costs its
// own domains, not every update. Any other failure fails the sync, which is
// then retried in full: a lineage left out because the store did not answer
// would stay unserved, under a version reported applied, until the resync.
func (a *Agent) fetchEach(ctx context.Context, names []string) ([]certstore.Lineage, error) {
	var out []certstore.Lineage
	for _, n := range names {
		ls, err := a.cfg.Store.Lineages(ctx, certstore.LineageFilter{Names: []string{n}})
		if certstore.Unreadable(err) {
			a.log.Error().Err(err).Str("lineage", n).Msg("lineage unreadable; its domains are left out")
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sync: %w", err)
		}
		out = append(out, ls...)
	}
	return out, nil
}

// writers is how many lineages fetch writes at once.
const writers = 4

// reload reloads nginx and, when the LocalReloader can name the pid file, waits
// until the new workers serve (see PIDFiler).
func (a *Agent) reload(ctx context.Context) error {
	pf, ok := a.cfg.Local.(PIDFiler)
	if !ok {
		return a.cfg.Local.Reload(ctx)
	}
	pidFile, err := pf.PIDFile(ctx)
	var before []int
	if err == nil {
		before, err = workers(pidFile)
	}
	if err := a.cfg.Local.Reload(ctx); err != nil {
		return err
	}
	if err != nil {
		a.log.Debug().Err(err).Msg("nginx workers not visible: the reload is not confirmed")
		return nil
	}
	return waitReplaced(ctx, pidFile, before, a.cfg.ReloadTimeout)
}

// errNotReady is /readyz's answer before the first complete sync.
var errNotReady = errors.New("first sync not complete")

// appliedMarker, in Dir, records that a run of the agent put a configuration
// live in this pod (Dir lives as long as the pod, across restarts of the
// agent's container).
func appliedMarker(dir string) string { return filepath.Join(dir, "certmgr", "agent-applied") }

func markApplied(dir string) error {
	path := appliedMarker(dir)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("record the first sync: %w", err)
	}
	if err := os.WriteFile(path, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return fmt.Errorf("record the first sync: %w", err)
	}
	return nil
}

// Resumes reports whether an earlier run of the agent completed a sync with
// dir as its Dir: the pod's nginx serves that configuration (Config.Resumed).
func Resumes(dir string) bool {
	_, err := os.Stat(appliedMarker(dir))
	return err == nil
}
