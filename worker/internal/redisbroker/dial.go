package redisbroker

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Endpoint is where and how to reach one Redis database, parsed from a
// Celery broker or result backend URL. Its String never shows the password.
type Endpoint struct {
	Network  string      // tcp or unix
	Addr     string      // host:port, or the socket path
	Username string      // ACL user; empty: the default user
	Password string      // empty: no AUTH
	DB       int         // SELECTed after connecting
	TLS      *tls.Config // nil: plain TCP
	// Sentinels are the host:port of the sentinels of a sentinel:// URL;
	// the master is asked of them (master_name in the transport options).
	Sentinels []string
	display   string // the URL with the password replaced
}

// String is the URL with its password replaced by "***".
func (e *Endpoint) String() string { return e.display }

// URLError is a malformed broker or backend URL. It names the problem and
// shows the URL with its password replaced.
type URLError struct {
	URL     string // redacted
	Problem string
}

func (e *URLError) Error() string { return fmt.Sprintf("redis url %s: %s", e.URL, e.Problem) }

// Redact returns raw with the password of its userinfo replaced by "***",
// without relying on the URL being well-formed.
func Redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		if strings.Contains(raw, "@") {
			return "***@" + raw[strings.LastIndex(raw, "@")+1:]
		}
		return raw
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return raw
	}
	user := rest[:at]
	if name, _, hasPass := strings.Cut(user, ":"); hasPass {
		user = name + ":***"
	} else if user != "" {
		// redis://secret@host is a password-only URL to redis-py.
		user = "***"
	}
	return scheme + "://" + user + rest[at:]
}

// ParseURL parses a Celery Redis URL:
//
//	redis://[[user]:password@]host[:port][/db]
//	rediss://...?ssl_cert_reqs=required&ssl_ca_certs=ca.pem&ssl_certfile=c.pem&ssl_keyfile=k.pem&ssl_check_hostname=true
//	redis+socket:///path/redis.sock[?virtual_host=db]   (kombu)
//	socket:///path/redis.sock[?db=db]                   (Celery's result backend)
//	unix:///path/redis.sock[?db=db]                     (redis-py)
//
// ssl_cert_reqs takes both spellings (CERT_REQUIRED or required, CERT_OPTIONAL
// or optional, CERT_NONE or none); with CERT_NONE the server's certificate is
// not checked at all. Unlike redis-py, the host name is checked unless
// ssl_check_hostname=false. Unknown query parameters are errors.
func ParseURL(raw string) (*Endpoint, error) {
	if strings.HasPrefix(raw, "sentinel://") {
		return parseSentinelURL(raw)
	}
	shown := Redact(raw)
	fail := func(format string, args ...any) (*Endpoint, error) {
		return nil, &URLError{URL: shown, Problem: fmt.Sprintf(format, args...)}
	}
	// Parser errors quote the input, and a password with an unescaped / or
	// # moves the host: no problem below quotes the host, port or path.
	const encode = " (percent-encode / # ? @ in the user name and password)"
	u, err := url.Parse(raw)
	if err != nil {
		return fail("not a valid URL" + encode)
	}
	e := &Endpoint{display: shown}
	if u.User != nil {
		if p, ok := u.User.Password(); ok {
			e.Username, e.Password = u.User.Username(), p
		} else {
			e.Password = u.User.Username() // redis://password@host, as redis-py reads it
		}
	}
	q := u.Query()
	dbParam := ""
	switch u.Scheme {
	case "redis", "rediss":
		e.Network = "tcp"
		if u.Host == "" {
			return fail("no host" + encode)
		}
		host, port := u.Host, "6379"
		if strings.Contains(strings.TrimPrefix(u.Host, "["), ":") || strings.HasPrefix(u.Host, "[") {
			h, p, err := net.SplitHostPort(u.Host)
			if err != nil {
				return fail("the host is not host or host:port" + encode)
			}
			host, port = strings.Trim(h, "[]"), p
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fail("the port is not a number from 1 to 65535" + encode)
		}
		if host == "" {
			return fail("no host")
		}
		e.Addr = net.JoinHostPort(host, port)
		if p := strings.Trim(u.Path, "/"); p != "" {
			dbParam = p
		}
		if v := q.Get("db"); v != "" && dbParam == "" {
			dbParam = v
		}
		q.Del("db")
	case "redis+socket", "socket", "unix":
		e.Network = "unix"
		if u.Host != "" {
			return fail("a socket URL has no host: write %s:///path/to/redis.sock", u.Scheme)
		}
		if u.Path == "" {
			return fail("no socket path")
		}
		e.Addr = u.Path
		for _, k := range []string{"virtual_host", "db"} {
			if v := q.Get(k); v != "" {
				dbParam = v
			}
			q.Del(k)
		}
	case "":
		return fail("no scheme: want redis://, rediss://, redis+socket:// or unix://")
	default:
		if strings.ContainsAny(u.Scheme, ":@/") {
			return fail("not a valid URL" + encode)
		}
		return fail("scheme %q: want redis, rediss, redis+socket, socket or unix", u.Scheme)
	}
	if dbParam != "" {
		n, err := strconv.Atoi(dbParam)
		if err != nil || n < 0 {
			return fail("the database is not a number" + encode)
		}
		e.DB = n
	}
	tlsQuery, err := takeTLSParams(q)
	if err != nil {
		return fail("%v", err)
	}
	for k := range q {
		return fail("query parameter %q is not supported", k)
	}
	if u.Scheme == "rediss" {
		if e.TLS, err = tlsQuery.config(u.Hostname()); err != nil {
			return fail("%v", err)
		}
	} else if tlsQuery.any {
		return fail("ssl_* parameters need the rediss:// scheme")
	}
	return e, nil
}

