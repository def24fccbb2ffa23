package main

import (
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// TestAgentRestartedDuringAStoreOutage: an agent that starts while
// PostgreSQL cannot be reached keeps running instead of exiting (a
// crash-looping agent takes its pod out of the Service). Restarted in a pod
// where an earlier run synced (its nginx serves that), it is ready at once
// and says so; in a new pod, with nothing served yet, it is not. Once the
// database answers, both sync and report plainly ready.
func TestAgentRestartedDuringAStoreOutage(t *testing.T) {
	t.Parallel()
	pg := testpeers.Postgres(t)
	// The agents reach PostgreSQL through a proxy the test can cut.
	u, err := url.Parse(pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testpeers.NewTCPProxy(t, u.Host)
	key := testpeers.StoreKey()
	common := map[string]string{EnvDBURL: proxy.Via(t, pg.URL), EnvStore: "postgres", EnvStoreKey: key,
		EnvCNAMETarget: "custom.platform-outage.test", EnvNginxUpstream: "127.0.0.1:9"}
	if code, out, errOut := runCLI(t, common, "migrate"); code != exitOK {
		t.Fatalf("migrate exit %d:\n%s%s", code, out, errOut)
	}
	type pod struct {
		ng  *testpeers.NginxPeer
		dir string // LETSENCRYPT_DIR: lives as long as the pod
	}
	newPod := func() pod {
		ng := testpeers.Nginx(t, testpeers.NginxOptions{})
		ng.StopOnCleanup(t)
		return pod{ng: ng, dir: t.TempDir()}
	}
	agent := func(name string, p pod) *process {
		env := map[string]string{}
		for k, v := range common {
			env[k] = v
		}
		for k, v := range map[string]string{EnvPodName: name, EnvHTTPAddr: "127.0.0.1:" + strconv.Itoa(testpeers.FreePort(t)),
			EnvLetsEncryptDir: p.dir, EnvNginxConfPath: filepath.Join(p.ng.ConfDir, "custom-domains.conf"), EnvNginxBinary: p.ng.Binary,
			EnvNginxMainConf: p.ng.MainConf, EnvNginxPrefix: p.ng.Prefix, EnvNginxHTTPPort: strconv.Itoa(p.ng.HTTPPort),
			EnvNginxHTTPSPort: strconv.Itoa(p.ng.HTTPSPort)} {
			env[k] = v
		}
		return startCertmgr(t, name, env, "agent")
	}
	readyz := func(p *process) (int, string) {
		resp, err := http.Get("http://" + p.http + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	synced := func(p *process) {
		t.Helper()
		testpeers.Until(t, 60*time.Second, p.name+" synced", func() bool {
			code, body := readyz(p)
			return code == http.StatusOK && body == "ok\n"
		})
	}

	// The agent's first run in its pod syncs; then the database goes away
	// and the agent's container restarts.
	old := newPod()
	first := agent("app-0", old)
	synced(first)
	first.stop()
	proxy.Cut()
	restarted, fresh := agent("app-0", old), agent("app-1", newPod())
	testpeers.Until(t, 20*time.Second, "both agents answer /readyz while the store is down", func() bool {
		a, _ := readyz(restarted)
		b, _ := readyz(fresh)
		return a != 0 && b != 0
	})
	time.Sleep(2 * time.Second) // a store attempt or two has failed by now
	if code, body := readyz(restarted); code != http.StatusOK || !strings.Contains(body, "serving the configuration applied before this start") ||
		!strings.Contains(body, "certificate store") {
		t.Errorf("restarted agent during the outage: %d %q; want 200 saying it serves the earlier configuration and waits for the store", code, body)
	}
	if code, body := readyz(fresh); code != http.StatusServiceUnavailable || !strings.Contains(body, "certificate store") {
		t.Errorf("new pod's agent during the outage: %d %q; want 503 waiting for the store", code, body)
	}

	proxy.Restore()
	synced(restarted)
	synced(fresh)
}
