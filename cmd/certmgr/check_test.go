package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// checkEnv is a working configuration on the test's own peers.
func checkEnv(t *testing.T) (map[string]string, *testpeers.PostgresPeer, *testpeers.PebblePeer) {
	t.Helper()
	rd := testpeers.Redis(t)
	pg := testpeers.Postgres(t)
	ng := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	pb := testpeers.Pebble(t, testpeers.PebbleOptions{HTTPPort: ng.HTTPPort})
	return map[string]string{
		EnvBrokerURL: rd.URL, EnvDBURL: pg.URL, EnvCNAMETarget: "custom.platform-check.test", EnvDNSServers: "127.0.0.1:53",
		EnvACMEDirectoryURL: pb.DirectoryURL, EnvACMECABundle: pb.CABundle,
		EnvACMEWebroot: ng.Webroot, EnvLetsEncryptDir: t.TempDir(),
		EnvNginxConfPath: filepath.Join(ng.ConfDir, "custom-domains.conf"), EnvNginxBinary: ng.Binary,
		EnvNginxMainConf: ng.MainConf, EnvNginxPrefix: ng.Prefix,
		EnvNginxHTTPPort: strconv.Itoa(ng.HTTPPort), EnvNginxHTTPSPort: strconv.Itoa(ng.HTTPSPort),
	}, pg, pb
}

// checkLine finds the line of one check in `certmgr check` output.
func checkLine(out string, name checkName) string {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[1] == string(name) {
			return l
		}
	}
	return ""
}

func TestCheckPassesOnAWorkingSetup(t *testing.T) {
	t.Parallel()
	env, _, _ := checkEnv(t)
	code, out, errOut := runCLI(t, env, "check")
	if code != exitOK {
		t.Fatalf("check exit %d:\n%s\n%s", code, out, errOut)
	}
	for _, n := range []checkName{checkDatabase, checkBroker, checkCA, checkNginx, checkCertDir, checkWebroot, checkNginxConfD} {
		if l := checkLine(out, n); !strings.HasPrefix(l, "ok ") {
			t.Errorf("check %s: %q\n%s", n, l, out)
		}
	}
}

// Each dependency broken the way an installation gets it wrong: each check
// fails with its reason, the others still run, exit 1.
func TestCheckNamesEachFailure(t *testing.T) {
	t.Parallel()
	base, pg, _ := checkEnv(t)
	u, _ := url.Parse(pg.URL)
	withQuery := func(f func(u *url.URL)) string {
		c := *u
		f(&c)
		return c.String()
	}
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc  string
		set   map[string]string
		check checkName
		want  string
	}{
		{"unknown database user", map[string]string{EnvDBURL: withQuery(func(u *url.URL) { u.User = url.User("no_such_user") })}, checkDatabase, "no_such_user"},
		{"missing database", map[string]string{EnvDBURL: withQuery(func(u *url.URL) { u.Path = "/no_such_db" })}, checkDatabase, "no_such_db"},
		{"table not there", map[string]string{EnvDBURL: withQuery(func(u *url.URL) {
			q := u.Query()
			q.Set("search_path", "no_such_schema")
			u.RawQuery = q.Encode()
		})}, checkDatabase, "tenant_customdomain"},
		{"broker down", map[string]string{EnvBrokerURL: fmt.Sprintf("redis://127.0.0.1:%d/0", testpeers.FreePort(t))}, checkBroker, "broker"},
		{"CA not trusted without the bundle", map[string]string{EnvACMECABundle: ""}, checkCA, "certificate"},
		{"CA down", map[string]string{EnvACMEDirectoryURL: fmt.Sprintf("https://127.0.0.1:%d/dir", testpeers.FreePort(t))}, checkCA, "refused"},
		{"nginx main config missing", map[string]string{EnvNginxMainConf: "/nonexistent/nginx.conf"}, checkNginx, "NGINX_MAIN_CONF"},
		{"certificate dir missing", map[string]string{EnvLetsEncryptDir: "/nonexistent/letsencrypt"}, checkCertDir, "LETSENCRYPT_DIR"},
		{"webroot not a directory", map[string]string{EnvACMEWebroot: notDir}, checkWebroot, "ACME_WEBROOT"},
		{"nginx conf dir missing", map[string]string{EnvNginxConfPath: "/nonexistent/conf.d/custom-domains.conf"}, checkNginxConfD, "NGINX_CONF_PATH"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.set {
				env[k] = v
			}
			code, out, errOut := runCLI(t, env, "check")
			if code != exitFailed {
				t.Fatalf("check exit %d, want 1:\n%s\n%s", code, out, errOut)
			}
			l := checkLine(out, tc.check)
			if !strings.HasPrefix(l, "FAIL") || !strings.Contains(l, tc.want) {
				t.Errorf("check %s: %q, want FAIL naming %q\n%s", tc.check, l, tc.want, out)
			}
			if n := strings.Count(out, "FAIL "); n != 1 {
				t.Errorf("%d checks failed, want only %s:\n%s", n, tc.check, out)
			}
			if !strings.Contains(errOut, string(tc.check)) {
				t.Errorf("stderr does not name the failed check: %s", errOut)
			}
		})
	}
}

// The worker runs the pre-flight at start: a failure is logged at error
// level and /readyz fails naming it, until it is fixed.
func TestWorkerPreflightKeepsReadyzFailingUntilFixed(t *testing.T) {
	t.Parallel()
	env, _, _ := checkEnv(t)
	missing := filepath.Join(t.TempDir(), "letsencrypt")
	env[EnvLetsEncryptDir] = missing
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t))
	env[EnvHTTPAddr] = httpAddr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var logs testpeers.LogBuffer
	go func() {
		done <- run(ctx, []string{"--log-format", "json", "worker"}, io.Discard, &logs, func(k string) string { return env[k] })
	}()
	defer func() { cancel(); <-done }()
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + httpAddr + pathReadyz)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		testpeers.Eventually(t, 30*time.Second, what, func() error {
			if cond() {
				return nil
			}
			return fmt.Errorf("not yet; logs:\n%s", logs.String())
		})
	}
	waitFor("/readyz failing on the certificate dir", func() bool {
		code, body := readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, string(checkCertDir))
	})
	if l := logs.String(); !strings.Contains(l, `"level":"error"`) || !strings.Contains(l, `"check":"certificate-dir"`) {
		t.Fatalf("no error-level line for the failed check:\n%s", l)
	}
	if err := os.Mkdir(missing, 0o700); err != nil {
		t.Fatal(err)
	}
	waitFor("/readyz passing once the directory exists", func() bool { code, _ := readyz(); return code == http.StatusOK })
	if !strings.Contains(logs.String(), "pre-flight check passes again") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
}
