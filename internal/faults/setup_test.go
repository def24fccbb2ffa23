package faults

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/jackc/pgx/v5"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// certmgrBin is the certmgr binary built once for the suite from the module
// at moduleRoot.
var (
	certmgrBin      string
	moduleRoot      string
	statSourcesOnce sync.Once
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// parallel is the suite's default -parallel: its cases mostly wait (for
// visibility timeouts, retries, outages, nginx reloads), so four stacks at
// once keep two cores busy where GOMAXPROCS (2 here) would leave them idle.
const parallel = "4"

func runMain(m *testing.M) int {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", parallel)
	}
	if testing.Short() {
		return m.Run() // every case skips itself; no binary needed
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(gomod)) == 0 || string(bytes.TrimSpace(gomod)) == os.DevNull {
		fmt.Fprintf(os.Stderr, "faults: cannot find the module root: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "certmgr-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root := filepath.Dir(string(bytes.TrimSpace(gomod)))
	moduleRoot = root
	certmgrBin = filepath.Join(dir, "certmgr")
	build := exec.Command("go", "build", "-o", certmgrBin, "./cmd/certmgr")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "faults: go build ./cmd/certmgr: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// statSources stats every Go file and go.mod of the module, so that go test's
// cache (which records the files a test opens or stats once m.Run started)
// reruns the suite when the source of the binary it builds changes.
func statSources(root string) {
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			_, _ = os.Stat(path)
		}
		return nil
	})
}

// nginxWrapper is NGINX_BINARY for the suite: the real nginx, except that
// while the flag file fail-test exists `nginx -t` fails as on a broken
// configuration, while slow-test exists `nginx -t` waits, and while
// slow-reload exists `nginx -s reload` waits (after touching reload-waiting).
// A command whose caller was killed meanwhile is not run, as it would not be
// without the wrapper.
const nginxWrapper = `#!/bin/sh
d=$(dirname "$0")
parent=$PPID
for a in "$@"; do
  case "$a" in
    -t)
      if [ -e "$d/fail-test" ]; then
        echo "nginx: [emerg] unexpected \"}\" in $d/injected.conf:1 (injected by the fault suite)" >&2
        echo "nginx: configuration file test failed" >&2
        exit 1
      fi
      if [ -e "$d/slow-test" ]; then
        i=0
        while [ -e "$d/slow-test" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
        kill -0 "$parent" 2>/dev/null || exit 1
      fi ;;
    reload)
      if [ -e "$d/slow-reload" ]; then
        touch "$d/reload-waiting"
        i=0
        while [ -e "$d/slow-reload" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
        kill -0 "$parent" 2>/dev/null || exit 1
      fi ;;
  esac
done
exec %s "$@"
`

// stackOptions shape one test's certmgr and peers.
type stackOptions struct {
	redisURL   string                                                // broker; default a private redis-server
	pg         *testpeers.PostgresPeer                               // default a schema of the shared PostgreSQL
	pebble     testpeers.PebbleOptions                               // HTTPPort and DNS are filled in
	acmeURL    func(*testpeers.PebblePeer) (dirURL, caBundle string) // default Pebble's own
	gateHTTP01 bool                                                  // put a gate (stack.http01) between Pebble and nginx's port 8080
}

