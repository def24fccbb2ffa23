package main

import (
	"cmp"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/agent"
	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/wire"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/tasks"
	"github.com/midsummer/certmgr/worker"
)

// The names of the environment variables. CONTRACT.md fixes the names the Django app, operators and
// manifests rely on; the CERTMGR_* ones are certmgr's own additions.
const (
	EnvBrokerURL            = "CELERY_BROKER_URL"
	EnvResultBackend        = "CELERY_RESULT_BACKEND"
	EnvQueue                = "CUSTOM_DOMAIN_CELERY_QUEUE"
	EnvVisibilityTimeout    = "CELERY_VISIBILITY_TIMEOUT"
	EnvDBURL                = "MIDSUMMER_DB_URL"
	EnvCNAMETarget          = "CUSTOM_DOMAIN_CNAME_TARGET"
	EnvACMEStaging          = "ACME_STAGING"
	EnvACMEDirectoryURL     = "ACME_DIRECTORY_URL"
	EnvACMEKeyType          = "ACME_KEY_TYPE"
	EnvLetsEncryptDir       = "LETSENCRYPT_DIR"
	EnvDNSServers           = "CUSTOM_DOMAIN_DNS_SERVERS"
	EnvReservedZones        = "CUSTOM_DOMAIN_RESERVED_ZONES"
	EnvAllowPrivateSuffixes = "CUSTOM_DOMAIN_ALLOW_PRIVATE_SUFFIXES"
	EnvNginxHTTPSPort       = "NGINX_HTTPS_PORT"
	EnvNginxCertMode        = "NGINX_CERT_MODE"
	EnvNginxCertCacheMax    = "NGINX_CERT_CACHE_MAX"
	EnvNginxUpstream        = "NGINX_UPSTREAM"
	EnvReloadAllPods        = "RELOAD_ALL_PODS"
	EnvReloadMode           = "CERTMGR_RELOAD_MODE"
	EnvDeploymentName       = "DEPLOYMENT_NAME"
	EnvPodNamespace         = "POD_NAMESPACE"
	EnvCattleNamespace      = "CATTLE_K8S_NAMESPACE"
	EnvNginxContainer       = "NGINX_CONTAINER"
	EnvHTTPAddr             = "CERTMGR_HTTP_ADDR"
	EnvConcurrency          = "CERTMGR_CONCURRENCY"
	EnvShutdownGrace        = "CERTMGR_SHUTDOWN_GRACE"
	EnvRetryBase            = "CERTMGR_RETRY_BASE"
	EnvRetryMax             = "CERTMGR_RETRY_MAX"
	EnvLogLevel             = "CERTMGR_LOGLEVEL"
	EnvLogFormat            = "CERTMGR_LOG_FORMAT"
	EnvStore                = "CERTMGR_STORE"
	EnvStoreKey             = "CERTMGR_STORE_KEY"
	EnvTaskTimeLimit        = "CERTMGR_TASK_TIME_LIMIT"
	EnvDNSTimeout           = "CUSTOM_DOMAIN_DNS_TIMEOUT"
	EnvOwnership            = "CUSTOM_DOMAIN_OWNERSHIP"
	EnvVerifySecret         = "CUSTOM_DOMAIN_VERIFY_SECRET"
	EnvTXTLabel             = "CUSTOM_DOMAIN_TXT_LABEL"
	EnvForceInterval        = "CERTMGR_FORCE_INTERVAL"
	EnvTenantOrdersPerHour  = "CERTMGR_TENANT_ORDERS_PER_HOUR"
	EnvReloadMinInterval    = "CERTMGR_RELOAD_MIN_INTERVAL"
	EnvBrokerOptions        = "CELERY_BROKER_TRANSPORT_OPTIONS"
	EnvBackendOptions       = "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"
	EnvMaxMessageBytes      = "CERTMGR_MAX_MESSAGE_BYTES"
	EnvTrackStarted         = "CELERY_TASK_TRACK_STARTED"
	EnvResultExtended       = "CELERY_RESULT_EXTENDED"
	EnvSendTaskEvents       = "CELERY_WORKER_SEND_TASK_EVENTS"
	EnvDefaultQueue         = "CELERY_TASK_DEFAULT_QUEUE"
	EnvRevokeExpires        = "CELERY_WORKER_REVOKE_EXPIRES"
	EnvACMEEmail            = "ACME_EMAIL"
	EnvACMECABundle         = "ACME_CA_BUNDLE"
	EnvACMEProfile          = "ACME_PROFILE"
	EnvACMEWebroot          = "ACME_WEBROOT"
	EnvNginxConfPath        = "NGINX_CONF_PATH"
	EnvNginxBinary          = "NGINX_BINARY"
	EnvNginxMainConf        = "NGINX_MAIN_CONF"
	EnvNginxPrefix          = "NGINX_PREFIX"
	EnvNginxHTTPPort        = "NGINX_HTTP_PORT"
	EnvNginxListenAddress   = "NGINX_LISTEN_ADDRESS"
	EnvNginxDefaultCert     = "NGINX_DEFAULT_CERT"
	EnvNginxDefaultKey      = "NGINX_DEFAULT_KEY"
	EnvNginxNamesHash       = "NGINX_SERVER_NAMES_HASH"
	EnvNginxReloadMethod    = "NGINX_RELOAD_METHOD"
	EnvNginxTimeout         = "NGINX_COMMAND_TIMEOUT"
	EnvPodName              = "POD_NAME"
	EnvKubeconfig           = "KUBECONFIG"
	EnvResultExpires        = "CELERY_RESULT_EXPIRES"
	EnvAgentResync          = "CERTMGR_AGENT_RESYNC"
	EnvAgentWait            = "CERTMGR_AGENT_WAIT"
	EnvAgentAlive           = "CERTMGR_AGENT_ALIVE"
	EnvAgentHeartbeat       = "CERTMGR_AGENT_HEARTBEAT"
	EnvAgentSyncTimeout     = "CERTMGR_AGENT_SYNC_TIMEOUT"
)

