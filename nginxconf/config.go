package nginxconf

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// CertMode says how the HTTPS server blocks pick their certificate
// (NGINX_CERT_MODE).
type CertMode string

const (
	// CertModePerServer renders one server block per domain with its own
	// ssl_certificate. nginx loads every certificate at reload; a renewal
	// changes the file (it records each certificate's fingerprint) and so
	// triggers a reload.
	CertModePerServer CertMode = "per-server"
	// CertModeVariable renders one server block whose ssl_certificate comes from
	// a map of known names keyed by $ssl_server_name. nginx 1.22 reads the
	// certificate from disk at each full handshake; a renewal needs no reload,
	// and nginx -t and reloads do not load thousands of certificates.
	CertModeVariable CertMode = "variable"
	// CertModeLua renders one server block whose certificate is chosen in
	// Lua (ssl_certificate_by_lua_block, nginx's lua module with
	// lua-resty-core): the names are a table built once in the master, and
	// each worker keeps the parsed certificate and key of up to CertCacheMax
	// names, sharing one parsed copy of each intermediate chain. Handshakes
	// cost what they cost with per-server blocks; nginx -t and reloads parse
	// no certificate.
	CertModeLua CertMode = "lua"
	// CertModeAuto picks one of the others at each regeneration from the
	// nginx binary (`nginx -V`, and the modules the main configuration
	// loads) and the number of domains; see [Choose].
	CertModeAuto CertMode = "auto"
)

// ParseCertMode reads NGINX_CERT_MODE; "" means auto.
func ParseCertMode(s string) (CertMode, error) {
	switch CertMode(strings.ToLower(strings.TrimSpace(s))) {
	case "", CertModeAuto:
		return CertModeAuto, nil
	case CertModePerServer:
		return CertModePerServer, nil
	case CertModeVariable:
		return CertModeVariable, nil
	case CertModeLua:
		return CertModeLua, nil
	}
	return "", fmt.Errorf("unknown NGINX_CERT_MODE %q: want auto, per-server, variable or lua", s)
}

// HashMode says whether the generated file sizes nginx's name hashes
// (NGINX_SERVER_NAMES_HASH).
type HashMode string

const (
	// HashAuto writes server_names_hash_max_size/bucket_size (and the map_hash_*
	// pair in variable mode) sized for the number of names. These directives
	// are http-level and may appear only once: the main configuration must not
	// set them too (nginx -t says "is duplicate" and the candidate is refused).
	HashAuto HashMode = "auto"
	// HashOff leaves them to the main configuration, which must then size them
	// for the fleet (nginx -t warns when it cannot build the hash).
	HashOff HashMode = "off"
)

// ParseHashMode reads NGINX_SERVER_NAMES_HASH; "" means auto.
func ParseHashMode(s string) (HashMode, error) {
	switch HashMode(strings.ToLower(strings.TrimSpace(s))) {
	case "", HashAuto:
		return HashAuto, nil
	case HashOff:
		return HashOff, nil
	}
	return "", fmt.Errorf("unknown NGINX_SERVER_NAMES_HASH %q: want auto or off", s)
}

// ReloadMethod says how LocalReloader reloads nginx (NGINX_RELOAD_METHOD).
type ReloadMethod string

const (
	// ReloadCommand runs `nginx -s reload`. That command parses the whole
	// configuration, loading every certificate, only to find the pid file:
	// with thousands of certificates it costs as much as nginx -t.
	ReloadCommand ReloadMethod = "command"
	// ReloadSignal sends SIGHUP to the master itself: the pid file named by
	// the main configuration's `pid` directive (or nginx's compiled-in
	// --pid-path), after checking that the process is an nginx master. This is
	// what `nginx -s reload` ends with, without its parse.
	ReloadSignal ReloadMethod = "signal"
	// ReloadAuto signals the master when its pid is reachable (pid file
	// readable, the process visible and an nginx master, the signal
	// permitted) and runs `nginx -s reload` otherwise, saying why once.
	ReloadAuto ReloadMethod = "auto"
)

// ParseReloadMethod reads NGINX_RELOAD_METHOD; "" means auto.
func ParseReloadMethod(s string) (ReloadMethod, error) {
	switch ReloadMethod(strings.ToLower(strings.TrimSpace(s))) {
	case "", ReloadAuto:
		return ReloadAuto, nil
	case ReloadCommand:
		return ReloadCommand, nil
	case ReloadSignal:
		return ReloadSignal, nil
	}
	return "", fmt.Errorf("unknown NGINX_RELOAD_METHOD %q: want auto, command or signal", s)
}

// Defaults of the Config fields, as documented in the contract.
const (
	DefaultConfPath       = "/etc/nginx/conf.d/custom-domains.conf"
	DefaultBinary         = "nginx"
	DefaultUpstream       = "127.0.0.1:8082"
	DefaultHTTPSPort      = 8443
	DefaultHTTPPort       = 8080
	DefaultCert           = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
	DefaultKey            = "/etc/ssl/private/ssl-cert-snakeoil.key"
	DefaultACMEWebroot    = "/var/www/letsencrypt"
	DefaultLetsEncryptDir = "/etc/letsencrypt"
	DefaultTimeout        = 2 * time.Minute
	// PingPath is the platform's health check on the HTTP port; the generated
	// HTTP server proxies it to the upstream instead of redirecting it.
	PingPath = "/ping/"
)

