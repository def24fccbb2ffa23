package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/midsummer/certmgr/worker"
)

// The environment variables certmgr reads. CONTRACT.md fixes the names the
// Django app, operators and manifests rely on; the CERTMGR_* ones are
// certmgr's own additions. This table is the one place the names live: the
// help text, the README table and the deploy manifests' test read it.
const (
	EnvBrokerURL            = "CELERY_BROKER_URL"
	EnvResultBackend        = "CELERY_RESULT_BACKEND"
	EnvQueue                = "CUSTOM_DOMAIN_CELERY_QUEUE"
	EnvVisibilityTimeout    = "CELERY_VISIBILITY_TIMEOUT"
	EnvDBURL                = "MIDSUMMER_DB_URL"
	EnvCNAMETarget          = "CUSTOM_DOMAIN_CNAME_TARGET"
	EnvACMEEmail            = "ACME_EMAIL"
	EnvACMEStaging          = "ACME_STAGING"
	EnvACMEDirectoryURL     = "ACME_DIRECTORY_URL"
	EnvACMECABundle         = "ACME_CA_BUNDLE"
	EnvACMEKeyType          = "ACME_KEY_TYPE"
	EnvACMEProfile          = "ACME_PROFILE"
	EnvACMEWebroot          = "ACME_WEBROOT"
	EnvLetsEncryptDir       = "LETSENCRYPT_DIR"
	EnvDNSServers           = "CUSTOM_DOMAIN_DNS_SERVERS"
	EnvReservedZones        = "CUSTOM_DOMAIN_RESERVED_ZONES"
	EnvAllowPrivateSuffixes = "CUSTOM_DOMAIN_ALLOW_PRIVATE_SUFFIXES"
	EnvNginxConfPath        = "NGINX_CONF_PATH"
	EnvNginxBinary          = "NGINX_BINARY"
	EnvNginxMainConf        = "NGINX_MAIN_CONF"
	EnvNginxPrefix          = "NGINX_PREFIX"
	EnvNginxUpstream        = "NGINX_UPSTREAM"
	EnvNginxHTTPSPort       = "NGINX_HTTPS_PORT"
	EnvNginxHTTPPort        = "NGINX_HTTP_PORT"
	EnvNginxCertMode        = "NGINX_CERT_MODE"
	EnvNginxDefaultCert     = "NGINX_DEFAULT_CERT"
	EnvNginxDefaultKey      = "NGINX_DEFAULT_KEY"
	EnvNginxNamesHash       = "NGINX_SERVER_NAMES_HASH"
	EnvNginxReloadMethod    = "NGINX_RELOAD_METHOD"
	EnvNginxTimeout         = "NGINX_COMMAND_TIMEOUT"
	EnvReloadAllPods        = "RELOAD_ALL_PODS"
	EnvDeploymentName       = "DEPLOYMENT_NAME"
	EnvPodNamespace         = "POD_NAMESPACE"
	EnvCattleNamespace      = "CATTLE_K8S_NAMESPACE"
	EnvPodName              = "POD_NAME"
	EnvNginxContainer       = "NGINX_CONTAINER"
	EnvHTTPAddr             = "CERTMGR_HTTP_ADDR"
	EnvConcurrency          = "CERTMGR_CONCURRENCY"
	EnvLogLevel             = "CERTMGR_LOGLEVEL"
	EnvLogFormat            = "CERTMGR_LOG_FORMAT"
	EnvShutdownGrace        = "CERTMGR_SHUTDOWN_GRACE"
	EnvRetryBase            = "CERTMGR_RETRY_BASE"
	EnvRetryMax             = "CERTMGR_RETRY_MAX"
	EnvTaskTimeLimit        = "CERTMGR_TASK_TIME_LIMIT"
	EnvDNSTimeout           = "CUSTOM_DOMAIN_DNS_TIMEOUT"
	EnvOwnership            = "CUSTOM_DOMAIN_OWNERSHIP"
	EnvVerifySecret         = "CUSTOM_DOMAIN_VERIFY_SECRET"
	EnvTXTLabel             = "CUSTOM_DOMAIN_TXT_LABEL"
	EnvReloadMode           = "CERTMGR_RELOAD_MODE"
	EnvKubeconfig           = "KUBECONFIG"
	EnvResultExpires        = "CELERY_RESULT_EXPIRES"
	EnvStore                = "CERTMGR_STORE"
	EnvStoreKey             = "CERTMGR_STORE_KEY"
	EnvAgentResync          = "CERTMGR_AGENT_RESYNC"
	EnvAgentWait            = "CERTMGR_AGENT_WAIT"
	EnvBrokerOptions        = "CELERY_BROKER_TRANSPORT_OPTIONS"
	EnvBackendOptions       = "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"
	EnvMaxMessageBytes      = "CERTMGR_MAX_MESSAGE_BYTES"
)

// Variable documents one environment variable.
type Variable struct {
	Name    string
	Default string // as the user would write it; "" = empty or derived
	Help    string
}

