package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/internal/wire"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/worker"
)

// The pre-flight: each dependency certmgr needs, proved usable the way
// certmgr uses it. `certmgr check` prints one line per check; the worker
// runs them at start, logs each failure at error level, and keeps /readyz
// failing until they pass.

// checkName names one pre-flight check; /readyz shows only these names.
type checkName string

const (
	checkDatabase   checkName = "database"
	checkBroker     checkName = "broker"
	checkCA         checkName = "acme-directory"
	checkNginx      checkName = "nginx"
	checkCertDir    checkName = "certificate-dir"
	checkWebroot    checkName = "webroot"
	checkNginxConfD checkName = "nginx-conf-dir"
	checkStore      checkName = "certificate-store"
)

// checkOutcome is one check's result: Detail says what was proved, or why
// it failed.
type checkOutcome struct {
	Name   checkName `json:"name"`
	OK     bool      `json:"ok"`
	Detail string    `json:"detail"`
}

// probe runs one check.
type probe struct {
	name checkName
	run  func(ctx context.Context) (string, error)
}

// probes are the checks for components c and the broker.
func probes(a *app, c *wire.Components, broker *worker.BrokerPinger) []probe {
	ncfg := a.cfg.NginxConfig().WithDefaults()
	ps := []probe{
		{checkDatabase, func(ctx context.Context) (string, error) {
			if err := c.DB.Check(ctx); err != nil {
				return "", err
			}
			return "answers, and tenant_customdomain is readable with this user", nil
		}},
		{checkBroker, func(ctx context.Context) (string, error) {
			if err := broker.Ping(ctx); err != nil {
				return "", fmt.Errorf("ping broker: %w", err)
			}
			return "answers PING", nil
		}},
		{checkCA, func(ctx context.Context) (string, error) {
			if err := c.ACME.CheckDirectory(ctx); err != nil {
				return "", err
			}
			return c.ACME.DirectoryURL() + " answers with an ACME directory", nil
		}},
		{checkCertDir, func(context.Context) (string, error) {
			return checkWritableDir(ncfg.LetsEncryptDir, false, "LETSENCRYPT_DIR")
		}},
	}
	if c.Store != nil {
		// Fleet mode: no nginx, no webroot, no conf.d on a worker; the store
		// was opened (migrated, key checked) by build.
		return append(ps, probe{checkStore, func(ctx context.Context) (string, error) {
			v, err := c.Store.StoreVersion(ctx)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("postgres store answers at version %d; CERTMGR_STORE_KEY opens it", v), nil
		}})
	}
	return append(ps, []probe{
		{checkNginx, func(ctx context.Context) (string, error) { return checkNginxBinary(ctx, ncfg) }},
		{checkWebroot, func(context.Context) (string, error) {
			return checkWritableDir(filepath.Join(ncfg.ACMEWebroot, ".well-known", "acme-challenge"), true, "ACME_WEBROOT")
		}},
		{checkNginxConfD, func(context.Context) (string, error) {
			return checkWritableDir(filepath.Dir(ncfg.ConfPath), false, "NGINX_CONF_PATH's directory")
		}},
	}...)
}

// runProbes runs ps at once, each with its own timeout, so the whole
// pre-flight takes at most probeTimeout.
func runProbes(ctx context.Context, ps []probe) []checkOutcome {
	out := make([]checkOutcome, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			detail, err := p.run(pctx)
			out[i] = checkOutcome{Name: p.name, OK: err == nil, Detail: detail}
			if err != nil {
				out[i].Detail = err.Error()
			}
		})
	}
	wg.Wait()
	return out
}

// probeTimeout bounds each check.
const probeTimeout = 5 * time.Second

var confPathRE = regexp.MustCompile(`--conf-path=(\S+)`)