// stack is one test's certmgr: its peers, the environment of the binary and
// the NGINX_BINARY wrapper's control directory.
type stack struct {
	t        *testing.T
	suffix   string
	target   string
	redis    *redis.Pool
	redisURL string
	pg       *testpeers.PostgresPeer
	nginx    *testpeers.NginxPeer
	dns      *testpeers.ChallTestSrvPeer
	pebble   *testpeers.PebblePeer
	celery   *testpeers.CeleryClient
	store    string // LETSENCRYPT_DIR
	ctl      string // wrapper's directory: flag files live here
	http01   *gate
	env      map[string]string
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	skipShort(t)
	statSourcesOnce.Do(func() { statSources(moduleRoot) })
	s := &stack{t: t, suffix: testpeers.RandomHex(4)}
	s.target = "custom.platform-" + s.suffix + ".test"
	if o.redisURL == "" {
		// A redis-server of the test's own rather than a leased database
		// of the shared one: the suite runs nine stacks at once, and the
		// shared server has fifteen databases for every package's tests.
		o.redisURL = testpeers.StartRedisServer(t).URL
	}
	s.redisURL = o.redisURL
	s.redis = redisPool(t, o.redisURL)
	s.pg = o.pg
	if s.pg == nil {
		s.pg = testpeers.Postgres(t)
	}
	s.nginx = testpeers.Nginx(t, testpeers.NginxOptions{})
	s.dns = testpeers.ChallTestSrv(t)
	s.dns.AddA(t, s.target, "127.0.0.1")
	o.pebble.DNS = s.dns
	o.pebble.HTTPPort = s.nginx.HTTPPort
	if o.gateHTTP01 {
		s.http01 = startGate(t, fmt.Sprintf("127.0.0.1:%d", s.nginx.HTTPPort))
		o.pebble.HTTPPort = s.http01.port
	}
	s.pebble = testpeers.Pebble(t, o.pebble)
	dirURL, bundle := s.pebble.DirectoryURL, s.pebble.CABundle
	if o.acmeURL != nil {
		dirURL, bundle = o.acmeURL(s.pebble)
	}
	s.celery = testpeers.Celery(t, o.redisURL)
	s.store = t.TempDir()
	s.ctl = t.TempDir()
	wrapper := filepath.Join(s.ctl, "nginx")
	if err := os.WriteFile(wrapper, []byte(fmt.Sprintf(nginxWrapper, s.nginx.Binary)), 0o755); err != nil {
		t.Fatal(err)
	}
	s.env = map[string]string{
		"CELERY_BROKER_URL": o.redisURL, "MIDSUMMER_DB_URL": s.pg.URL,
		"CUSTOM_DOMAIN_CNAME_TARGET": s.target, "CUSTOM_DOMAIN_DNS_SERVERS": s.dns.DNSAddr,
		"ACME_DIRECTORY_URL": dirURL, "ACME_CA_BUNDLE": bundle, "ACME_PROFILE": "classic",
		"ACME_WEBROOT": s.nginx.Webroot, "LETSENCRYPT_DIR": s.store,
		"NGINX_CONF_PATH": s.confPath(), "NGINX_BINARY": wrapper,
		"NGINX_MAIN_CONF": s.nginx.MainConf, "NGINX_PREFIX": s.nginx.Prefix, "NGINX_UPSTREAM": "127.0.0.1:9",
		"NGINX_HTTP_PORT": strconv.Itoa(s.nginx.HTTPPort), "NGINX_HTTPS_PORT": strconv.Itoa(s.nginx.HTTPSPort),
		"CELERY_VISIBILITY_TIMEOUT": "2", "CERTMGR_CONCURRENCY": "2", "CERTMGR_LOGLEVEL": "debug",
		"CERTMGR_SHUTDOWN_GRACE": "2",
		// Retries of transient failures start at 1 s instead of 10 s: the
		// outages below last seconds, not the minutes production plans for.
		"CERTMGR_RETRY_BASE": "1",
		// The wrapper holds and fails `nginx -s reload` and `nginx -t`; a
		// SIGHUP to the master (NGINX_RELOAD_METHOD=auto's choice when the
		// pid file is readable) would bypass it.
		"NGINX_RELOAD_METHOD": "command",
	}
	// The HTTP-01 server block must be live before the first order, and
	// nginx done with that reload before a test compares what it serves.
	workers := s.nginx.WorkerPIDs(t)
	code, out := s.cli("regen-nginx")
	if code != 0 {
		t.Fatalf("certmgr regen-nginx exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "written") {
		s.nginx.WaitWorkersReplaced(t, workers)
	}
	return s
}

func redisPool(t *testing.T, rawURL string) *redis.Pool {
	p := &redis.Pool{MaxIdle: 4, Dial: func() (redis.Conn, error) {
		return redis.DialURL(rawURL, redis.DialConnectTimeout(2*time.Second), redis.DialReadTimeout(10*time.Second))
	}}
	t.Cleanup(func() { p.Close() })
	return p
}

func (s *stack) confPath() string { return filepath.Join(s.nginx.ConfDir, "custom-domains.conf") }

// domain makes a tenant name of this test, CNAMEd to the platform.
func (s *stack) domain(label string) string {
	d := label + "-" + s.suffix + ".example.com"
	s.dns.SetCNAME(s.t, d, s.target)
	return d
}

// flag creates or removes one of the wrapper's flag files.
func (s *stack) flag(name string, on bool) {
	p := filepath.Join(s.ctl, name)
	if on {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			s.t.Fatal(err)
		}
		return
	}
	_ = os.Remove(p)
}