// Variables is every environment variable certmgr reads, in README order.
var Variables = []Variable{
	{EnvBrokerURL, "redis://localhost:6379/0", "the Redis broker the Django app sends tasks to: redis://, rediss:// (with Celery's ssl_* parameters), redis+socket:// or unix://"},
	{EnvBrokerOptions, "", "kombu's broker_transport_options as JSON, e.g. {\"global_keyprefix\": \"midsummer:\"}; an option certmgr does not implement stops it at start"},
	{EnvBackendOptions, "", "Celery's result_backend_transport_options as JSON: master_name and sentinel_kwargs for a sentinel:// result backend"},
	{EnvResultBackend, "", "result backend: a Redis URL (default: the broker URL), django-db (django-celery-results' table in MIDSUMMER_DB_URL) or disabled"},
	{EnvQueue, "certmgr", "queue to consume (worker -Q overrides)"},
	{EnvVisibilityTimeout, "3600", "seconds before an unacknowledged message of a dead worker is redelivered; must match the Django side"},
	{EnvResultExpires, "86400", "seconds task results are kept (Celery's result_expires)"},
	{EnvMaxMessageBytes, "1048576", "largest task message taken; a bigger one goes to the dead list, unread, with a FAILURE result naming the limit (0: no limit)"},
	{EnvDBURL, "", "Django's PostgreSQL (required)"},
	{EnvCNAMETarget, "", "hostname tenants CNAME to, e.g. custom.midsummer.cloud (required)"},
	{EnvReservedZones, "", "comma-separated zones no tenant may claim, nor any name under them (the CNAME target's registrable domain always is)"},
	{EnvAllowPrivateSuffixes, "", "comma-separated suffixes outside the Public Suffix List that tenant names may end in (tests: test); names under no public suffix are refused otherwise"},
	{EnvACMEEmail, "", "ACME account contact"},
	{EnvACMEStaging, "true", "Let's Encrypt staging (true) or production (false)"},
	{EnvACMEDirectoryURL, "", "any other ACME directory (default from ACME_STAGING)"},
	{EnvACMECABundle, "", "PEM file of extra roots trusted for the ACME server's TLS"},
	{EnvACMEKeyType, "ec256", "ec256, ec384, rsa2048, rsa3072 or rsa4096"},
	{EnvACMEProfile, "", "ACME profile to request (classic, tlsserver, shortlived)"},
	{EnvACMEWebroot, "/var/www/letsencrypt", "HTTP-01 webroot; must match the root nginx serves on the HTTP port"},
	{EnvLetsEncryptDir, "/etc/letsencrypt", "certbot-layout certificate store"},
	{EnvDNSServers, "", "comma-separated host:port resolvers for DNS checks (default: the system resolver)"},
	{EnvNginxConfPath, "/etc/nginx/conf.d/custom-domains.conf", "the generated nginx file"},
	{EnvNginxBinary, "nginx", "nginx executable"},
	{EnvNginxMainConf, "", "passed as -c to nginx -t and nginx -s reload (default: nginx's own)"},
	{EnvNginxPrefix, "", "passed as -p (default: nginx's own)"},
	{EnvNginxUpstream, "127.0.0.1:8082", "the application server nginx proxies to"},
	{EnvNginxHTTPSPort, "8443", "port of the SNI servers"},
	{EnvNginxHTTPPort, "8080", "port of the ACME challenge and redirect servers"},
	{EnvNginxCertMode, "auto", "auto (pick from nginx -V and the domain count; logged and on /metrics), per-server (one server block per domain) or variable (one block, certificate by $ssl_server_name)"},
	{EnvNginxDefaultCert, "/etc/ssl/certs/ssl-cert-snakeoil.pem", "certificate of the 421 default server"},
	{EnvNginxDefaultKey, "/etc/ssl/private/ssl-cert-snakeoil.key", "key of the 421 default server"},
	{EnvNginxNamesHash, "auto", "auto: the generated file sizes server_names_hash for its names; off: the main configuration does"},
	{EnvNginxReloadMethod, "auto", "auto (signal when the master's pid file is readable, else command), command (nginx -s reload, which parses the whole configuration again) or signal (SIGHUP to the master after nginx -t passed: skips re-reading every certificate)"},
	{EnvNginxTimeout, "120", "seconds an nginx -t or reload may take"},
	{EnvReloadAllPods, "false", "true: reload nginx on every sibling pod through the Kubernetes API"},
	{EnvReloadMode, "", "exec or rollout when RELOAD_ALL_PODS=true (default exec); local otherwise"},
	{EnvDeploymentName, "", "Deployment whose pods are siblings"},
	{EnvPodNamespace, "", "namespace (default CATTLE_K8S_NAMESPACE, then the service account's)"},
	{EnvCattleNamespace, "", "Rancher's namespace variable, the fallback of POD_NAMESPACE"},
	{EnvPodName, "", "this pod (Downward API)"},
	{EnvNginxContainer, "proxy", "container to exec into"},
	{EnvKubeconfig, "", "kubeconfig to use instead of the in-cluster configuration"},
	{EnvHTTPAddr, ":9102", "address of /healthz, /readyz and /metrics (and, for certmgr agent, of HTTP-01 answers)"},
	{EnvStore, "files", "files (the certbot-layout LETSENCRYPT_DIR) or postgres (fleet mode: certmgr's tables in MIDSUMMER_DB_URL, a certmgr agent beside every nginx)"},
	{EnvStoreKey, "", "with CERTMGR_STORE=postgres: base64 of 32 random bytes sealing private keys; \"new,old\" during a rotation (required)"},
	{EnvAgentResync, "300", "seconds between an agent's full reconciles (besides LISTEN/NOTIFY, at start and on reconnect)"},
	{EnvAgentWait, "10", "seconds a fleet-mode task waits for every agent to serve its change"},
	{EnvConcurrency, "4", "tasks run at once by the worker (--concurrency)"},
	{EnvShutdownGrace, "60", "seconds in-flight tasks get after SIGTERM before they are cancelled and left for redelivery"},
	{EnvRetryBase, "10", "seconds before the first retry of a transient failure (database, DNS, CA down); doubles per retry"},
	{EnvRetryMax, "600", "longest retry delay in seconds"},
	{EnvTaskTimeLimit, "300", "seconds a task sent without its own time limit may run; past it the task fails with TimeLimitExceeded and releases its lock"},
	{EnvDNSTimeout, "10", "seconds one whole DNS check may take, CAA walk and every resolver included"},
	{EnvOwnership, "cname", "cname (the name points at the CNAME target) or txt (also a TXT record <label>.<domain> holding the owner's token)"},
	{EnvVerifySecret, "", "key of the ownership tokens, at least 16 bytes (required with CUSTOM_DOMAIN_OWNERSHIP=txt; keep it in the Secret)"},
	{EnvTXTLabel, "_certmgr", "label of the ownership TXT record"},
	{EnvLogLevel, "info", "debug, info, warning, error, critical (--loglevel)"},
	{EnvLogFormat, "", "json or console (default: console on a terminal, json otherwise)"},
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

// env reads variables with the documented defaults and collects errors.
type env struct {
	get  func(string) string
	errs []error
}

func (e *env) defaultOf(name string) string {
	for _, v := range Variables {
		if v.Name == name {
			return v.Default
		}
	}
	panic("undocumented environment variable " + name)
}

// str returns the variable or its documented default.
func (e *env) str(name string) string {
	if v := strings.TrimSpace(e.get(name)); v != "" {
		return v
	}
	return e.defaultOf(name)
}

func (e *env) required(name, expect string) string {
	v := e.str(name)
	if v == "" {
		e.errs = append(e.errs, &ConfigError{Name: name, Expect: expect})
	}
	return v
}

func (e *env) bool(name string) bool {
	v := e.str(name)
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true
	case "0", "false", "no", "off":
		return false
	}
	e.errs = append(e.errs, &ConfigError{Name: name, Value: v, Expect: "true or false"})
	return false
}

