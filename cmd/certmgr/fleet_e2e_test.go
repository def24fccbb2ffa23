package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/tasks"
)

// process is one certmgr command run in-process until the test ends (or
// stop).
type process struct {
	name string
	logs *testpeers.LogBuffer
	http string
	stop func() // stops it as SIGTERM would and checks it exited cleanly; once
}

func startCertmgr(t *testing.T, name string, env map[string]string, args ...string) *process {
	t.Helper()
	p := &process{name: name, logs: &testpeers.LogBuffer{}, http: env[EnvHTTPAddr]}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, io.Discard, p.logs, func(k string) string { return env[k] }) }()
	p.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("%s exit %d:\n%s", name, code, p.logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30s", name)
		}
	})
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, tailString(p.logs.String(), 6000))
		}
	})
	return p
}

func tailString(s string, n int) string { return s[max(0, len(s)-n):] }

func (p *process) waitHTTP(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get("http://" + p.http + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s not OK after %s (%v):\n%s", p.name, path, timeout, err, tailString(p.logs.String(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sniSerial is the serial of the certificate nginx presents for sni and the
// status of GET / there.
func sniSerial(port int, sni string) (string, int, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		&tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return "", 0, err
	}
	defer conn.Close()
	serial := hex.EncodeToString(conn.ConnectionState().PeerCertificates[0].SerialNumber.Bytes())
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
	b, _ := io.ReadAll(conn)
	status := 0
	if f := strings.Fields(string(b)); len(f) > 1 {
		status, _ = strconv.Atoi(f[1])
	}
	return serial, status, nil
}

// Fleet mode end to end: one PostgreSQL, two workers, three agents each with
// its own nginx and certificate directory, tasks sent by Python Celery.
func TestFleetEndToEnd(t *testing.T) {
	t.Parallel()
	rd := testpeers.Redis(t)
	pg := testpeers.Postgres(t)
	dns := testpeers.ChallTestSrv(t)
	var nginxes []*testpeers.NginxPeer
	for range 3 {
		ng := testpeers.Nginx(t, testpeers.NginxOptions{})
		ng.StopOnCleanup(t)
		nginxes = append(nginxes, ng)
	}
	// The CA validates HTTP-01 on the first pod's nginx, which proxies the
	// challenge to its agent, which reads it from the store.
	pb := testpeers.Pebble(t, testpeers.PebbleOptions{HTTPPort: nginxes[0].HTTPPort, DNS: dns})
	celery := testpeers.Celery(t, rd.URL)
	target := "custom.platform-fleet.test"
	dns.AddA(t, target, "127.0.0.1")
	common := map[string]string{
		EnvBrokerURL: rd.URL, EnvDBURL: pg.URL, EnvCNAMETarget: target, EnvDNSServers: dns.DNSAddr,
		EnvACMEDirectoryURL: pb.DirectoryURL, EnvACMECABundle: pb.CABundle, EnvACMEProfile: "classic",
		EnvStore: "postgres", EnvStoreKey: testpeers.StoreKey(), EnvAgentWait: "20", EnvNginxUpstream: "127.0.0.1:9",
		EnvConcurrency: "2",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range common {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	if code, out, errOut := runCLI(t, with(), "migrate"); code != exitOK {
		t.Fatalf("migrate exit %d:\n%s%s", code, out, errOut)
	}
	var agents []*process
	for i, ng := range nginxes {
		addr := fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t))
		agents = append(agents, startCertmgr(t, fmt.Sprintf("agent-%d", i), with(
			EnvPodName, fmt.Sprintf("app-%d", i), EnvHTTPAddr, addr, EnvLetsEncryptDir, t.TempDir(),
			EnvNginxConfPath, filepath.Join(ng.ConfDir, "custom-domains.conf"), EnvNginxBinary, ng.Binary,
			EnvNginxMainConf, ng.MainConf, EnvNginxPrefix, ng.Prefix,
			EnvNginxHTTPPort, strconv.Itoa(ng.HTTPPort), EnvNginxHTTPSPort, strconv.Itoa(ng.HTTPSPort)), "agent"))
	}
	for _, a := range agents {
		a.waitHTTP(t, "/readyz", 60*time.Second)
	}
	// Workers: no nginx, no webroot, a scratch directory each.
	for i := range 2 {
		w := startCertmgr(t, fmt.Sprintf("worker-%d", i), with(EnvHTTPAddr, fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t)),
			EnvLetsEncryptDir, t.TempDir(), EnvNginxBinary, "/nonexistent/nginx"), "worker")
		w.waitHTTP(t, "/readyz", 60*time.Second)
	}

	issue := func(id int64) (tasks.IssueResult, error) {
		tid := celery.Send(t, testpeers.SendOptions{Task: tasks.IssueTask, Args: []any{id}})
		raw, cerr := celery.Get(t, tid, 120*time.Second)
		if cerr != nil {
			return tasks.IssueResult{}, cerr
		}
		var res tasks.IssueResult
		if err := json.Unmarshal(raw, &res); err != nil {
			t.Fatalf("result %s: %v", raw, err)
		}
		return res, nil
	}
	checkPods := func(what string, pods []podreload.PodResult) {
		t.Helper()
		if len(pods) != 3 {
			t.Fatalf("%s: reloaded lists %d pods, want 3: %+v", what, len(pods), pods)
		}
		for i, p := range pods {
			if p.Pod != fmt.Sprintf("app-%d", i) || p.Outcome != podreload.OutcomeReloaded {
				t.Errorf("%s: pod %d = %+v", what, i, p)
			}
		}
	}

	d := fmt.Sprintf("fleet-%d.example.com", time.Now().UnixNano())
	dns.SetCNAME(t, d, target)
	id := pg.InsertDomain(t, d)
	res, err := issue(id)
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if !res.Issued || res.Status != "ssl_issued" {
		t.Fatalf("issue result %+v", res)
	}
	checkPods("issue", res.Reloaded)
	// The result promised it: every nginx serves the certificate now, the
	// same one.
	var serial string
	for i, ng := range nginxes {
		got, status, err := sniSerial(ng.HTTPSPort, d)
		if err != nil || status == 421 {
			t.Fatalf("nginx %d for %s: serial %s status %d %v", i, d, got, status, err)
		}
		if serial == "" {
			serial = got
		} else if got != serial {
			t.Fatalf("nginx %d serves %s, nginx 0 serves %s", i, got, serial)
		}
	}

	// Two workers racing on one domain: one order.
	d2 := fmt.Sprintf("race-%d.example.com", time.Now().UnixNano())
	dns.SetCNAME(t, d2, target)
	id2 := pg.InsertDomain(t, d2)
	var wg sync.WaitGroup
	results := make([]tasks.IssueResult, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], errs[i] = issue(id2) }()
	}
	wg.Wait()
	issued := 0
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("racing issue %d: %v", i, errs[i])
		}
		if results[i].Issued {
			issued++
		}
	}
	var versions int
	if err := pg.Conn(t).QueryRow(ctxT(t), `SELECT count(*) FROM certmgr_lineage_version WHERE lineage = $1`, d2).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if issued != 1 || versions != 1 {
		t.Fatalf("two racing issues: %d ordered, %d versions stored; want one", issued, versions)
	}

	// Remove: Django deletes the row, then sends the task; every nginx
	// answers 421.
	pg.Exec(t, `DELETE FROM tenant_customdomain WHERE id = $1`, id)
	tid := celery.Send(t, testpeers.SendOptions{Task: tasks.RemoveTask, Args: []any{d}})
	raw, cerr := celery.Get(t, tid, 60*time.Second)
	if cerr != nil {
		t.Fatalf("remove: %v", cerr)
	}
	var rr tasks.RemoveResult
	if err := json.Unmarshal(raw, &rr); err != nil || !rr.Removed {
		t.Fatalf("remove result %s %v", raw, err)
	}
	checkPods("remove", rr.Reloaded)
	for i, ng := range nginxes {
		if _, status, err := sniSerial(ng.HTTPSPort, d); err != nil || status != 421 {
			t.Errorf("nginx %d after remove: status %d %v, want 421", i, status, err)
		}
	}

	// The operators' commands on the postgres store.
	code, out, errOut := runCLI(t, with(EnvLetsEncryptDir, t.TempDir()), "check")
	if code != exitOK || !strings.Contains(out, "certificate-store") || strings.Contains(out, "nginx") {
		t.Errorf("check exit %d (a fleet worker checks the store, not nginx):\n%s%s", code, out, errOut)
	}
	// The removed domain's certificate (not purged) has no row any more:
	// both commands say so and exit 1, as an operator should look at it.
	code, out, errOut = runCLI(t, with(), "certificates")
	if code != exitFailed || !strings.Contains(out, d2) || !strings.Contains(errOut, "no custom domain row: "+d) {
		t.Errorf("certificates exit %d:\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, with(EnvLetsEncryptDir, t.TempDir()), "renew", "--dry-run")
	if code != exitFailed || !strings.Contains(out, d2+": kept") || !strings.Contains(out, d+": no row") {
		t.Errorf("renew --dry-run exit %d:\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, with(EnvLetsEncryptDir, t.TempDir()), "issue", "--domain", d2)
	if code != exitOK || !strings.Contains(out, "existing certificate kept") {
		t.Errorf("issue exit %d:\n%s%s", code, out, errOut)
	}
	// A forced reissue from an operator's shell (a fresh scratch directory):
	// version 2 goes into the store and every nginx serves it, the output
	// listing the three pods.
	code, out, errOut = runCLI(t, with(EnvLetsEncryptDir, t.TempDir()), "issue", "--domain", d2, "--force", "--json")
	var forced struct {
		Result tasks.IssueResult `json:"result"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &forced) != nil || !forced.Result.Issued {
		t.Fatalf("issue --force exit %d:\n%s%s", code, out, errOut)
	}
	checkPods("issue --force", forced.Result.Reloaded)
	var current int
	var newSerial string
	if err := pg.Conn(t).QueryRow(ctxT(t), `SELECT l.current_version, v.serial FROM certmgr_lineage l
		JOIN certmgr_lineage_version v ON v.lineage = l.name AND v.version = l.current_version WHERE l.name = $1`, d2).Scan(&current, &newSerial); err != nil || current != 2 {
		t.Fatalf("store after issue --force: version %d, %v", current, err)
	}
	for i, ng := range nginxes {
		if got, _, err := sniSerial(ng.HTTPSPort, d2); err != nil || got != newSerial {
			t.Errorf("nginx %d serves %s for %s after the reissue (%v), want version 2's %s", i, got, d2, err, newSerial)
		}
	}
	code, out, errOut = runCLI(t, with(EnvLetsEncryptDir, t.TempDir()), "verify-dns", "--domain", d2)
	if code != exitOK || !strings.Contains(out, "DNS verified") {
		t.Errorf("verify-dns exit %d:\n%s%s", code, out, errOut)
	}

	// A renewal that is actually due: the CA's renewal window for version 2
	// (served by nginx 0) has begun. `certmgr renew` renews it into the
	// store as version 3 and every agent serves the new serial; the removed
	// domain's lineage (no row) is left alone and makes the exit 1.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(nginxes[0].HTTPSPort)),
		&tls.Config{ServerName: d2, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	v2 := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	setARIWindow(t, pb, v2, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	code, out, errOut = runCLI(t, with(EnvLetsEncryptDir, t.TempDir()), "renew", "--json")
	var renewed struct {
		Result tasks.RenewResult `json:"result"`
	}
	if code != exitFailed || json.Unmarshal([]byte(out), &renewed) != nil || len(renewed.Result.Renewed) != 1 || renewed.Result.Renewed[0] != d2 {
		t.Fatalf("renew with %s due: exit %d, want 1 (the removed domain) with %s renewed:\n%s%s", d2, code, d2, out, errOut)
	}
	checkPods("renew", renewed.Result.Reloaded)
	var renewedSerial string
	if err := pg.Conn(t).QueryRow(ctxT(t), `SELECT l.current_version, v.serial FROM certmgr_lineage l
		JOIN certmgr_lineage_version v ON v.lineage = l.name AND v.version = l.current_version WHERE l.name = $1`, d2).Scan(&current, &renewedSerial); err != nil || current != 3 || renewedSerial == newSerial {
		t.Fatalf("store after renew: version %d serial %s (version 2's %s), %v; want version 3, a new serial", current, renewedSerial, newSerial, err)
	}
	for i, ng := range nginxes {
		if got, _, err := sniSerial(ng.HTTPSPort, d2); err != nil || got != renewedSerial {
			t.Errorf("nginx %d serves %s for %s after renew (%v), want version 3's %s", i, got, d2, err, renewedSerial)
		}
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
