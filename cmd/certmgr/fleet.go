package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/midsummer/certmgr/agent"
	"github.com/midsummer/certmgr/certstore"
	"github.com/midsummer/certmgr/fleet"
	"github.com/midsummer/certmgr/internal/wire"
	"github.com/midsummer/certmgr/nginxconf"
)

// Fleet mode (CERTMGR_STORE=postgres): the store in PostgreSQL, an agent
// beside every nginx. See package certstore and package agent.

func agentCommand() *command {
	return &command{
		name:  "agent",
		args:  "",
		short: "fleet mode: keep this pod's nginx serving what the postgres store holds, and answer HTTP-01",
		long: `Runs beside nginx in every app pod (CERTMGR_STORE=postgres). Writes the certificates
into the pod-local LETSENCRYPT_DIR, renders NGINX_CONF_PATH, checks it with nginx -t and
reloads nginx when the store changes (LISTEN/NOTIFY, a full reconcile at start, on
reconnect and every CERTMGR_AGENT_RESYNC seconds). Serves HTTP-01 answers,
/healthz, /readyz and /metrics on CERTMGR_HTTP_ADDR.`,
		needs: needs{db: true},
		flags: func(fs *flag.FlagSet, a *app) func(*app) error {
			return runAgent
		},
	}
}

func migrateCommand() *command {
	return &command{
		name:  "migrate",
		args:  "",
		short: "fleet mode: create or update certmgr's tables in MIDSUMMER_DB_URL (also done at every start)",
		needs: needs{db: true},
		flags: func(fs *flag.FlagSet, a *app) func(*app) error {
			return func(a *app) error {
				st, err := a.cfg.OpenStore(a.ctx)
				if err != nil {
					return err
				}
				defer st.Close()
				fmt.Fprintf(a.stdout, "certificate store at schema version %d\n", certstore.SchemaVersion())
				return nil
			}
		},
	}
}

func storeCommand() *command {
	return &command{
		name:       "store",
		args:       "import DIR | export DIR | rotate-key",
		short:      "fleet mode: copy a certbot-layout directory into the postgres store or back, or re-seal keys",
		positional: true,
		long: `import DIR   copies every lineage of DIR (certbot's and certmgr's, every version) and its
             accounts/ into the postgres store; safe to run again.
export DIR   writes the whole store into DIR in certbot's layout: the way back to
             CERTMGR_STORE=files, readable by certbot certificates --config-dir DIR.
rotate-key   with CERTMGR_STORE_KEY="new,old": seals every private key under new.`,
		needs: needs{db: true},
		flags: func(fs *flag.FlagSet, a *app) func(*app) error {
			asJSON := fs.Bool("json", false, "print the result as JSON")
			return func(a *app) error { return runStore(a, *asJSON) }
		},
	}
}

func runStore(a *app, asJSON bool) error {
	usage := &ConfigError{Name: "store", Expect: "import DIR, export DIR or rotate-key"}
	if len(a.args) == 0 {
		return usage
	}
	op, rest := a.args[0], a.args[1:]
	dirArg := func() (string, error) {
		if len(rest) != 1 {
			return "", &ConfigError{Name: "store " + op, Expect: "one directory, e.g. certmgr store " + op + " /etc/letsencrypt"}
		}
		return filepath.Abs(rest[0])
	}
	var result any
	switch op {
	case "import":
		dir, err := dirArg()
		if err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(dir, "renewal")); err != nil {
			return &ConfigError{Name: "store import", Value: dir, Expect: "a certbot-layout directory (with renewal/): " + err.Error()}
		}
		st, err := a.cfg.OpenStore(a.ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		res, err := st.Import(a.ctx, dir)
		if err != nil {
			return err
		}
		result = res
		if !asJSON {
			fmt.Fprintf(a.stdout, "imported %d lineage(s) and %d account file(s) from %s\n", len(res.Lineages), res.AccountFiles, dir)
			for _, s := range res.Skipped {
				fmt.Fprintf(a.stdout, "  skipped %s: %s\n", s.Name, s.Reason)
			}
		}
	case "export":
		dir, err := dirArg()
		if err != nil {
			return err
		}
		st, err := a.cfg.OpenStore(a.ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		n, err := st.Export(a.ctx, dir)
		if err != nil {
			return err
		}
		result = map[string]any{"lineages": n, "dir": dir}
		if !asJSON {
			fmt.Fprintf(a.stdout, "exported %d lineage(s) to %s\n", n, dir)
		}
	case "rotate-key":
		if len(rest) != 0 {
			return usage
		}
		st, err := a.cfg.OpenStore(a.ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		n, err := st.RotateKey(a.ctx)
		if err != nil {
			return err
		}
		result = map[string]any{"resealed": n, "key": st.Keyring().Primary()}
		if !asJSON {
			fmt.Fprintf(a.stdout, "re-sealed %d value(s) under key %s; CERTMGR_STORE_KEY may now hold that key alone\n", n, st.Keyring().Primary())
		}
	default:
		return usage
	}
	if asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"result": result})
	}
	return nil
}