// Configs is what the environment configures: the Configs of the components
// package wire assembles, the worker's and the agent's, and the one setting
// that is certmgr's own. Fields the environment does not reach (loggers,
// clocks, the parts each Config names) are set by run and wire.Build.
type Configs struct {
	wire.Config
	Worker worker.Config
	Agent  agent.Config

	HTTPAddr string // of /healthz, /readyz and /metrics
}

// Variable is one environment variable: its name, its default as the user
// writes it, its documentation, and how it sets Configs (with the owning
// package's own parser).
type Variable struct {
	Name string
	// Default is applied when the variable is unset or empty; "" means the
	// field keeps its zero value (the package's default) and Unset says what
	// that is, for a person ("required", "the broker URL").
	Default string
	Unset   string
	// Doc is the README's text (Markdown); --help prints it without backticks.
	Doc string
	// set parses the value into Configs; nil for a variable read elsewhere
	// (the log flags' defaults).
	set func(c *Configs, v string) error
}

// Variables is every environment variable certmgr reads, in README order. It
// is the one place a variable is named: loadConfigs applies it row by row
// (a row may read what earlier rows set), --help prints it, and
// TestREADMEConfigurationTable keeps the README's table equal to it.
//
// Adding a variable is one row here and, for a new setting, its field in the
// owning package's Config (with the README regenerated by
// `go test ./cmd/certmgr -run TestREADMEConfigurationTable -update`).
var Variables = []Variable{
	{Name: EnvBrokerURL, Default: "redis://localhost:6379/0", Doc: "the broker the Django app sends tasks to (`CELERY_BROKER_URL`): `redis://[[user]:password@]host:port/db`, `rediss://…?ssl_cert_reqs=required&ssl_ca_certs=…&ssl_certfile=…&ssl_keyfile=…&ssl_check_hostname=false`, `redis+socket:///path.sock?virtual_host=N`, `unix:///path.sock?db=N`, `sentinel://[:password@]h1:26379/db;sentinel://h2:26379` (with `master_name` in the transport options; certmgr follows the master across a failover); RabbitMQ: `amqp://user:password@host:5672/vhost`, `pyamqp://…`, `amqps://…` with the same `ssl_*` parameters; errors name the problem and never print the password. Redis 6.0 or newer (6.2+ best); with RabbitMQ, set `consumer_timeout` above the longest countdown (see [docs/django.md](docs/django.md#brokers-and-result-backends))",
		set: brokerURL(func(c *Configs) *string { return &c.Worker.BrokerURL })},
	{Name: EnvBrokerOptions, Doc: "Django's `CELERY_BROKER_TRANSPORT_OPTIONS` as JSON: `global_keyprefix`, `sep`, `priority_steps`, `queue_order_strategy`, `visibility_timeout` (wins over `CELERY_VISIBILITY_TIMEOUT`), `unacked_key`, `unacked_index_key`, `unacked_mutex_key`, `unacked_mutex_expire`, `socket_timeout`, `socket_connect_timeout`, `max_connections`, `master_name` and `sentinel_kwargs` (`username`, `password`) for Sentinel; any other option stops certmgr at start, naming it",
		set: func(c *Configs, v string) error {
			if err := worker.CheckTransportOptions(EnvBrokerOptions, v); err != nil {
				return err
			}
			c.Worker.BrokerTransportOptions = v
			return nil
		}},
	{Name: EnvBackendOptions, Doc: "Django's `CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS` as JSON: `master_name` and `sentinel_kwargs` for a `sentinel://` result backend (a backend on the broker's own URL takes the broker's); anything else stops certmgr at start",
		set: func(c *Configs, v string) error {
			if err := worker.CheckBackendTransportOptions(EnvBackendOptions, v); err != nil {
				return err
			}
			c.Worker.ResultBackendTransportOptions = v
			return nil
		}},
	{Name: EnvResultBackend, Unset: "the broker URL", Doc: "a Redis URL (any form `CELERY_BROKER_URL` takes), `django-db` (django-celery-results' `django_celery_results_taskresult` rows in `MIDSUMMER_DB_URL`, as its `DatabaseBackend` writes them), `rpc://` (with a RabbitMQ broker: each state to the caller's reply queue with its correlation id, as Celery's rpc backend) or `disabled` (no results; the default with a RabbitMQ broker, as in Celery); other backends are refused by name",
		set: func(c *Configs, v string) error {
			if err := worker.CheckResultBackend(c.Worker.BrokerURL, v); err != nil {
				return &ConfigError{Value: redactURL(v), Expect: err.Error()}
			}
			c.Worker.ResultBackendURL = v
			return nil
		}},
	{Name: EnvQueue, Default: "certmgr", Doc: "queue to consume (`worker -Q` overrides)",
		set: text(func(c *Configs) *string { return &c.Worker.Queue })},
	{Name: EnvVisibilityTimeout, Default: "3600", Doc: "seconds before an unacknowledged message of a dead worker is redelivered; must match the Django side",
		set: seconds(func(c *Configs) *time.Duration { return &c.Worker.VisibilityTimeout })},
	{Name: EnvResultExpires, Default: "86400", Doc: "seconds task results are kept",
		set: seconds(func(c *Configs) *time.Duration { return &c.Worker.ResultExpires })},
	{Name: EnvTrackStarted, Default: "false", Doc: "`true`: store the STARTED state when a task starts (Celery's `task_track_started`)",
		set: parsed(parseBool, func(c *Configs) *bool { return &c.Worker.TrackStarted })},
	{Name: EnvResultExtended, Default: "false", Doc: "`true`: stored states carry `name`, `args`, `kwargs`, `worker`, `retries`, `queue` (Celery's `result_extended`)",
		set: parsed(parseBool, func(c *Configs) *bool { return &c.Worker.ResultExtended })},
	{Name: EnvSendTaskEvents, Default: "false", Doc: "`true`: send task events (`task-received/started/succeeded/failed/retried/revoked`) for Flower and `celery events`, as `celery worker -E`; also `certmgr worker -E` / `--task-events`; `control.enable_events()` turns them on at run time",
		set: parsed(parseBool, func(c *Configs) *bool { return &c.Worker.SendTaskEvents })},
	{Name: EnvDefaultQueue, Default: "celery", Doc: "queue of canvas tasks (link callbacks, errbacks, chain steps, chord bodies) whose signature names no queue (Celery's `task_default_queue`)",
		set: text(func(c *Configs) *string { return &c.Worker.DefaultQueue })},
	{Name: EnvRevokeExpires, Default: "10800", Doc: "seconds a revoked task id is honoured; ids are kept in Redis (`certmgr.revoked`), so every replica and a restarted worker honour them (Celery's `REVOKE_EXPIRES`)",
		set: seconds(func(c *Configs) *time.Duration { return &c.Worker.RevokeExpires })},
	{Name: EnvMaxMessageBytes, Default: strconv.Itoa(worker.DefaultMaxMessageBytes), Doc: "largest task message taken; a bigger one is moved to `<queue>.dead` inside Redis (its body never reaches the worker) and its task gets a FAILURE `kombu.exceptions.LimitExceeded` naming the limit; `0`: no limit",
		set: func(c *Configs, v string) error {
			err := number(0, 1<<30, func(c *Configs) *int { return &c.Worker.MaxMessageBytes })(c, v)
			if c.Worker.MaxMessageBytes == 0 {
				c.Worker.MaxMessageBytes = -1 // worker.Config: negative is no limit
			}
			return err
		}},
	{Name: EnvDBURL, Unset: "required", Doc: "Django's PostgreSQL",
		set: func(c *Configs, v string) error {
			err := urlField([]string{"postgres", "postgresql"}, func(c *Configs) *string { return &c.DB.URL })(c, v)
			c.Worker.DatabaseURL, c.Store.URL = c.DB.URL, c.DB.URL
			return err
		}},
	{Name: EnvCNAMETarget, Unset: "required", Doc: "the hostname tenants CNAME to, e.g. `custom.midsummer.cloud`",
		set: func(c *Configs, v string) error {
			if err := (domain.Policy{CNAMETarget: v}).Validate(); err != nil {
				return err
			}
			c.Names.CNAMETarget, c.DNS.Target = v, v
			return nil
		}},
	{Name: EnvDNSServers, Unset: "system resolver", Doc: "comma-separated resolver IP addresses, each optionally `:port` (53), for DNS checks; anything else (a host name, `foo`) is refused",
		set: parsed(dnscheck.ParseServers, func(c *Configs) *[]string { return &c.DNS.Servers })},
	{Name: EnvDNSTimeout, Default: "10", Doc: "seconds one whole DNS check may take (CNAME chain, addresses, the CAA walk up every label, every resolver); past it the check fails as a DNS timeout and is retried",
		set: seconds(func(c *Configs) *time.Duration { return &c.DNS.CheckTimeout })},
	{Name: EnvReservedZones, Doc: "comma-separated zones no tenant may claim, nor any name under them; the registrable domain (Public Suffix List) of `CUSTOM_DOMAIN_CNAME_TARGET` always is",
		set: func(c *Configs, v string) error {
			c.Names.ReservedZones = splitList(v)
			if err := (domain.Policy{ReservedZones: c.Names.ReservedZones}).Validate(); err != nil {
				return fmt.Errorf("comma-separated domain names: %w", err)
			}
			return nil
		}},
	{Name: EnvAllowPrivateSuffixes, Doc: "comma-separated suffixes outside the Public Suffix List that tenant names may end in (the tests and the demo list `test`); otherwise `foo.corp` or `kubernetes.default.svc` are refused",
		set: func(c *Configs, v string) error {
			c.Names.AllowPrivateSuffixes = splitList(v)
			if err := (domain.Policy{AllowPrivateSuffixes: c.Names.AllowPrivateSuffixes}).Validate(); err != nil {
				return fmt.Errorf("comma-separated suffixes such as test: %w", err)
			}
			return nil
		}},
	{Name: EnvOwnership, Default: "cname", Doc: "what proves a tenant owns a name: `cname` (it points at `CUSTOM_DOMAIN_CNAME_TARGET`) or `txt` (also a TXT record `_certmgr.<domain>` holding the owner's token; see [docs/django.md](docs/django.md#ownership-tokens))",
		set: parsed(dnscheck.ParseOwnership, func(c *Configs) *dnscheck.Ownership { return &c.DNS.Ownership })},
	{Name: EnvVerifySecret, Doc: "key of the ownership tokens, at least 16 bytes; required with `txt` (keep it in the Secret, share it with Django); never printed",
		set: func(c *Configs, v string) error {
			if len(v) < 16 {
				// Never echo the value: it is a secret.
				return &ConfigError{Expect: "at least 16 random bytes"}
			}
			c.DNS.VerifySecret = v
			return nil
		}},
	{Name: EnvTXTLabel, Default: "_certmgr", Doc: "the label of the ownership TXT record",
		set: text(func(c *Configs) *string { return &c.DNS.TXTLabel })},
	{Name: EnvACMEEmail, Doc: "ACME account contact",
		set: text(func(c *Configs) *string { return &c.ACME.Email })},
	{Name: EnvACMEStaging, Default: "true", Doc: "Let's Encrypt staging (`true`) or production (`false`)",
		set: func(c *Configs, v string) error {
			staging, err := parseBool(v)
			c.ACME.Production = !staging
			return err
		}},
	{Name: EnvACMEDirectoryURL, Unset: "from `ACME_STAGING`", Doc: "any other ACME directory, https (Pebble in tests)",
		set: parsed(acme.ParseDirectoryURL, func(c *Configs) *string { return &c.ACME.DirectoryURL })},
	{Name: EnvACMECABundle, Doc: "PEM file of extra roots trusted for the ACME server's TLS",
		set: func(c *Configs, v string) error { c.ACME.CABundle = v; return checkPEMFile(v) }},
	{Name: EnvACMEKeyType, Default: string(acme.DefaultKeyType), Doc: "`ec256`, `ec384`, `rsa2048`, `rsa3072`, `rsa4096`",
		set: parsed(acme.ParseKeyType, func(c *Configs) *acme.KeyType { return &c.ACME.KeyType })},
	{Name: EnvACMEProfile, Doc: "ACME profile (`classic`, `tlsserver`, `shortlived`)",
		set: text(func(c *Configs) *string { return &c.ACME.Profile })},
	{Name: EnvACMEWebroot, Default: nginxconf.DefaultACMEWebroot, Doc: "HTTP-01 webroot; nginx serves it on the HTTP port",
		set: func(c *Configs, v string) error { c.ACME.Webroot, c.Nginx.ACMEWebroot = v, v; return checkAbsolute(v) }},
	{Name: EnvLetsEncryptDir, Default: nginxconf.DefaultLetsEncryptDir, Doc: "certbot-layout certificate store",
		set: func(c *Configs, v string) error { c.ACME.Dir, c.Nginx.LetsEncryptDir = v, v; return checkAbsolute(v) }},
	{Name: EnvNginxConfPath, Default: nginxconf.DefaultConfPath, Doc: "the generated file",
		set: text(func(c *Configs) *string { return &c.Nginx.ConfPath })},
	{Name: EnvNginxBinary, Default: nginxconf.DefaultBinary, Doc: "nginx executable; when set, it must be found (an absolute path or a name on `PATH`; fleet workers, which have no nginx, excepted)",
		set: text(func(c *Configs) *string { return &c.Nginx.Binary })}, // checked in crossCheck
	{Name: EnvNginxMainConf, Unset: "nginx's default", Doc: "`-c` for `nginx -t` and `nginx -s reload`",
		set: text(func(c *Configs) *string { return &c.Nginx.MainConf })},
	{Name: EnvNginxPrefix, Unset: "nginx's default", Doc: "`-p`",
		set: text(func(c *Configs) *string { return &c.Nginx.Prefix })},
	{Name: EnvNginxUpstream, Default: nginxconf.DefaultUpstream, Doc: "the application server (Hypercorn): `host:port`, `[v6]:port` or `unix:/path`",
		set: parsed(nginxconf.ParseUpstream, func(c *Configs) *string { return &c.Nginx.Upstream })},
	{Name: EnvNginxHTTPSPort, Default: strconv.Itoa(nginxconf.DefaultHTTPSPort), Doc: "port of the SNI servers",
		set: number(1, 65535, func(c *Configs) *int { return &c.Nginx.HTTPSPort })},
	{Name: EnvNginxHTTPPort, Default: strconv.Itoa(nginxconf.DefaultHTTPPort), Doc: "port of the ACME challenge and redirect servers",
		set: number(1, 65535, func(c *Configs) *int { return &c.Nginx.HTTPPort })},
	{Name: EnvNginxListenAddress, Unset: "every address", Doc: "IP address the generated servers listen on (`127.0.0.1` for a server reached only through a local proxy, and the demo)",
		set: func(c *Configs, v string) error {
			if net.ParseIP(v) == nil {
				return errors.New("an IP address such as 127.0.0.1 or ::1")
			}
			c.Nginx.ListenAddress = v
			return nil
		}},
	{Name: EnvNginxCertMode, Default: string(nginxconf.CertModeAuto), Doc: "`auto`: chosen from `nginx -V`, the modules the main configuration loads and the number of domains (lua when nginx loads its lua module; else variable with `ssl_certificate_cache` on nginx ≥ 1.27.4; on older nginx per-server up to 1,000 domains, variable above), logged and on `/metrics` as `certmgr_nginx_cert_mode`; `per-server`; `variable` (one block, certificate by `$ssl_server_name`); or `lua` (one block, certificate chosen in `ssl_certificate_by_lua`, parsed once per worker: Debian's `libnginx-mod-http-lua` or OpenResty). See [nginxconf/README.md](nginxconf/README.md)",
		set: parsed(nginxconf.ParseCertMode, func(c *Configs) *nginxconf.CertMode { return &c.Nginx.CertMode })},
	{Name: EnvNginxCertCacheMax, Default: strconv.Itoa(nginxconf.DefaultCertCacheMax), Doc: "upper bound of each nginx worker's certificate cache: `ssl_certificate_cache max=` in variable mode on nginx ≥ 1.27.4 (entries, two per domain; about 11.6 KB per domain once warm: the default, 75,000 domains, kept a worker at 926 MB, nginx 1.30.4), and the lineages lua mode keeps parsed per worker (one entry per lineage, about 8.3 KB each once warm: 100,000 domains took 819–848 MB; above about 120,000 lineages lower it to stay under 1 GB per worker). bench/nginx/scale.sh measures both",
		set: number(2, 100000000, func(c *Configs) *int { return &c.Nginx.CertCacheMax })},
	{Name: EnvNginxDefaultCert, Default: nginxconf.DefaultCert, Doc: "certificate of the 421 default server",
		set: text(func(c *Configs) *string { return &c.Nginx.DefaultCert })},
	{Name: EnvNginxDefaultKey, Default: nginxconf.DefaultKey, Doc: "key of the 421 default server",
		set: text(func(c *Configs) *string { return &c.Nginx.DefaultKey })},
	{Name: EnvNginxNamesHash, Default: string(nginxconf.HashAuto), Doc: "`auto`: the generated file sizes `server_names_hash_*` for its names; `off`: the main configuration sets them",
		set: parsed(nginxconf.ParseHashMode, func(c *Configs) *nginxconf.HashMode { return &c.Nginx.HashMode })},
	{Name: EnvNginxReloadMethod, Default: string(nginxconf.ReloadAuto), Doc: "`auto`: `signal` when the master's pid file is readable, else `command`; `command` (`nginx -s reload`, which parses the whole configuration once more); or `signal` (SIGHUP to the master once `nginx -t` passed; skips re-reading every certificate, see [nginxconf/README.md](nginxconf/README.md))",
		set: parsed(nginxconf.ParseReloadMethod, func(c *Configs) *nginxconf.ReloadMethod { return &c.Nginx.ReloadMethod })},
	{Name: EnvNginxTimeout, Default: secondsOf(nginxconf.DefaultTimeout), Doc: "seconds an `nginx -t` or reload may take",
		set: seconds(func(c *Configs) *time.Duration { return &c.Nginx.Timeout })},
	{Name: EnvReloadAllPods, Default: "false", Doc: "`true`: reload nginx on every sibling pod through the Kubernetes API",
		set: func(c *Configs, v string) error {
			all, err := parseBool(v)
			c.Reload.Mode = podreload.ModeLocal
			if all {
				c.Reload.Mode = podreload.ModeExec
			}
			return err
		}},
	{Name: EnvReloadMode, Unset: "`exec`", Doc: "with `RELOAD_ALL_PODS=true`: `exec` (pods/exec) or `rollout` (rolling restart, for clusters that forbid exec)",
		set: func(c *Configs, v string) error {
			m, err := podreload.ParseMode(v)
			if err == nil && c.Reload.Mode != podreload.ModeLocal {
				c.Reload.Mode = m
			}
			return err
		}},
	{Name: EnvDeploymentName, Doc: "Deployment whose pods are siblings (required with `RELOAD_ALL_PODS=true`)",
		set: text(func(c *Configs) *string { return &c.Reload.DeploymentName })},
	{Name: EnvPodNamespace, Unset: "`CATTLE_K8S_NAMESPACE`, then the service account's", Doc: "namespace of the Deployment",
		set: text(func(c *Configs) *string { return &c.Reload.Namespace })},
	{Name: EnvCattleNamespace, Doc: "Rancher's namespace variable, the fallback of `POD_NAMESPACE`",
		set: func(c *Configs, v string) error { c.Reload.Namespace = cmp.Or(c.Reload.Namespace, v); return nil }},
	{Name: EnvPodName, Doc: "this pod (Downward API)",
		set: func(c *Configs, v string) error { c.Reload.PodName, c.Agent.Pod = v, v; return nil }},
	{Name: EnvNginxContainer, Default: podreload.DefaultContainer, Doc: "container to exec into",
		set: text(func(c *Configs) *string { return &c.Reload.Container })},
	{Name: EnvKubeconfig, Unset: "in-cluster", Doc: "kubeconfig, for running outside the cluster",
		set: text(func(c *Configs) *string { return &c.Reload.Kubeconfig })},
	{Name: EnvHTTPAddr, Default: ":9102", Doc: "`/healthz`, `/readyz`, `/metrics`; for `certmgr agent` also the HTTP-01 answers",
		set: text(func(c *Configs) *string { return &c.HTTPAddr })},
	{Name: EnvStore, Default: string(wire.StoreFiles), Doc: "`files`: the certbot-layout `LETSENCRYPT_DIR`; `postgres`: fleet mode, certmgr's own tables in `MIDSUMMER_DB_URL` and a `certmgr agent` beside every nginx ([fleet mode](docs/deploy.md#fleet-mode))",
		set: parsed(wire.ParseStoreKind, func(c *Configs) *wire.StoreKind { return &c.StoreKind })},
	{Name: EnvStoreKey, Unset: "required with `postgres`", Doc: "base64 of 32 random bytes sealing private keys (AES-256-GCM); `new,old` during a rotation. Missing or wrong: exit 2 at start",
		set: text(func(c *Configs) *string { return &c.Store.Key })},
	{Name: EnvAgentResync, Default: "300", Doc: "seconds between an agent's full reconciles (it also follows LISTEN/NOTIFY, and reconciles at start and on every reconnection)",
		set: seconds(func(c *Configs) *time.Duration { return &c.Agent.Resync })},
	{Name: EnvAgentSyncTimeout, Default: "60", Doc: "seconds an agent's sync (store reads, `nginx -t`, reload) may take; one still waiting then (a silent network partition) fails, is logged, counted in `certmgr_agent_syncs_total{result=\"timeout\"}` and shown in `/readyz`, and is retried",
		set: seconds(func(c *Configs) *time.Duration { return &c.Agent.SyncTimeout })},
	{Name: EnvAgentWait, Default: "10", Doc: "seconds a fleet-mode task waits for every agent to serve its change",
		set: seconds(func(c *Configs) *time.Duration { return &c.Waiter.Wait })},
	{Name: EnvAgentAlive, Default: "30", Doc: "seconds since its last heartbeat for which a fleet-mode task still counts an agent's pod (and waits for it); keep it several times CERTMGR_AGENT_HEARTBEAT",
		set: seconds(func(c *Configs) *time.Duration { return &c.Waiter.Alive })},
	{Name: EnvAgentHeartbeat, Default: "5", Doc: "seconds between an agent's heartbeats while nothing changes",
		set: seconds(func(c *Configs) *time.Duration { return &c.Agent.HeartbeatEvery })},
	{Name: EnvConcurrency, Default: "4", Doc: "tasks run at once (`--concurrency`)",
		set: number(1, 1024, func(c *Configs) *int { return &c.Worker.Concurrency })},
	{Name: EnvForceInterval, Default: "3600", Doc: "seconds between two forced re-issues (`force=True`) of one domain; an earlier one fails at once with `RateLimited`",
		set: seconds(func(c *Configs) *time.Duration { return &c.Tasks.Budgets.ForceInterval })},
	{Name: EnvTenantOrdersPerHour, Default: "20", Doc: "ACME orders one tenant (or event) may cause per hour; more fail at once with `RateLimited`, before reaching the CA",
		set: number(1, 1000000, func(c *Configs) *int { return &c.Tasks.Budgets.TenantOrdersPerHour })},
	{Name: EnvReloadMinInterval, Default: "2", Doc: "seconds between two regenerations and reloads shared by issue tasks: issuances that finish close together are published together, each task still getting every pod's outcome",
		set: seconds(func(c *Configs) *time.Duration { return &c.Tasks.ReloadMinInterval })},
	{Name: EnvTaskTimeLimit, Default: "300", Doc: "seconds a task sent without its own Celery time limit may run; past it the task fails with `TimeLimitExceeded` (not retried) and releases its lock",
		set: seconds(func(c *Configs) *time.Duration { return &c.Worker.DefaultTimeLimit })},
	{Name: EnvShutdownGrace, Default: "60", Doc: "seconds in-flight tasks get after SIGTERM before they are cancelled and left for redelivery; it bounds the whole stop, also when the broker or result backend is down (held messages stay unacked and come back); a second SIGTERM or SIGINT exits at once",
		set: seconds(func(c *Configs) *time.Duration { return &c.Worker.ShutdownGrace })},
	{Name: EnvRetryBase, Default: secondsOf(tasks.DefaultRetryBase), Doc: "seconds before the first retry of a transient failure (database, DNS, CA down); doubles per retry",
		set: seconds(func(c *Configs) *time.Duration { return &c.Tasks.RetryBase })},
	{Name: EnvRetryMax, Default: secondsOf(tasks.DefaultRetryMax), Doc: "longest retry delay, seconds",
		set: seconds(func(c *Configs) *time.Duration { return &c.Tasks.RetryMax })},
	{Name: EnvLogLevel, Default: "info", Doc: "`debug`, `info`, `warning`, `error`, `critical` (`--loglevel`)"},
	{Name: EnvLogFormat, Unset: "console on a terminal, else `json`", Doc: "`json` or `console` (`--log-format`)"},
}