func (e *env) int(name string, lo, hi int) int {
	v := e.str(name)
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		e.errs = append(e.errs, &ConfigError{Name: name, Value: v, Expect: fmt.Sprintf("a whole number from %d to %d", lo, hi)})
	}
	return n
}

func (e *env) seconds(name string) time.Duration {
	v := e.str(name)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		e.errs = append(e.errs, &ConfigError{Name: name, Value: v, Expect: "a positive number of seconds"})
		return 0
	}
	return time.Duration(f * float64(time.Second))
}

func (e *env) url(name string, schemes ...string) string {
	v := e.str(name)
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err == nil && u.Host != "" {
		for _, s := range schemes {
			if u.Scheme == s {
				return v
			}
		}
	}
	e.errs = append(e.errs, &ConfigError{Name: name, Value: redactURL(v),
		Expect: "a URL with scheme " + strings.Join(schemes, " or ") + " and a host (percent-encode special characters such as # / ? @ in the user name and password)"})
	return v
}

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

// brokerURL checks a Celery broker or result backend URL; the error shows
// the URL with its password replaced.
func (e *env) brokerURL(name string) string {
	v := e.str(name)
	if err := worker.CheckURL(v); err != nil {
		e.errs = append(e.errs, &ConfigError{Name: name, Value: redactURL(v), Expect: err.Error()})
	}
	return v
}

func (e *env) oneOf(name string, allowed ...string) string {
	v := e.str(name)
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	e.errs = append(e.errs, &ConfigError{Name: name, Value: v, Expect: "one of " + strings.Join(allowed, ", ")})
	return v
}

func (e *env) list(name string) []string {
	var out []string
	for _, s := range strings.Split(e.str(name), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (e *env) hostPort(name string) string {
	v := e.str(name)
	if _, p, ok := strings.Cut(v, ":"); !ok || p == "" {
		e.errs = append(e.errs, &ConfigError{Name: name, Value: v, Expect: "host:port"})
	}
	return v
}

func (e *env) fail(err error) { e.errs = append(e.errs, err) }
