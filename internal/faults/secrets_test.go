package faults

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// The password of every hostile URL below; neither half may appear anywhere.
const (
	pwHead = "S3cr3tHead"
	pwTail = "Zq7pWtail"
)

func leaks(s string) bool { return strings.Contains(s, pwHead) || strings.Contains(s, pwTail) }

// blackHoleDNS is a DNS server that never answers: a UDP socket that reads
// every query and drops it. It returns host:port.
func blackHoleDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

// procEnv is a minimal environment of the binary: no database or broker yet.
func procEnv(t *testing.T, extra map[string]string) []string {
	statSourcesOnce.Do(func() { statSources(moduleRoot) })
	ng := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	env := map[string]string{
		"PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME"),
		"CUSTOM_DOMAIN_CNAME_TARGET": "custom.platform-secrets.test", "CUSTOM_DOMAIN_DNS_SERVERS": "127.0.0.1:9",
		"LETSENCRYPT_DIR": t.TempDir(), "ACME_WEBROOT": ng.Webroot,
		"NGINX_CONF_PATH": filepath.Join(ng.ConfDir, "custom-domains.conf"), "NGINX_BINARY": ng.Binary,
		"NGINX_MAIN_CONF": ng.MainConf, "NGINX_PREFIX": ng.Prefix, "CERTMGR_LOG_FORMAT": "json",
		"CERTMGR_LOGLEVEL": "debug", "CERTMGR_SHUTDOWN_GRACE": "5",
	}
	for k, v := range extra {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// Hostile connection URLs (a wrong scheme, an unescaped # or / in the
// password, a password in the query) make certmgr exit with a message naming
// the variable, and no output of the real binary holds the password.
func TestBadURLsNeverPrintThePassword(t *testing.T) {
	t.Parallel()
	skipShort(t)
	pw := pwHead + "#" + pwTail
	good := map[string]string{"CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
		"MIDSUMMER_DB_URL": "postgres://django@127.0.0.1:5432/app"}
	cases := []struct {
		desc, name, value string
	}{
		{"broker, wrong scheme", "CELERY_BROKER_URL", "http://celery:" + pwHead + pwTail + "@127.0.0.1:6379/0"},
		{"broker, unescaped #", "CELERY_BROKER_URL", "redis://:" + pw + "@127.0.0.1:6379/0"},
		{"broker, unescaped /", "CELERY_BROKER_URL", "redis://u:" + pwHead + "/" + pwTail + "@127.0.0.1:6379/0"},
		{"result backend, unescaped #", "CELERY_RESULT_BACKEND", "redis://:" + pw + "@127.0.0.1:6379/1"},
		{"database, wrong scheme", "MIDSUMMER_DB_URL", "mysql://django:" + pwHead + pwTail + "@127.0.0.1/app"},
		{"database, unescaped #", "MIDSUMMER_DB_URL", "postgres://django:" + pw + "@127.0.0.1:5432/app"},
		{"database, unescaped ? and /", "MIDSUMMER_DB_URL", "postgres://django:" + pwHead + "?/" + pwTail + "@127.0.0.1:5432/app"},
		{"database, password in the query", "MIDSUMMER_DB_URL", "postgres://django@127.0.0.1:5432/app?password=" + pwHead + pwTail + "&sslmode=bogus"},
	}
	for _, tc := range cases {
		for _, cmd := range [][]string{{"worker"}, {"renew"}, {"regen-nginx", "--no-reload"}} {
			extra := map[string]string{}
			for k, v := range good {
				extra[k] = v
			}
			extra[tc.name] = tc.value
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			c := exec.CommandContext(ctx, certmgrBin, cmd...)
			c.Env = procEnv(t, extra)
			out, err := c.CombinedOutput()
			cancel()
			if err == nil {
				t.Errorf("%s: certmgr %v succeeded:\n%s", tc.desc, cmd, out)
				continue
			}
			if leaks(string(out)) {
				t.Errorf("%s: certmgr %v printed the password:\n%s", tc.desc, cmd, out)
			}
			if !strings.Contains(string(out), tc.name) && !strings.Contains(string(out), "database") {
				t.Errorf("%s: certmgr %v does not say what is wrong:\n%s", tc.desc, cmd, out)
			}
		}
	}
}

// A running worker whose broker refuses its password, and one whose database
// URL carries a password but does not answer: its logs, /readyz bodies and the
// task results stored in Redis never hold the password, and /readyz names
// only the failing component.
func TestRunningWorkerNeverPrintsThePassword(t *testing.T) {
	t.Parallel()
	skipShort(t)
	rd := testpeers.Redis(t)
	dead := fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t))

	t.Run("broker refuses the password", func(t *testing.T) {
		t.Parallel()
		pg := testpeers.Postgres(t)
		broker := strings.Replace(rd.URL, "redis://", "redis://:"+pwHead+pwTail+"@", 1)
		w := startProc(t, map[string]string{"CELERY_BROKER_URL": broker, "MIDSUMMER_DB_URL": pg.URL})
		body := w.waitReadyz(t, http.StatusServiceUnavailable, "broker")
		componentsOnly(t, body, "broker: not answering")
		w.stop(t)
		if out := w.output(); leaks(out) || leaks(body) {
			t.Errorf("password printed:\n/readyz: %s\n%s", body, out)
		}
	})

	t.Run("database does not answer", func(t *testing.T) {
		t.Parallel()
		db := "postgres://django:" + pwHead + pwTail + "@" + dead + "/app?connect_timeout=1"
		w := startProc(t, map[string]string{"CELERY_BROKER_URL": rd.URL, "MIDSUMMER_DB_URL": db})
		body := w.waitReadyz(t, http.StatusServiceUnavailable, "database")
		componentsOnly(t, body, "database: not answering")
		cel := testpeers.Celery(t, rd.URL)
		id := cel.Send(t, testpeers.SendOptions{Task: "tenant.tasks.issue_custom_domain_task", Args: []any{"shop.example.com"}})
		key := "celery-task-meta-" + id
		var meta string
		testpeers.Until(t, 60*time.Second, "the task's result in Redis", func() bool {
			v, err := redis.String(doRedis(rd, "GET", key))
			meta = v
			return err == nil && v != ""
		})
		w.stop(t)
		if leaks(meta) || !strings.Contains(meta, "TemporaryFailure") {
			t.Errorf("task result %s; want a TemporaryFailure without the password", meta)
		}
		if out := w.output(); leaks(out) {
			t.Errorf("password in the worker's output:\n%s", out)
		}
	})
}