// defaultText is the default for a person: the value, else Unset, else empty.
func (v Variable) defaultText(empty string) string {
	if v.Default != "" {
		return "`" + v.Default + "`"
	}
	return cmp.Or(v.Unset, empty)
}

// needs says which settings a subcommand cannot run without.
type needs struct {
	db     bool // MIDSUMMER_DB_URL
	target bool // CUSTOM_DOMAIN_CNAME_TARGET
}

// loadConfigs applies the table to the environment; the error joins one
// ConfigError per bad or missing variable.
func loadConfigs(get func(string) string, n needs) (Configs, error) {
	var c Configs
	var errs []error
	for _, v := range Variables {
		if v.set == nil {
			continue
		}
		val := cmp.Or(strings.TrimSpace(get(v.Name)), v.Default)
		if val == "" {
			continue
		}
		if err := v.set(&c, val); err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				ce = &ConfigError{Value: val, Expect: err.Error()}
			}
			ce.Name = v.Name
			errs = append(errs, ce)
		}
	}
	errs = append(errs, crossCheck(c, n)...)
	if len(errs) > 0 {
		return c, fmt.Errorf("configuration: %w", errors.Join(errs...))
	}
	// Issue tasks take seconds (an ACME order); a replica holding many
	// waiting messages would starve its siblings. Celery's default is 4×.
	c.Worker.Prefetch = c.Worker.Concurrency
	// Transient failures back off from CERTMGR_RETRY_BASE to
	// CERTMGR_RETRY_MAX: with the defaults ten retries cover about an hour
	// of a database, DNS or CA outage.
	c.Worker.MaxRetries = tasks.DefaultMaxRetries
	return c, nil
}