func (s *stack) exists(name string) bool {
	_, err := os.Stat(filepath.Join(s.ctl, name))
	return err == nil
}

func (s *stack) environ() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range s.env {
		env = append(env, k+"="+v)
	}
	return env
}

// cli runs a certmgr command to its end; it returns the exit status and the
// combined output.
func (s *stack) cli(args ...string) (int, string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, certmgrBin, args...)
	cmd.Env = s.environ()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		s.t.Fatalf("run certmgr %v: %v", args, err)
	}
	return 0, string(out)
}

// workerProc is one `certmgr worker` process.
type workerProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startWorker runs `certmgr worker` as a child process, its log in a file.
// The test's end stops it with SIGTERM (SIGKILL after 10s).
func (s *stack) startWorker(name string) *workerProc {
	s.t.Helper()
	logPath := filepath.Join(s.ctl, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		s.t.Fatal(err)
	}
	env := s.env
	s.env = map[string]string{}
	for k, v := range env {
		s.env[k] = v
	}
	s.env["CERTMGR_HTTP_ADDR"] = fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(s.t))
	cmd := exec.Command(certmgrBin, "worker")
	cmd.Env = s.environ()
	s.env = env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		s.t.Fatalf("start certmgr worker: %v", err)
	}
	w := &workerProc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { w.err = cmd.Wait(); f.Close(); close(w.done) }()
	s.t.Cleanup(func() {
		w.stop()
		if s.t.Failed() {
			b, _ := os.ReadFile(logPath)
			s.t.Logf("%s log (tail):\n%s", name, tailString(string(b), 6000))
		}
	})
	return w
}

// kill9 kills the worker process at once and waits until it is gone.
func (w *workerProc) kill9() {
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

func (w *workerProc) stop() {
	select {
	case <-w.done:
		return
	default:
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		w.kill9()
	}
}

// alive tells whether the process is still running.
func (w *workerProc) alive() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

func (w *workerProc) logText() string {
	b, _ := os.ReadFile(w.log)
	return string(b)
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// do runs one Redis command on the broker database.
func (s *stack) do(cmd string, args ...any) (any, error) {
	c := s.redis.Get()
	defer c.Close()
	return c.Do(cmd, args...)
}

func (s *stack) llen(key string) int {
	n, _ := redis.Int(s.do("LLEN", key))
	return n
}

func (s *stack) hlen(key string) int {
	n, _ := redis.Int(s.do("HLEN", key))
	return n
}

// row is the status columns of a tenant_customdomain row.
type row struct {
	ID        int64
	Domain    string
	Status    string
	LastError string
	Expires   *time.Time
}

func (s *stack) row(domain string) row {
	s.t.Helper()
	rows := s.rows(`WHERE domain = $1`, domain)
	if len(rows) != 1 {
		s.t.Fatalf("%d rows for %q", len(rows), domain)
	}
	return rows[0]
}

func (s *stack) rows(where string, args ...any) []row {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := s.pg.Conn(s.t).Query(ctx, `SELECT id, domain, status, last_error, cert_expires_at FROM tenant_customdomain `+where+` ORDER BY id`, args...)
	if err != nil {
		s.t.Fatalf("select rows: %v", err)
	}
	out, err := pgx.CollectRows(rs, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.ID, &x.Domain, &x.Status, &x.LastError, &x.Expires)
	})
	if err != nil {
		s.t.Fatalf("read rows: %v", err)
	}
	return out
}