// loopback is the address nginx in the same pod reaches addr on.
func loopback(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

func runAgent(a *app) error {
	cfg := a.cfg
	if cfg.StoreKind != wire.StorePostgres {
		return &ConfigError{Name: EnvStore, Value: string(cfg.StoreKind), Expect: "postgres: certmgr agent serves the postgres store (fleet mode)"}
	}
	pod := cfg.Agent.Pod
	if pod == "" {
		pod, _ = os.Hostname()
	}
	proxy, err := loopback(cfg.HTTPAddr)
	if err != nil {
		return &ConfigError{Name: EnvHTTPAddr, Value: cfg.HTTPAddr, Expect: "host:port or :port"}
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return &ConfigError{Name: EnvHTTPAddr, Value: cfg.HTTPAddr, Expect: "an address to listen on: " + err.Error()}
	}
	defer ln.Close()
	ncfg := a.cfg.NginxConfig()
	ncfg.ACMEChallengeProxy = proxy
	// An earlier run of this agent synced in this pod: its nginx serves that.
	resumed := agent.Resumes(cfg.ACME.Dir)
	// Serve /healthz and /readyz from the start: an agent restarted while
	// PostgreSQL is down must not crash-loop and take its pod (whose nginx
	// serves on) out of the Service; it waits for the store instead.
	var handler atomic.Pointer[http.Handler]
	var waiting atomic.Pointer[error]
	starting := agent.StoreWaitHandler(resumed, func() string {
		if err := waiting.Load(); err != nil {
			return "waiting for the certificate store: " + (*err).Error()
		}
		return "connecting to the certificate store"
	})
	handler.Store(&starting)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) })}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	st, err := openStoreRetrying(a, &waiting, resumed)
	if st == nil {
		return err
	}
	defer st.Close()
	gen, err := nginxconf.New(ncfg)
	if err != nil {
		return err
	}
	rl, err := nginxconf.NewLocalReloader(ncfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ac := cfg.Agent
	ac.Store, ac.Nginx, ac.Local, ac.Dir, ac.Pod, ac.Logger, ac.Metrics = st, gen, rl, cfg.ACME.Dir, pod, a.log, reg
	ac.Resumed = resumed
	ag, err := agent.New(ac)
	if err != nil {
		return err
	}
	running := ag.Handler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	handler.Store(&running)
	a.log.Info().Str("pod", pod).Str("dir", cfg.ACME.Dir).Str("http", ln.Addr().String()).Msg("certmgr agent started")
	err = ag.Run(a.ctx)
	a.log.Info().Msg("certmgr agent stopped")
	if a.ctx.Err() != nil {
		return nil
	}
	return err
}

// openStoreRetrying opens the postgres store, trying again (1 s doubling to
// 30 s) while it is unreachable; a wrong key is returned at once, and a stop
// returns a nil store and nil error.
func openStoreRetrying(a *app, waiting *atomic.Pointer[error], resumed bool) (*certstore.Store, error) {
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		st, err := a.cfg.OpenStore(a.ctx)
		if err == nil {
			return st, nil
		}
		if a.ctx.Err() != nil {
			return nil, nil
		}
		var ke *certstore.KeyError
		if errors.As(err, &ke) {
			return nil, err
		}
		waiting.Store(&err)
		a.log.Warn().Err(err).Bool("resumed", resumed).Dur("retry_in", wait).
			Msg("certificate store unreachable; the agent waits for it (nginx serves what it has)")
		select {
		case <-a.ctx.Done():
			return nil, nil
		case <-time.After(wait):
		}
	}
}

// mirrorForListing copies the postgres store's live versions into a
// temporary directory, for `certmgr certificates`.
func mirrorForListing(a *app) (dir string, cleanup func(), err error) {
	if a.cfg.DB.URL == "" {
		return "", nil, &ConfigError{Name: EnvDBURL, Expect: "the database of the postgres store (CERTMGR_STORE=postgres)"}
	}
	st, err := a.cfg.OpenStore(a.ctx)
	if err != nil {
		return "", nil, err
	}
	defer st.Close()
	dir, err = os.MkdirTemp("", "certmgr-certificates-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	if err := fleet.NewMirror(st, dir).Pull(a.ctx); err != nil {
		cleanup()
		return "", nil, err
	}
	return dir, cleanup, nil
}