// crossCheck holds the rules that involve more than one variable or depend
// on the subcommand.
func crossCheck(c Configs, n needs) []error {
	var errs []error
	// A set NGINX_BINARY must be found; the default is for the pre-flight to
	// judge, and fleet workers (the postgres store) run no nginx at all.
	if b := c.Nginx.Binary; b != "" && b != nginxconf.DefaultBinary && c.StoreKind != wire.StorePostgres {
		if _, err := exec.LookPath(b); err != nil {
			errs = append(errs, &ConfigError{Name: EnvNginxBinary, Value: b, Expect: "an executable (absolute path or a name on PATH): " + err.Error()})
		}
	}
	if n.db && c.DB.URL == "" {
		errs = append(errs, &ConfigError{Name: EnvDBURL, Expect: "a PostgreSQL URL such as postgres://user:pass@host:5432/db"})
	}
	if n.target && c.Names.CNAMETarget == "" {
		errs = append(errs, &ConfigError{Name: EnvCNAMETarget, Expect: "the hostname tenants CNAME to, e.g. custom.midsummer.cloud"})
	}
	if c.Reload.Mode != podreload.ModeLocal && c.Reload.DeploymentName == "" {
		errs = append(errs, &ConfigError{Name: EnvDeploymentName, Expect: "the Deployment whose pods reload nginx, when RELOAD_ALL_PODS=true"})
	}
	if c.DNS.Ownership == dnscheck.OwnershipTXT && c.DNS.VerifySecret == "" {
		errs = append(errs, &ConfigError{Name: EnvVerifySecret, Expect: "at least 16 random bytes when CUSTOM_DOMAIN_OWNERSHIP=txt"})
	}
	if c.Tasks.RetryMax < c.Tasks.RetryBase {
		errs = append(errs, &ConfigError{Name: EnvRetryMax, Value: c.Tasks.RetryMax.String(), Expect: "at least " + EnvRetryBase})
	}
	if c.StoreKind == wire.StorePostgres && c.Reload.Mode != podreload.ModeLocal {
		errs = append(errs, &ConfigError{Name: EnvReloadAllPods, Value: "true", Expect: "false with CERTMGR_STORE=postgres: in fleet mode no worker reloads nginx; " +
			"the certmgr agent beside each nginx reloads its own when the store changes, so no pods/exec permission is needed"})
	}
	return errs
}

