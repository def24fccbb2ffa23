package main

import (
	"io"
	"net"
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

// TestAgentRestartedDuringAStoreOutage: an agent that starts while
// PostgreSQL cannot be reached keeps running instead of exiting (a
// crash-looping agent takes its pod out of the Service). Restarted in a pod
// whose nginx serves what an earlier run put live, it is ready at once and
// says so; in a new pod, with nothing served yet, it is not. Once the
// database answers, both sync and report plainly ready.
func TestAgentRestartedDuringAStoreOutage(t *testing.T) {
	t.Parallel()
	pg := testpeers.Postgres(t)
	u, err := url.Parse(pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	// The agents reach PostgreSQL through this port, closed for now.
	port := testpeers.FreePort(t)
	outage := *u
	outage.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	key := testpeers.StoreKey()
	common := map[string]string{EnvDBURL: outage.String(), EnvStore: "postgres", EnvStoreKey: key,
		EnvCNAMETarget: "custom.platform-outage.test", EnvNginxUpstream: "127.0.0.1:9"}
	if code, out, errOut := runCLI(t, map[string]string{EnvDBURL: pg.URL, EnvStore: "postgres", EnvStoreKey: key,
		EnvCNAMETarget: "custom.platform-outage.test"}, "migrate"); code != exitOK {
		t.Fatalf("migrate exit %d:\n%s%s", code, out, errOut)
	}
	agent := func(name string, resumed bool) *process {
		ng := testpeers.Nginx(t, testpeers.NginxOptions{})
		ng.StopOnCleanup(t)
		conf := filepath.Join(ng.ConfDir, "custom-domains.conf")
		if resumed {
			writeTestFile(t, conf, "# put live by the agent's earlier run\n")
		}
		env := map[string]string{}
		for k, v := range common {
			env[k] = v
		}
		for k, v := range map[string]string{EnvPodName: name, EnvHTTPAddr: "127.0.0.1:" + strconv.Itoa(testpeers.FreePort(t)),
			EnvLetsEncryptDir: t.TempDir(), EnvNginxConfPath: conf, EnvNginxBinary: ng.Binary, EnvNginxMainConf: ng.MainConf,
			EnvNginxPrefix: ng.Prefix, EnvNginxHTTPPort: strconv.Itoa(ng.HTTPPort), EnvNginxHTTPSPort: strconv.Itoa(ng.HTTPSPort)} {
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
	restarted, fresh := agent("restarted", true), agent("fresh", false)
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
		t.Errorf("fresh agent during the outage: %d %q; want 503 waiting for the store", code, body)
	}

	// The database answers again.
	ln, err := net.Listen("tcp", outage.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go forward(ln, u.Host)
	for _, p := range []*process{restarted, fresh} {
		testpeers.Until(t, 60*time.Second, p.name+" synced after the outage", func() bool {
			code, body := readyz(p)
			return code == http.StatusOK && body == "ok\n"
		})
	}
}

// forward copies every connection accepted on ln to and from addr.
func forward(ln net.Listener, addr string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer up.Close()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			_, _ = io.Copy(c, up)
		}()
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
