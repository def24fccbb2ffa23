package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/internal/wire"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/tasks"
	"github.com/midsummer/certmgr/worker"
)

// The HTTP endpoints on CERTMGR_HTTP_ADDR; deploy/ probes them.
const (
	pathHealthz = "/healthz"
	pathReadyz  = "/readyz"
	pathMetrics = "/metrics"
)

// runWorker consumes the queue until SIGTERM, runs the renewal sweeps and
// serves the HTTP endpoints. Shutdown order: stop the HTTP server's
// readiness first (so no new traffic is expected), then the sweeps, then the
// worker (graceful: in-flight tasks get their grace), then the database.
func runWorker(a *app) error {
	c, err := build(a)
	if err != nil {
		return err
	}
	defer c.Close()
	srv, err := worker.NewServer(workerConfig(a), c.ServeMux())
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return &ConfigError{Name: EnvHTTPAddr, Value: a.cfg.HTTPAddr, Expect: "an address to listen on: " + err.Error()}
	}
	broker, err := worker.NewBrokerPinger(workerConfig(a))
	if err != nil {
		return err
	}
	defer broker.Close()
	// Draining starts with the signal: /readyz fails from then on, while
	// in-flight tasks finish their grace period.
	draining := func() bool { return a.ctx.Err() != nil }
	// The pre-flight (at most probeTimeout): failures are logged at error
	// level, and /readyz fails while any check fails.
	pre := newPreflight(probes(a, c, broker), a.log.With().Str("component", "preflight").Logger())
	pre.run(a.ctx)
	httpSrv := &http.Server{Handler: opsHandler(c, broker, draining, pre), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = httpSrv.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = httpSrv.Shutdown(ctx)
	}()

	var wg sync.WaitGroup
	sweepCtx, stopSweeps := context.WithCancel(a.ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.Tasks.RefreshExpiry(sweepCtx); err != nil {
			a.log.Warn().Err(err).Msg("certificate expiry metrics not loaded from the store")
		}
		c.Tasks.RunSweeps(sweepCtx)
	}()
	// Broker and database outages: one line when each starts, one when it ends.
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchOutages(sweepCtx, a.log.With().Str("component", "peers").Logger(), outageEvery, []peerPing{
			{"broker", broker.Ping},
			{"database", c.DB.Ping},
		})
	}()
	defer func() { stopSweeps(); wg.Wait() }()

	a.log.Info().Str("queue", a.cfg.Worker.Queue).Int("concurrency", a.cfg.Worker.Concurrency).
		Str("hostname", srv.Hostname()).Str("http", ln.Addr().String()).Msg("certmgr worker started")
	err = srv.Run(a.ctx)
	a.log.Info().Msg("certmgr worker stopped")
	return err
}

// outageEvery is how often the worker pings the broker and the database to
// log outages and recoveries.
const outageEvery = 2 * time.Second

// peerPing is one peer the worker depends on and how to ask it.
type peerPing struct {
	name string
	ping func(ctx context.Context) error
}