// ConfigError is a missing or malformed setting; certmgr exits 2 on it.
type ConfigError struct {
	Name   string // environment variable or flag
	Value  string
	Expect string
}

func (e *ConfigError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s is required: %s", e.Name, e.Expect)
	}
	return fmt.Sprintf("%s=%q is invalid: expected %s", e.Name, e.Value, e.Expect)
}

// The setters below adapt a field and, for closed sets, the owning package's
// parser to a table row.

// checkPEMFile: a readable file holding at least one PEM certificate
// (ACME_CA_BUNDLE).
func checkPEMFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("a readable PEM file of CA certificates: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return errors.New("a PEM file of CA certificates; this file holds none")
	}
	return nil
}

// checkAbsolute: an absolute path. Whether it exists is for the command to
// say (exit 1) and for the worker's pre-flight: a volume may be mounted
// after the configuration is written.
func checkAbsolute(path string) error {
	if !filepath.IsAbs(path) {
		return errors.New("an absolute path")
	}
	return nil
}

func text(f func(*Configs) *string) func(*Configs, string) error {
	return func(c *Configs, v string) error { *f(c) = v; return nil }
}

func parsed[T any](parse func(string) (T, error), f func(*Configs) *T) func(*Configs, string) error {
	return func(c *Configs, v string) error {
		x, err := parse(v)
		if err != nil {
			return err
		}
		*f(c) = x
		return nil
	}
}