// archive lists the files of a lineage's archive directory, sorted.
func (s *stack) archive(name string) []string {
	entries, _ := os.ReadDir(filepath.Join(s.store, "archive", name))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// storeEntries lists every lineage name the store has (archive, live and
// renewal), for checking that nothing hostile reached the disk.
func (s *stack) storeEntries() []string {
	var out []string
	for _, sub := range []string{"archive", "live", "renewal"} {
		entries, _ := os.ReadDir(filepath.Join(s.store, sub))
		for _, e := range entries {
			out = append(out, sub+"/"+e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// oneLineage checks that exactly one certificate version exists for d.
func (s *stack) oneLineage(d string) {
	s.t.Helper()
	want := []string{"cert1.pem", "chain1.pem", "fullchain1.pem", "privkey1.pem"}
	if got := s.archive(d); strings.Join(got, ",") != strings.Join(want, ",") {
		s.t.Errorf("archive/%s = %v, want exactly one version %v", d, got, want)
	}
	entries, _ := os.ReadDir(filepath.Join(s.store, "archive"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), d+"-") {
			s.t.Errorf("a second lineage %s exists for %s", e.Name(), d)
		}
	}
}

// handshake connects to nginx's HTTPS port with SNI d and returns the leaf it
// serves, verified against Pebble's root.
func (s *stack) handshake(d string, roots *x509.CertPool) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp",
		fmt.Sprintf("127.0.0.1:%d", s.nginx.HTTPSPort), &tls.Config{ServerName: d, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func (s *stack) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	for rest := s.pebble.RootPEM(s.t); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			pool.AddCert(c)
		}
	}
	return pool
}

// served waits until nginx serves d a certificate that verifies and names d.
func (s *stack) served(d string) *x509.Certificate {
	s.t.Helper()
	roots := s.roots()
	var leaf *x509.Certificate
	var err error
	deadline := time.Now().Add(15 * time.Second)
	for {
		leaf, err = s.handshake(d, roots)
		if err == nil && len(leaf.DNSNames) == 1 && leaf.DNSNames[0] == d {
			return leaf
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("nginx does not serve a certificate for %s: %v", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// issueResult is the contract's result of the issue task.
type issueResult struct {
	Domain   string `json:"domain"`
	Status   string `json:"status"`
	NotAfter string `json:"not_after"`
	Issued   bool   `json:"issued"`
}

// getIssue reads an issue task's result with Python Celery and fails on a
// FAILURE.
func (s *stack) getIssue(id string, timeout time.Duration) issueResult {
	s.t.Helper()
	raw, cerr := s.celery.Get(s.t, id, timeout)
	if cerr != nil {
		s.t.Fatalf("task %s: %v", id, cerr)
	}
	var r issueResult
	if err := json.Unmarshal(raw, &r); err != nil {
		s.t.Fatalf("result %s: %v", raw, err)
	}
	return r
}

// resultMeta reads a task's stored result as the Redis backend keeps it.
type resultMeta struct {
	Status string          `json:"status"`
	Result json.RawMessage `json:"result"`
}

func (s *stack) meta(id string) (resultMeta, bool) {
	b, err := redis.Bytes(s.do("GET", "celery-task-meta-"+id))
	if err != nil {
		return resultMeta{}, false
	}
	var m resultMeta
	if json.Unmarshal(b, &m) != nil {
		return resultMeta{}, false
	}
	return m, true
}

// quiet checks that the broker holds nothing more for this test: no queued,
// unacknowledged or dead message.
func (s *stack) quiet() {
	s.t.Helper()
	for _, k := range []string{"certmgr", "unacked"} {
		n := s.llen(k)
		if k == "unacked" {
			n = s.hlen(k)
		}
		if n != 0 {
			s.t.Errorf("%s still holds %d message(s) after the tasks completed", k, n)
		}
	}
}

// succeeded counts the worker log lines saying task id succeeded.
func succeeded(logs, id string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, id) && strings.Contains(line, "task succeeded") {
			n++
		}
	}
	return n
}

// gate is an HTTP proxy between Pebble's HTTP-01 validation and nginx: while
// closed it holds every request, and says when the first one arrived.
type gate struct {
	port    int
	mu      sync.Mutex
	open    chan struct{}
	arrived chan struct{}
	once    sync.Once
	proxy   *httputil.ReverseProxy // under mu; see route
}

func startGate(t *testing.T, upstream string) *gate {
	g := &gate{port: testpeers.FreePort(t), open: make(chan struct{}), arrived: make(chan struct{})}
	close(g.open) // open until closed by the test
	g.route(upstream)
	srv := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", g.port), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		open, proxy := g.open, g.proxy
		g.mu.Unlock()
		select {
		case <-open:
		default:
			g.once.Do(func() { close(g.arrived) })
			select {
			case <-open:
			case <-r.Context().Done():
				return
			}
		}
		proxy.ServeHTTP(w, r)
	})}
	l, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return g
}

// route sends later requests to upstream, as a Service picks a ready pod.
func (g *gate) route(upstream string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.proxy = httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream})
}