// /readyz fails as soon as draining starts: after SIGTERM, while a task is
// still in flight (its DNS check waits on a server that never answers), the
// probe answers 503 "draining", so no new work is routed to the pod.
func TestReadyzFailsWhileDraining(t *testing.T) {
	t.Parallel()
	skipShort(t)
	rd := testpeers.Redis(t)
	pg := testpeers.Postgres(t)
	pg.InsertDomain(t, "slow-dns.example.com")
	w := startProc(t, map[string]string{"CELERY_BROKER_URL": rd.URL, "MIDSUMMER_DB_URL": pg.URL,
		"CUSTOM_DOMAIN_DNS_SERVERS": blackHoleDNS(t), "CERTMGR_SHUTDOWN_GRACE": "30"})
	// Not ready for other reasons (no ACME directory here), but not draining.
	if body := w.waitReadyz(t, 0, ""); strings.Contains(body, "draining") {
		t.Fatalf("/readyz says draining before SIGTERM: %q", body)
	}
	cel := testpeers.Celery(t, rd.URL)
	cel.Send(t, testpeers.SendOptions{Task: "tenant.tasks.issue_custom_domain_task", Args: []any{"slow-dns.example.com"}})
	testpeers.Until(t, 30*time.Second, "the task to be in flight", func() bool {
		n, _ := redis.Int(doRedis(rd, "HLEN", "unacked"))
		return n == 1
	})
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	body := w.waitReadyz(t, http.StatusServiceUnavailable, "draining")
	if !w.alive() {
		t.Fatal("the worker exited before its in-flight task ended; the test proves nothing")
	}
	if body != "draining\n" {
		t.Errorf("/readyz while draining = %q", body)
	}
}

func doRedis(rd *testpeers.RedisPeer, cmd string, args ...any) (any, error) {
	c := rd.Pool().Get()
	defer c.Close()
	return c.Do(cmd, args...)
}

// proc is one `certmgr worker` of the real binary with its output captured.
type proc struct {
	cmd  *exec.Cmd
	http string
	out  *os.File
	done chan struct{}
}

func startProc(t *testing.T, extra map[string]string) *proc {
	t.Helper()
	p := &proc{http: fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t)), done: make(chan struct{})}
	extra["CERTMGR_HTTP_ADDR"] = p.http
	f, err := os.Create(filepath.Join(t.TempDir(), "worker.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.out = f
	p.cmd = exec.Command(certmgrBin, "worker")
	p.cmd.Env = procEnv(t, extra)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("worker output (tail):\n%s", tailString(p.output(), 6000))
		}
		f.Close()
	})
	return p
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for the exit (SIGKILL after 40 s).
func (p *proc) stop(t *testing.T) {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("worker did not stop within 40 s of SIGTERM")
	}
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.out.Name())
	return string(b)
}

// componentsOnly: every line of a /readyz body names a component and its
// state, from a fixed vocabulary (no user, host, database or error text);
// want is one of them.
func componentsOnly(t *testing.T, body, want string) {
	t.Helper()
	line := regexp.MustCompile(`^((broker|database): not answering|pre-flight: [a-z-]+ failing|draining)$`)
	found := false
	for l := range strings.SplitSeq(strings.TrimSpace(body), "\n") {
		if !line.MatchString(l) {
			t.Errorf("/readyz line %q is not a component's name and state", l)
		}
		found = found || l == want
	}
	if !found {
		t.Errorf("/readyz body %q lacks %q", body, want)
	}
}

// waitReadyz polls /readyz until it answers code (0: any) with a body
// containing want, and returns that body.
func (p *proc) waitReadyz(t *testing.T, code int, want string) string {
	t.Helper()
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + p.http + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
			if (code == 0 || resp.StatusCode == code) && strings.Contains(string(b), want) {
				return string(b)
			}
		}
		if !p.alive() {
			t.Fatalf("worker exited; /readyz last answered %q", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("/readyz never answered %d %q; last %q", code, want, last)
	return ""
}