// watchOutages pings each peer every interval until ctx ends, and logs an
// outage once at error level when it starts (with the first error) and once
// at info level when the peer answers again (with how long it was down), so
// alerting on errors sees it and a long outage does not flood the log.
func watchOutages(ctx context.Context, log zerolog.Logger, every time.Duration, peers []peerPing) {
	down := make([]time.Time, len(peers))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for i, p := range peers {
			pctx, cancel := context.WithTimeout(ctx, every)
			err := p.ping(pctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			switch {
			case err != nil && down[i].IsZero():
				down[i] = time.Now()
				log.Error().Err(err).Str("peer", p.name).Msgf("%s unreachable", p.name)
			case err == nil && !down[i].IsZero():
				log.Info().Str("peer", p.name).Float64("down_s", time.Since(down[i]).Seconds()).Msgf("%s reachable again", p.name)
				down[i] = time.Time{}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// opsHandler serves /healthz (the process answers), /readyz (not draining,
// broker and database answer) and /metrics. /readyz names the failing
// component only: the probe's body is readable by anyone who reaches the
// port, and driver errors name users, databases and hosts.
func opsHandler(c *wire.Components, broker *worker.BrokerPinger, draining func() bool, pre *preflight) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(pathHealthz, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc(pathReadyz, func(w http.ResponseWriter, r *http.Request) {
		if draining() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		var problems []string
		if err := broker.Ping(ctx); err != nil {
			problems = append(problems, "broker: not answering")
		}
		if err := c.DB.Ping(ctx); err != nil {
			problems = append(problems, "database: not answering")
		}
		for _, n := range pre.problems(ctx) {
			problems = append(problems, "pre-flight: "+string(n)+" failing")
		}
		if len(problems) > 0 {
			http.Error(w, strings.Join(problems, "\n"), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.Handle(pathMetrics, promhttp.HandlerFor(c.Registry, promhttp.HandlerOpts{}))
	return mux
}

func runIssue(a *app, d string, force, asJSON bool) error {
	c, err := build(a)
	if err != nil {
		return err
	}
	defer c.Close()
	// A certificate nginx cannot be made to serve is an order wasted (and
	// counted against the CA's rate limits): check nginx first.
	if _, err := checkNginxBinary(a.ctx, a.cfg.NginxConfig().WithDefaults()); err != nil {
		return fmt.Errorf("nothing ordered: %w", err)
	}
	res, err := c.Tasks.Issue(a.ctx, d, force)
	err = flagError(err)
	if asJSON {
		return printJSON(a.stdout, res, err)
	}
	if err != nil {
		return err
	}
	what := "existing certificate kept"
	if res.Issued {
		what = "new certificate issued"
	}
	fmt.Fprintf(a.stdout, "%s: %s, %s, valid until %s\n", res.Domain, res.Status, what, res.NotAfter)
	printPods(a.stdout, res.Reloaded)
	return nil
}

func runRenew(a *app, dryRun, asJSON bool) error {
	c, err := build(a)
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.Tasks.Sweep(a.ctx, dryRun)
	if asJSON {
		return printJSON(a.stdout, res, sweepError(res, err))
	}
	if err != nil {
		return err
	}
	if res.Skipped {
		fmt.Fprintln(a.stdout, "another replica is running the renewal sweep; nothing done")
	}
	for _, e := range res.Certificates {
		line := fmt.Sprintf("%s: %s (%s)", e.Name, e.Action, e.Reason)
		for _, f := range res.Failed {
			if f.Name == e.Name {
				line += ": " + f.Error
			}
		}
		fmt.Fprintln(a.stdout, line)
	}
	for _, d := range res.RowsWithoutCertificate {
		fmt.Fprintf(a.stdout, "%s: row with no certificate (the row says one is served; no lineage names it)\n", d)
	}
	fmt.Fprintf(a.stdout, "checked %d, renewed %d, failed %d\n", res.Checked, len(res.Renewed), len(res.Failed))
	printPods(a.stdout, res.Reloaded)
	return sweepError(res, err)
}

// sweepError is the sweep's error, or what in its result needs an operator.
func sweepError(res tasks.RenewResult, err error) error {
	if err != nil {
		return err
	}
	if why := res.NeedsOperator(); why != "" {
		return fmt.Errorf("needs an operator: %s", why)
	}
	return nil
}

func runRegen(a *app, reload, asJSON bool) error {
	c, err := build(a)
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.Tasks.Regenerate(a.ctx, reload)
	if asJSON {
		return printJSON(a.stdout, res, err)
	}
	if err != nil {
		return err
	}
	state := "unchanged"
	if res.Changed {
		state = "written"
	}
	fmt.Fprintf(a.stdout, "%s: %d domain(s) served, %s\n", a.cfg.Nginx.ConfPath, res.Domains, state)
	for _, s := range res.Skipped {
		fmt.Fprintf(a.stdout, "  left out %s: %s\n", s.Name, s.Reason)
	}
	printPods(a.stdout, res.Reloaded)
	return nil
}

func runCertificates(a *app, asJSON bool) error {
	cfg := a.cfg.ACMEConfig()
	if a.cfg.StoreKind == wire.StorePostgres {
		// The listing reads a copy of the postgres store.
		dir, cleanup, err := mirrorForListing(a)
		if err != nil {
			return err
		}
		defer cleanup()
		cfg.Dir = dir
	}
	m, err := acme.New(cfg)
	if err != nil {
		return err
	}
	// The listing reads the store only; ARI answers are for renew.
	statuses, err := m.Statuses(a.ctx, false)
	if err != nil {
		return err
	}
	infos := make([]acme.CertificateInfo, 0, len(statuses))
	var broken []string
	for _, s := range statuses {
		infos = append(infos, acme.Describe(s, time.Now()))
		if s.Err != nil {
			broken = append(broken, string(s.Name))
		}
	}
	// With MIDSUMMER_DB_URL set, the listing is checked against the rows.
	var noRow, noCert []string
	rowsChecked := a.cfg.DB.URL != ""
	if rowsChecked {
		noRow, noCert, err = crossCheckRows(a, m.Store(), statuses)
		if err != nil {
			return err
		}
		for i := range infos {
			infos[i].NoRow = slices.Contains(noRow, infos[i].Name)
		}
	}
	var problems []string
	if len(broken) > 0 {
		problems = append(problems, fmt.Sprintf("broken: %s", strings.Join(broken, ", ")))
	}
	if len(noRow) > 0 {
		problems = append(problems, fmt.Sprintf("no custom domain row: %s", strings.Join(noRow, ", ")))
	}
	if len(noCert) > 0 {
		problems = append(problems, fmt.Sprintf("rows with no certificate: %s", strings.Join(noCert, ", ")))
	}
	var ferr error
	if len(problems) > 0 {
		ferr = fmt.Errorf("needs an operator: %s", strings.Join(problems, "; "))
	}
	if asJSON {
		return printJSON(a.stdout, infos, ferr)
	}
	if err := acme.WriteCertificates(a.stdout, infos); err != nil {
		return err
	}
	for _, d := range noCert {
		fmt.Fprintf(a.stdout, "Row with no certificate: %s (the row says one is served; no lineage names it)\n", d)
	}
	if !rowsChecked {
		fmt.Fprintf(a.stdout, "Rows not checked: %s is not set.\n", EnvDBURL)
	}
	return ferr
}

// crossCheckRows reads every custom domain row and returns the lineages no
// row names and the rows no working lineage serves.
func crossCheckRows(a *app, store *acme.Store, statuses []acme.Status) (noRow, noCert []string, err error) {
	db, err := domaindb.New(a.ctx, domaindb.Config{URL: a.cfg.DB.URL, Logger: a.log})
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()
	rows, _, err := db.ListAll(a.ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("read custom domain rows: %w", err)
	}
	serving, err := store.Serving()
	if err != nil {
		return nil, nil, err
	}
	has := make(map[domain.Name]bool, len(rows))
	for _, r := range rows {
		has[r.Domain] = true
	}
	for _, s := range statuses {
		found := false
		for _, d := range s.Lineage.Names() {
			found = found || has[d]
		}
		if !found {
			noRow = append(noRow, string(s.Name))
		}
	}
	return noRow, tasks.RowsWithoutCertificate(rows, serving), nil
}

func runVerifyDNS(a *app, d string, asJSON bool) error {
	c, err := build(a)
	if err != nil {
		return err
	}
	defer c.Close()
	v, err := c.Tasks.VerifyDNS(a.ctx, d)
	err = flagError(err)
	if asJSON {
		if err == nil && !v.DNSOK {
			err = errors.New(v.Detail)
		}
		return printJSON(a.stdout, v, err)
	}
	if err != nil {
		return err
	}
	if !v.DNSOK {
		return fmt.Errorf("%s: DNS not verified: %s", v.Domain, v.Detail)
	}
	fmt.Fprintf(a.stdout, "%s: DNS verified (%s), status %s\n", v.Domain, v.Detail, v.Status)
	return nil
}

// flagError makes a rejected --domain a usage error (exit 2).
func flagError(err error) error {
	var rej *domain.RejectedError
	if errors.As(err, &rej) {
		return &ConfigError{Name: "--domain", Value: rej.Input, Expect: "a custom domain name: " + rej.Reason}
	}
	return err
}

// printJSON prints v, with the error as "error" when there is one, and
// returns err so the exit status says failed.
func printJSON(w io.Writer, v any, err error) error {
	out := map[string]any{"result": v}
	if err != nil {
		out["error"] = err.Error()
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if werr := enc.Encode(out); werr != nil {
		return werr
	}
	return err
}

func printPods(w io.Writer, pods []podreload.PodResult) {
	for _, p := range pods {
		line := fmt.Sprintf("  nginx on %s: %s", p.Pod, p.Outcome)
		if p.Detail != "" {
			line += " (" + p.Detail + ")"
		}
		fmt.Fprintln(w, line)
	}
}