// close makes the gate hold requests from now on.
func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = make(chan struct{})
}

// release lets held and later requests through.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

// sendIssue is the issue task for a row, as Django sends it.
func sendIssue(id int64) testpeers.SendOptions {
	return testpeers.SendOptions{Task: "tenant.tasks.issue_custom_domain_task", Args: []any{id}}
}

// sendRegen is the regeneration task Django sends.
func sendRegen() testpeers.SendOptions {
	return testpeers.SendOptions{Task: "tenant.tasks.regen_custom_domains_nginx_task"}
}

func errFmt(format string, args ...any) error { return fmt.Errorf(format, args...) }

// call is one task of a batch.
type call struct {
	Task   string         `json:"task"`
	Args   []any          `json:"args"`
	Kwargs map[string]any `json:"kwargs,omitempty"`
}

// outcome is what Python Celery read for one task of a batch.
type outcome struct {
	ID      string          `json:"id"`
	State   string          `json:"state"`
	ExcType string          `json:"exc_type"`
	Result  json.RawMessage `json:"result"`
}

// batch sends calls with Python Celery and reads their outcomes, all in one
// Python process (testdata/batch.py).
func (s *stack) batch(calls []call, timeout time.Duration) []outcome {
	s.t.Helper()
	in, err := json.Marshal(calls)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testpeers.Python, "testdata/batch.py", s.redisURL, strconv.Itoa(int(timeout.Seconds())))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("batch.py: %v\n%s", err, stderr.String())
	}
	var res []outcome
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(calls) {
		s.t.Fatalf("batch.py output %q: %v", out, err)
	}
	return res
}

// insertRow adds a row as a client bypassing Django's validation would.
func (s *stack) insertRow(domain, status string) int64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var id int64
	if err := s.pg.Conn(s.t).QueryRow(ctx, `INSERT INTO tenant_customdomain (domain, mode, tenant_id, status)
		VALUES ($1, 'tenant', 1, $2) RETURNING id`, domain, status).Scan(&id); err != nil {
		s.t.Fatalf("insert %q: %v", domain, err)
	}
	return id
}

// skipShort skips a fault case under -short (make test-short).
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("fault suite: long, real peers; skipped with -short")
	}
}
