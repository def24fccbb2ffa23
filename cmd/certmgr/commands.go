package main

import (
	"flag"
	"strconv"
)

func workerCommand() *command {
	return &command{
		name:  "worker",
		args:  "[-Q queue] [--concurrency N] [-E|--task-events] [--loglevel level]",
		short: "run the Celery worker that consumes the certmgr queue",
		long: `Consumes the Django app's tasks from the Redis broker, runs the renewal sweep
twice a day, and serves /healthz, /readyz and /metrics on CERTMGR_HTTP_ADDR.
SIGTERM stops fetching and gives in-flight tasks CERTMGR_SHUTDOWN_GRACE; a
second SIGTERM or SIGINT exits at once (held messages come back later).`,
		needs: needs{db: true, target: true},
		flags: func(fs *flag.FlagSet, a *app) func(*app) error {
			queue := fs.String("Q", a.getenv(EnvQueue), "queue to consume [$"+EnvQueue+", certmgr]")
			conc := fs.String("concurrency", a.getenv(EnvConcurrency), "tasks run at once [$"+EnvConcurrency+", 4]")
			fs.StringVar(conc, "c", a.getenv(EnvConcurrency), "")
			events := fs.Bool("task-events", false, "send task events, as celery worker -E [$"+EnvSendTaskEvents+", false]")
			fs.BoolVar(events, "E", false, "")
			return func(a *app) error {
				if *events {
					a.cfg.Worker.SendTaskEvents = true
				}
				if *queue != "" {
					a.cfg.Worker.Queue = *queue
				}
				if *conc != "" {
					n, err := strconv.Atoi(*conc)
					if err != nil || n < 1 || n > 1024 {
						return &ConfigError{Name: "--concurrency", Value: *conc, Expect: "a whole number from 1 to 1024"}
					}
					a.cfg.Worker.Concurrency, a.cfg.Worker.Prefetch = n, n
				}
				return runWorker(a)
			}
		},
	}
}

func issueCommand() *command {
	return &command{
		name:  "issue",
		args:  "--domain D [--force] [--json]",
		short: "issue (or reuse) the certificate of one domain, then regenerate and reload nginx",
		needs: needs{db: true, target: true},
		flags: func(fs *flag.FlagSet, a *app) func(*app) error {
			d := fs.String("domain", "", "the custom domain (its row must exist)")
			force := fs.Bool("force", false, "order a new certificate even if a valid one exists")
			asJSON := fs.Bool("json", false, "print the result as JSON")
			return func(a *app) error {
				if *d == "" {
					return &ConfigError{Name: "--domain", Expect: "the domain to issue, e.g. --domain shop.example.com"}
				}
				return runIssue(a, *d, *force, *asJSON)
			}
		},
	}
}

func renewCommand() *command {
	return &command{
		name:  "renew",
		args:  "[--dry-run] [--json]",
		short: "renew every certificate that is due (ARI window, or a third of its lifetime left), once",
		needs: needs{db: true, target: true},
		flags: func(fs *flag.FlagSet, a *app) func(*app) error {
			dry := fs.Bool("dry-run", false, "list each certificate and whether it would renew, and change nothing")
			asJSON := fs.Bool("json", false, "print the result as JSON")
			return func(a *app) error { return runRenew(a, *dry, *asJSON) }
		},
	}
}

func regenCommand() *command {
	return &command{
		name:  "regen-nginx",
		args:  "[--no-reload] [--json]",
		short: "regenerate custom-domains.conf from the database, check it with nginx -t, and reload",
		long:  `Run by the init container at pod start, and by hand after a restore.`,
		needs: needs{db: true, target: true},
		flags: func(fs *flag.FlagSet, a *app) func(*app) error {
			asJSON := fs.Bool("json", false, "print the result as JSON")
			noReload := fs.Bool("no-reload", false, "write and check the file but do not reload nginx (the init container: nginx is not running yet)")
			return func(a *app) error { return runRegen(a, !*noReload, *asJSON) }
		},
	}
}

func certificatesCommand() *command {
	return &command{
		name:  "certificates",
		args:  "[--json]",
		short: "list the certificates in LETSENCRYPT_DIR, as certbot certificates does",
		flags: func(fs *flag.FlagSet, a *app) func(*app) error {
			asJSON := fs.Bool("json", false, "print the result as JSON")
			return func(a *app) error { return runCertificates(a, *asJSON) }
		},
	}
}

func verifyDNSCommand() *command {
	return &command{
		name:  "verify-dns",
		args:  "--domain D [--json]",
		short: "check that a domain points at CUSTOM_DOMAIN_CNAME_TARGET, and record the outcome on its row",
		needs: needs{db: true, target: true},
		flags: func(fs *flag.FlagSet, a *app) func(*app) error {
			d := fs.String("domain", "", "the custom domain")
			asJSON := fs.Bool("json", false, "print the result as JSON")
			return func(a *app) error {
				if *d == "" {
					return &ConfigError{Name: "--domain", Expect: "the domain to check, e.g. --domain shop.example.com"}
				}
				return runVerifyDNS(a, *d, *asJSON)
			}
		},
	}
}

func checkCommand() *command {
	return &command{
		name:  "check",
		args:  "[--json]",
		short: "prove every dependency is usable: database, broker, CA, nginx, certificate dir, webroot",
		long: `One line per check, exit 1 if any fails. Run it first when installing or
migrating; the worker runs the same checks at start, logs failures at error
level and keeps /readyz failing until they pass.`,
		needs: needs{db: true, target: true},
		flags: func(fs *flag.FlagSet, a *app) func(*app) error {
			asJSON := fs.Bool("json", false, "print the result as JSON")
			return func(a *app) error { return runCheck(a, *asJSON) }
		},
	}
}