// checkNginxBinary runs `nginx -V` and finds the main configuration it
// would load (NGINX_MAIN_CONF, else the compiled-in --conf-path).
func checkNginxBinary(ctx context.Context, cfg nginxconf.Config) (string, error) {
	bin, err := exec.LookPath(cfg.Binary)
	if err != nil {
		return "", fmt.Errorf("nginx binary %s (NGINX_BINARY): %w", cfg.Binary, err)
	}
	out, err := exec.CommandContext(ctx, bin, "-V").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("run %s -V: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	main := cfg.MainConf
	if main == "" {
		m := confPathRE.FindSubmatch(out)
		if m == nil {
			return "", fmt.Errorf("%s -V names no --conf-path; set NGINX_MAIN_CONF", bin)
		}
		main = string(m[1])
	}
	if !filepath.IsAbs(main) && cfg.Prefix != "" {
		main = filepath.Join(cfg.Prefix, main)
	}
	f, err := os.Open(main)
	if err != nil {
		return "", fmt.Errorf("nginx main configuration (NGINX_MAIN_CONF): %w", err)
	}
	f.Close()
	return fmt.Sprintf("%s runs; main configuration %s is readable", bin, main), nil
}

// checkWritableDir proves dir exists (or, with create, can be made) and that
// a file can be created in it and removed again.
func checkWritableDir(dir string, create bool, setting string) (string, error) {
	if create {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("%s: %w", setting, err)
		}
	}
	info, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("%s: %w", setting, err)
	}
	if !info.IsDir() {
		return "", fmt.Errorf("%s: %s is not a directory", setting, dir)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	probe := filepath.Join(dir, ".certmgr-check-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(probe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("%s: %s is not writable: %w", setting, dir, err)
	}
	f.Close()
	if err := os.Remove(probe); err != nil {
		return "", fmt.Errorf("%s: remove %s: %w", setting, probe, err)
	}
	return dir + " is writable", nil
}

// writeChecks prints one line per check.
func writeChecks(w io.Writer, outcomes []checkOutcome) {
	for _, o := range outcomes {
		state := "ok  "
		if !o.OK {
			state = "FAIL"
		}
		fmt.Fprintf(w, "%s %-16s %s\n", state, o.Name, o.Detail)
	}
}

func failed(outcomes []checkOutcome) []checkName {
	var out []checkName
	for _, o := range outcomes {
		if !o.OK {
			out = append(out, o.Name)
		}
	}
	return out
}

func runCheck(a *app, asJSON bool) error {
	c, err := build(a)
	if err != nil {
		return err
	}
	defer c.Close()
	broker, err := worker.NewBrokerPinger(workerConfig(a))
	if err != nil {
		return err
	}
	defer broker.Close()
	outcomes := runProbes(a.ctx, probes(a, c, broker))
	var ferr error
	if bad := failed(outcomes); len(bad) > 0 {
		ferr = fmt.Errorf("%d of %d checks failed: %s", len(bad), len(outcomes), joinChecks(bad))
	}
	if asJSON {
		return printJSON(a.stdout, outcomes, ferr)
	}
	writeChecks(a.stdout, outcomes)
	return ferr
}

func joinChecks(ns []checkName) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = string(n)
	}
	return strings.Join(s, ", ")
}

// preflight is the worker's copy of the checks: failures are logged at error
// level once each, and /readyz fails while any check fails. Failed checks run
// again at most every recheckEvery, when /readyz asks; a check that passes
// again is logged at info level.
type preflight struct {
	probes       []probe
	log          zerolog.Logger
	recheckEvery time.Duration

	mu      sync.Mutex
	ran     bool // the start's run has finished
	failing map[checkName]string
	last    time.Time
}

func newPreflight(ps []probe, log zerolog.Logger) *preflight {
	return &preflight{probes: ps, log: log, recheckEvery: 2 * time.Second, failing: map[checkName]string{}}
}

// run runs every check (at start) and logs each outcome.
func (p *preflight) run(ctx context.Context) {
	p.apply(runProbes(ctx, p.probes))
}

func (p *preflight) apply(outcomes []checkOutcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ran = true
	p.last = time.Now()
	for _, o := range outcomes {
		_, was := p.failing[o.Name]
		switch {
		case !o.OK && !was:
			p.failing[o.Name] = o.Detail
			p.log.Error().Str("check", string(o.Name)).Str("error", o.Detail).
				Msg("pre-flight check failed; /readyz fails until it passes (certmgr check shows every check)")
		case o.OK && was:
			delete(p.failing, o.Name)
			p.log.Info().Str("check", string(o.Name)).Msg("pre-flight check passes again")
		}
	}
}

// problems re-runs the failing checks when they were last run more than
// recheckEvery ago, and returns the names of those still failing.
func (p *preflight) problems(ctx context.Context) []checkName {
	p.mu.Lock()
	due := len(p.failing) > 0 && time.Since(p.last) >= p.recheckEvery
	var again []probe
	if due {
		for _, pr := range p.probes {
			if _, ok := p.failing[pr.name]; ok {
				again = append(again, pr)
			}
		}
		p.last = time.Now()
	}
	p.mu.Unlock()
	if len(again) > 0 {
		p.apply(runProbes(ctx, again))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ran {
		return []checkName{"pre-flight (running)"}
	}
	var out []checkName
	for _, pr := range p.probes {
		if _, ok := p.failing[pr.name]; ok {
			out = append(out, pr.name)
		}
	}
	return out
}