func seconds(f func(*Configs) *time.Duration) func(*Configs, string) error {
	return func(c *Configs, v string) error {
		s, err := strconv.ParseFloat(v, 64)
		if err != nil || s <= 0 {
			return errors.New("a positive number of seconds")
		}
		*f(c) = time.Duration(s * float64(time.Second))
		return nil
	}
}

func number(lo, hi int, f func(*Configs) *int) func(*Configs, string) error {
	return func(c *Configs, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("a whole number from %d to %d", lo, hi)
		}
		*f(c) = n
		return nil
	}
}

// brokerURL checks a Celery broker or result backend URL with the worker's
// parser; an invalid one is reported with its password replaced.
func brokerURL(f func(*Configs) *string) func(*Configs, string) error {
	return func(c *Configs, v string) error {
		if err := worker.CheckURL(v); err != nil {
			return &ConfigError{Value: redactURL(v), Expect: err.Error()}
		}
		*f(c) = v
		return nil
	}
}

// urlField checks a connection URL's scheme and host; an invalid one is
// reported redacted, since it may hold a password.
func urlField(schemes []string, f func(*Configs) *string) func(*Configs, string) error {
	return func(c *Configs, v string) error {
		u, err := url.Parse(v)
		if err == nil && u.Host != "" {
			for _, s := range schemes {
				if u.Scheme == s {
					*f(c) = v
					return nil
				}
			}
		}
		return &ConfigError{Value: redactURL(v),
			Expect: "a URL with scheme " + strings.Join(schemes, " or ") + " and a host (percent-encode special characters such as # / ? @ in the user name and password)"}
	}
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, errors.New("true or false")
}

func splitList(v string) []string {
	var out []string
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func secondsOf(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

// redactURL is a connection URL fit to print: the user information (up to the
// last @, so that an unescaped # or / in a password cannot move the cut) and
// every query value are replaced. It never calls a URL parser, whose error
// text would quote the input.
func redactURL(v string) string {
	scheme, rest, ok := strings.Cut(v, "://")
	if !ok {
		scheme, rest = "", v
	} else {
		scheme += "://"
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		rest = "REDACTED@" + rest[at+1:]
	}
	if base, query, ok := strings.Cut(rest, "?"); ok {
		var keys []string
		for kv := range strings.SplitSeq(query, "&") {
			k, _, _ := strings.Cut(kv, "=")
			keys = append(keys, k+"=REDACTED")
		}
		rest = base + "?" + strings.Join(keys, "&")
	}
	if strings.Contains(rest, "#") {
		// A # left in the host part is a password cut by the parser, or a fragment
		// no connection URL has: print nothing after it.
		rest, _, _ = strings.Cut(rest, "#")
		rest += "#REDACTED"
	}
	return scheme + rest
}