// Config is everything nginxconf needs. The zero value of a field means its
// default.
type Config struct {
	// ConfPath is the generated file (NGINX_CONF_PATH), default
	// /etc/nginx/conf.d/custom-domains.conf. It must be included by the main
	// configuration itself (not through another included file), inside http{}.
	ConfPath string
	// Binary is the nginx executable (NGINX_BINARY), default "nginx".
	Binary string
	// MainConf is passed as -c (NGINX_MAIN_CONF); empty means nginx's compiled-in
	// path, read from `nginx -V`.
	MainConf string
	// Prefix is passed as -p (NGINX_PREFIX); empty means nginx's default.
	Prefix string
	// Upstream is where requests go (NGINX_UPSTREAM), default 127.0.0.1:8082:
	// host:port, [v6]:port or unix:/path.
	Upstream string
	// HTTPSPort (NGINX_HTTPS_PORT) default 8443; HTTPPort (NGINX_HTTP_PORT)
	// default 8080.
	HTTPSPort int
	HTTPPort  int
	// ListenAddress (NGINX_LISTEN_ADDRESS) is the IP address the generated
	// servers listen on, for example 127.0.0.1 or ::1. Default: every
	// address (listen PORT).
	ListenAddress string
	// CertMode (NGINX_CERT_MODE) default auto.
	CertMode CertMode
	// AutoVariableAbove is the number of domains above which auto mode picks
	// variable on an nginx without ssl_certificate_cache, default
	// DefaultAutoVariableAbove.
	AutoVariableAbove int
	// CertCacheMax bounds the certificates each nginx worker keeps parsed
	// (NGINX_CERT_CACHE_MAX), default DefaultCertCacheMax: ssl_certificate_cache's
	// max= where nginx has the cache (entries; a domain needs two, its
	// certificate and its key), and in lua mode the names in each worker's
	// cache (a domain needs one).
	CertCacheMax int
	// CertRecheck is how long a worker serves a cached certificate before it
	// looks at its file again (a renewal is served within it, without a
	// reload): ssl_certificate_cache's valid= in variable mode, the recheck
	// of lua mode's cache. Default DefaultCertRecheck; whole seconds.
	CertRecheck time.Duration
	// DefaultCert and DefaultKey are the certificate of the HTTPS default
	// server that answers 421 to unknown names (NGINX_DEFAULT_CERT,
	// NGINX_DEFAULT_KEY), default Debian's snakeoil pair.
	DefaultCert string
	DefaultKey  string
	// ACMEWebroot is the HTTP-01 webroot served under
	// /.well-known/acme-challenge/ (ACME_WEBROOT), default /var/www/letsencrypt.
	ACMEWebroot string
	// ACMEChallengeProxy, when set (fleet mode: the certmgr agent's
	// CERTMGR_HTTP_ADDR as host:port), makes the HTTP server proxy
	// /.well-known/acme-challenge/ to it instead of serving ACMEWebroot: the
	// agent answers from the certificate store, there is no shared webroot.
	ACMEChallengeProxy string
	// LetsEncryptDir is the certbot-layout store (LETSENCRYPT_DIR), default
	// /etc/letsencrypt; a domain's files are live/<name>/fullchain.pem and
	// privkey.pem.
	LetsEncryptDir string
	// HashMode (NGINX_SERVER_NAMES_HASH) default auto.
	HashMode HashMode
	// ReloadMethod (NGINX_RELOAD_METHOD) default auto.
	ReloadMethod ReloadMethod
	// Timeout bounds each nginx command (NGINX_COMMAND_TIMEOUT), default 2m.
	Timeout time.Duration
	// Now is the clock certificate expiry is judged by, default time.Now.
	Now func() time.Time
	// Logger gets a component=nginxconf field.
	Logger zerolog.Logger
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.ConfPath = cmp.Or(c.ConfPath, DefaultConfPath)
	c.Binary = cmp.Or(c.Binary, DefaultBinary)
	c.Upstream = cmp.Or(c.Upstream, DefaultUpstream)
	c.HTTPSPort = cmp.Or(c.HTTPSPort, DefaultHTTPSPort)
	c.HTTPPort = cmp.Or(c.HTTPPort, DefaultHTTPPort)
	c.CertMode = cmp.Or(c.CertMode, CertModeAuto)
	c.AutoVariableAbove = cmp.Or(c.AutoVariableAbove, DefaultAutoVariableAbove)
	c.CertCacheMax = cmp.Or(c.CertCacheMax, DefaultCertCacheMax)
	c.CertRecheck = cmp.Or(c.CertRecheck, DefaultCertRecheck)
	c.DefaultCert = cmp.Or(c.DefaultCert, DefaultCert)
	c.DefaultKey = cmp.Or(c.DefaultKey, DefaultKey)
	c.ACMEWebroot = cmp.Or(c.ACMEWebroot, DefaultACMEWebroot)
	c.LetsEncryptDir = cmp.Or(c.LetsEncryptDir, DefaultLetsEncryptDir)
	c.HashMode = cmp.Or(c.HashMode, HashAuto)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.ReloadMethod = cmp.Or(c.ReloadMethod, ReloadAuto)
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// validate names the first bad field of a defaulted Config. Values that end
// up in the generated file must be plain nginx words: a space, quote, brace,
// semicolon, '#' or '$' could change the file's structure.
// listen is what a listen directive names for port: the port, or the
// address and the port.
func (c Config) listen(port int) string {
	if c.ListenAddress == "" {
		return strconv.Itoa(port)
	}
	return net.JoinHostPort(c.ListenAddress, strconv.Itoa(port))
}

func (c Config) validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{
		{"ConfPath (NGINX_CONF_PATH)", c.ConfPath},
		{"DefaultCert (NGINX_DEFAULT_CERT)", c.DefaultCert},
		{"DefaultKey (NGINX_DEFAULT_KEY)", c.DefaultKey},
		{"ACMEWebroot (ACME_WEBROOT)", c.ACMEWebroot},
		{"LetsEncryptDir (LETSENCRYPT_DIR)", c.LetsEncryptDir},
	} {
		if !filepath.IsAbs(f.v) {
			errs = append(errs, fmt.Errorf("%s %q: want an absolute path", f.name, f.v))
		} else if !plainWord(f.v) {
			errs = append(errs, fmt.Errorf("%s %q: contains a character nginx would read as syntax", f.name, f.v))
		}
	}
	if err := checkUpstream(c.Upstream); err != nil {
		errs = append(errs, err)
	}
	if c.ACMEChallengeProxy != "" {
		if host, port, err := net.SplitHostPort(c.ACMEChallengeProxy); err != nil || host == "" || port == "" || !plainWord(c.ACMEChallengeProxy) {
			errs = append(errs, fmt.Errorf("ACMEChallengeProxy %q: want host:port", c.ACMEChallengeProxy))
		}
	}
	if c.ListenAddress != "" && net.ParseIP(c.ListenAddress) == nil {
		errs = append(errs, fmt.Errorf("ListenAddress (NGINX_LISTEN_ADDRESS) %q: want an IP address", c.ListenAddress))
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"HTTPSPort (NGINX_HTTPS_PORT)", c.HTTPSPort}, {"HTTPPort (NGINX_HTTP_PORT)", c.HTTPPort}} {
		if p.v < 1 || p.v > 65535 {
			errs = append(errs, fmt.Errorf("%s %d: want 1-65535", p.name, p.v))
		}
	}
	if c.HTTPPort == c.HTTPSPort {
		errs = append(errs, fmt.Errorf("HTTPPort and HTTPSPort are both %d", c.HTTPPort))
	}
	if _, err := ParseCertMode(string(c.CertMode)); err != nil {
		errs = append(errs, err)
	}
	if c.AutoVariableAbove < 0 {
		errs = append(errs, fmt.Errorf("AutoVariableAbove %d: want >= 0", c.AutoVariableAbove))
	}
	if c.CertCacheMax < 2 {
		errs = append(errs, fmt.Errorf("CertCacheMax (NGINX_CERT_CACHE_MAX) %d: want >= 2 (a certificate and its key)", c.CertCacheMax))
	}
	if c.CertRecheck < time.Second || c.CertRecheck%time.Second != 0 {
		errs = append(errs, fmt.Errorf("CertRecheck %s: want whole seconds, at least 1s", c.CertRecheck))
	}
	if _, err := ParseHashMode(string(c.HashMode)); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseReloadMethod(string(c.ReloadMethod)); err != nil {
		errs = append(errs, err)
	}
	if c.Timeout <= 0 {
		//lint:ignore ST1005 validate names the Config field first
		errs = append(errs, fmt.Errorf("Timeout %s: want > 0", c.Timeout))
	}
	return errors.Join(errs...)
}

// ParseUpstream checks an upstream address (NGINX_UPSTREAM): host:port,
// [v6]:port or unix:/path, with nothing nginx would read as syntax.
func ParseUpstream(u string) (string, error) {
	if err := checkUpstream(u); err != nil {
		return "", err
	}
	return u, nil
}

func checkUpstream(u string) error {
	//lint:ignore ST1005 validate names the Config field first
	bad := fmt.Errorf("Upstream (NGINX_UPSTREAM) %q: want host:port, [v6]:port or unix:/path", u)
	if !plainWord(u) {
		return bad
	}
	if path, ok := strings.CutPrefix(u, "unix:"); ok {
		if !filepath.IsAbs(path) {
			return bad
		}
		return nil
	}
	host, port, err := net.SplitHostPort(u)
	if err != nil || host == "" {
		return bad
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return bad
	}
	return nil
}

// plainWord reports whether s can be written into an nginx file as a bare
// word without changing the file's structure.
func plainWord(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f {
			return false
		}
		switch c {
		case '"', '\'', '{', '}', ';', '#', '$', '\\':
			return false
		}
	}
	return true
}