// tlsParams are Celery's ssl_* query parameters.
type tlsParams struct {
	any                                bool
	certReqs, ca, cert, key, checkHost string
}

func takeTLSParams(q url.Values) (tlsParams, error) {
	var p tlsParams
	for k, dst := range map[string]*string{
		"ssl_cert_reqs": &p.certReqs, "ssl_ca_certs": &p.ca, "ssl_certfile": &p.cert,
		"ssl_keyfile": &p.key, "ssl_check_hostname": &p.checkHost,
	} {
		if vs, ok := q[k]; ok {
			p.any = true
			*dst = vs[len(vs)-1]
			q.Del(k)
		}
	}
	return p, nil
}

func (p tlsParams) config(host string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	verify := true
	switch strings.ToUpper(strings.TrimPrefix(strings.ToUpper(p.certReqs), "CERT_")) {
	case "", "REQUIRED", "OPTIONAL":
	case "NONE":
		verify = false
	default:
		return nil, fmt.Errorf("ssl_cert_reqs %q: want CERT_REQUIRED, CERT_OPTIONAL or CERT_NONE (or required, optional, none)", p.certReqs)
	}
	checkHost := true
	switch strings.ToLower(p.checkHost) {
	case "", "true", "1", "yes":
	case "false", "0", "no":
		checkHost = false
	default:
		return nil, fmt.Errorf("ssl_check_hostname %q: want true or false", p.checkHost)
	}
	if p.ca != "" {
		pem, err := os.ReadFile(p.ca)
		if err != nil {
			return nil, fmt.Errorf("ssl_ca_certs: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ssl_ca_certs %s: no PEM certificate in it", p.ca)
		}
		cfg.RootCAs = pool
	}
	if (p.cert == "") != (p.key == "") {
		return nil, errors.New("ssl_certfile and ssl_keyfile go together")
	}
	if p.cert != "" {
		pair, err := tls.LoadX509KeyPair(p.cert, p.key)
		if err != nil {
			return nil, fmt.Errorf("ssl_certfile/ssl_keyfile: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	switch {
	case !verify:
		cfg.InsecureSkipVerify = true
	case !checkHost:
		// Check the chain but not the name, as redis-py does by default.
		cfg.InsecureSkipVerify = true
		roots := cfg.RootCAs
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("redis server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		}
	}
	return cfg, nil
}

// dialer connects to an Endpoint with the given timeouts.
type dialer struct {
	ep             *Endpoint
	dialTimeout    time.Duration
	commandTimeout time.Duration
	// resolve, when set, finds the address to dial (Sentinel); it overrides ep.Addr.
	resolve func(ctx context.Context) (string, error)
	// mustBeMaster checks ROLE after connecting: during a failover a
	// sentinel may still name a server that is now a replica.
	mustBeMaster bool
}

// dialNet opens the transport (TCP, TLS or a Unix socket), without the Redis
// handshake.
func (d *dialer) dialNet(ctx context.Context) (net.Conn, error) {
	addr := d.ep.Addr
	if d.resolve != nil {
		a, err := d.resolve(ctx)
		if err != nil {
			return nil, err
		}
		addr = a
	}
	nd := &net.Dialer{Timeout: d.dialTimeout, KeepAlive: time.Minute}
	if d.ep.TLS != nil {
		td := &tls.Dialer{NetDialer: nd, Config: d.ep.TLS}
		c, err := td.DialContext(ctx, d.ep.Network, addr)
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", d.ep, err)
		}
		return c, nil
	}
	c, err := nd.DialContext(ctx, d.ep.Network, addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", d.ep, err)
	}
	return c, nil
}

// dial returns a redigo connection, authenticated and on its database.
func (d *dialer) dial(ctx context.Context) (redis.Conn, error) {
	nc, err := d.dialNet(ctx)
	if err != nil {
		return nil, err
	}
	c := redis.NewConn(nc, d.commandTimeout, d.commandTimeout)
	if err := d.handshake(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (d *dialer) handshake(c redis.Conn) error {
	if d.ep.Password != "" {
		args := []any{d.ep.Password}
		if d.ep.Username != "" {
			args = []any{d.ep.Username, d.ep.Password}
		}
		if _, err := c.Do("AUTH", args...); err != nil {
			return fmt.Errorf("authenticate to %s: %w", d.ep, err)
		}
	}
	if d.ep.DB != 0 {
		if _, err := c.Do("SELECT", d.ep.DB); err != nil {
			return fmt.Errorf("select database %d on %s: %w", d.ep.DB, d.ep, err)
		}
	}
	if d.mustBeMaster {
		role, err := redis.Values(c.Do("ROLE"))
		if err != nil || len(role) == 0 {
			return fmt.Errorf("ask the role of the master of %s: %w", d.ep, err)
		}
		if r, _ := redis.String(role[0], nil); r != "master" {
			return fmt.Errorf("the server sentinel named is a %s, not the master (failover in progress)", r)
		}
	}
	return nil
}

// pool is a redigo pool over the dialer.
func (d *dialer) pool(maxIdle int) *redis.Pool {
	return &redis.Pool{
		MaxIdle:     maxIdle,
		IdleTimeout: 4 * time.Minute,
		DialContext: d.dial,
		TestOnBorrow: func(c redis.Conn, idle time.Time) error {
			if time.Since(idle) < time.Minute {
				return nil
			}
			_, err := c.Do("PING")
			return err
		},
	}
}

// rawConn is a connection for commands whose reply must not be read into
// memory: a blocking peek at a list whose next element may be any size.
type rawConn struct {
	nc net.Conn
	r  *bufio.Reader
}

func (d *dialer) dialRaw(ctx context.Context) (*rawConn, error) {
	nc, err := d.dialNet(ctx)
	if err != nil {
		return nil, err
	}
	// The handshake's replies are read in full before we take over the
	// socket, so redigo's reader holds nothing of what follows.
	c := redis.NewConn(nc, d.commandTimeout, d.commandTimeout)
	if err := d.handshake(c); err != nil {
		nc.Close()
		return nil, err
	}
	return &rawConn{nc: nc, r: bufio.NewReaderSize(nc, 4096)}, nil
}

// do sends a command and reads its reply, keeping at most the reply's first
// line: a bulk string or array of bulk strings is skipped, not stored. It
// reports whether the reply was non-nil.
func (c *rawConn) do(deadline time.Time, args ...string) (bool, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if err := c.nc.SetDeadline(deadline); err != nil {
		return false, err
	}
	if _, err := c.nc.Write([]byte(b.String())); err != nil {
		return false, err
	}
	return c.skipReply()
}

func (c *rawConn) skipReply() (bool, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	if len(line) < 3 {
		return false, fmt.Errorf("malformed reply %q", line)
	}
	body := string(line[1 : len(line)-2])
	switch line[0] {
	case '+', ':':
		return true, nil
	case '-':
		return false, redis.Error(body)
	case '$':
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil {
			return false, fmt.Errorf("malformed reply %q", line)
		}
		if n < 0 {
			return false, nil
		}
		_, err = c.r.Discard(int(n) + 2)
		return true, err
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return false, fmt.Errorf("malformed reply %q", line)
		}
		for range max(n, 0) {
			if _, err := c.skipReply(); err != nil {
				return false, err
			}
		}
		return n >= 0, nil
	}
	return false, fmt.Errorf("malformed reply %q", line)
}

func (c *rawConn) Close() error { return c.nc.Close() }

// newDialer parses a broker or backend URL and applies the connection
// options of the transport options.
func newDialer(rawURL string, o Options, dialTimeout, cmdTimeout time.Duration) (*dialer, error) {
	ep, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	d := &dialer{ep: ep, dialTimeout: dialTimeout, commandTimeout: cmdTimeout}
	if len(ep.Sentinels) > 0 {
		if o.MasterName == "" {
			return nil, &URLError{URL: ep.String(), Problem: "a sentinel:// URL needs master_name in the transport options"}
		}
		d.resolve = sentinelResolver(ep, o, dialTimeout)
		d.mustBeMaster = true
	} else if o.MasterName != "" {
		return nil, &URLError{URL: ep.String(), Problem: "master_name is for sentinel:// URLs only"}
	}
	return d, nil
}

// parseSentinelURL parses kombu's and Celery's Sentinel form,
// sentinel://[[user]:password@]host[:port][/db];sentinel://host2[:port]...:
// the database and the Redis password come from the first URL (as kombu
// takes them); every URL names one sentinel (default port 26379).
func parseSentinelURL(raw string) (*Endpoint, error) {
	parts := strings.Split(raw, ";")
	shown := make([]string, len(parts))
	for i, p := range parts {
		shown[i] = Redact(strings.TrimSpace(p))
	}
	display := strings.Join(shown, ";")
	e := &Endpoint{Network: "tcp", display: display}
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !strings.HasPrefix(p, "sentinel://") {
			return nil, &URLError{URL: display, Problem: fmt.Sprintf("part %d is not a sentinel:// URL", i+1)}
		}
		one, err := ParseURL("redis://" + strings.TrimPrefix(p, "sentinel://"))
		if err != nil {
			var ue *URLError
			if errors.As(err, &ue) {
				return nil, &URLError{URL: display, Problem: fmt.Sprintf("sentinel %d: %s", i+1, ue.Problem)}
			}
			return nil, err
		}
		host, port, _ := net.SplitHostPort(one.Addr)
		if u, err := url.Parse("redis://" + strings.TrimPrefix(p, "sentinel://")); err == nil && u.Port() == "" {
			port = "26379" // the sentinels' default, not Redis's
		}
		e.Sentinels = append(e.Sentinels, net.JoinHostPort(host, port))
		if len(e.Sentinels) == 1 {
			e.DB, e.Username, e.Password = one.DB, one.Username, one.Password
		}
	}
	if len(e.Sentinels) == 0 {
		return nil, &URLError{URL: display, Problem: "no sentinel"}
	}
	return e, nil
}

// sentinelResolver asks the sentinels, in turn, where master is.
func sentinelResolver(ep *Endpoint, o Options, timeout time.Duration) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var errs []error
		for _, s := range ep.Sentinels {
			addr, err := askSentinel(ctx, s, o, timeout)
			if err == nil {
				return addr, nil
			}
			errs = append(errs, fmt.Errorf("sentinel %s: %w", s, err))
		}
		return "", fmt.Errorf("no sentinel of %s names master %q: %w", ep, o.MasterName, errors.Join(errs...))
	}
}

func askSentinel(ctx context.Context, addr string, o Options, timeout time.Duration) (string, error) {
	nd := &net.Dialer{Timeout: timeout}
	nc, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	c := redis.NewConn(nc, timeout, timeout)
	defer c.Close()
	if o.SentinelPassword != "" {
		args := []any{o.SentinelPassword}
		if o.SentinelUsername != "" {
			args = []any{o.SentinelUsername, o.SentinelPassword}
		}
		if _, err := c.Do("AUTH", args...); err != nil {
			return "", fmt.Errorf("authenticate: %w", err)
		}
	}
	hp, err := redis.Strings(c.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", o.MasterName))
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("master %q unknown", o.MasterName)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// TLSFromQuery takes Celery's ssl_* parameters out of q and builds the TLS
// configuration they describe for host (also used for amqps:// URLs). present
// reports whether any was given.
func TLSFromQuery(q url.Values, host string) (cfg *tls.Config, present bool, err error) {
	p, _ := takeTLSParams(q)
	cfg, err = p.config(host)
	return cfg, p.any, err
}
