package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// The binary's own wiring, end to end: regen-nginx, the worker consuming a
// task from real Python Celery, /healthz, /readyz and /metrics moving, then
// the operators' commands on what it made.
func TestWorkerCommandEndToEnd(t *testing.T) {
	t.Parallel()
	rd := testpeers.Redis(t)
	pg := testpeers.Postgres(t)
	ng := testpeers.Nginx(t, testpeers.NginxOptions{})
	dns := testpeers.ChallTestSrv(t)
	pb := testpeers.Pebble(t, testpeers.PebbleOptions{HTTPPort: ng.HTTPPort, DNS: dns})
	celery := testpeers.Celery(t, rd.URL)
	target := "custom.platform-cmd.test"
	d := fmt.Sprintf("cmd-%d.example.com", time.Now().UnixNano())
	dns.AddA(t, target, "127.0.0.1")
	dns.SetCNAME(t, d, target)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t))
	env := map[string]string{
		EnvBrokerURL: rd.URL, EnvDBURL: pg.URL, EnvCNAMETarget: target, EnvDNSServers: dns.DNSAddr,
		EnvACMEDirectoryURL: pb.DirectoryURL, EnvACMECABundle: pb.CABundle, EnvACMEProfile: "classic",
		EnvACMEWebroot: ng.Webroot, EnvLetsEncryptDir: t.TempDir(),
		EnvNginxConfPath: filepath.Join(ng.ConfDir, "custom-domains.conf"), EnvNginxBinary: ng.Binary,
		EnvNginxMainConf: ng.MainConf, EnvNginxPrefix: ng.Prefix, EnvNginxUpstream: "127.0.0.1:9",
		EnvNginxHTTPPort: strconv.Itoa(ng.HTTPPort), EnvNginxHTTPSPort: strconv.Itoa(ng.HTTPSPort),
		EnvHTTPAddr: httpAddr, EnvConcurrency: "2",
	}

	if code, out, errOut := runCLI(t, env, "regen-nginx"); code != exitOK || !strings.Contains(out, "0 domain(s) served") {
		t.Fatalf("regen-nginx exit %d:\n%s\n%s", code, out, errOut)
	}
	id := pg.InsertDomain(t, d)

	ctx, cancel := context.WithCancel(context.Background())
	var logs testpeers.LogBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"worker"}, io.Discard, &logs, func(k string) string { return env[k] })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("worker exit %d after SIGTERM-like cancel:\n%s", code, logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("worker did not stop within 30s")
		}
	})
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for code, _ := get(pathHealthz); code != http.StatusOK; code, _ = get(pathHealthz) {
		if time.Now().After(deadline) {
			t.Fatalf("/healthz never answered:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := get(pathReadyz); code != http.StatusOK {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	_, before := get(pathMetrics)
	issueSuccess := `certmgr_tasks_total{outcome="success",task="tenant.tasks.issue_custom_domain_task"}`
	if metric(before, issueSuccess) != 0 {
		t.Fatalf("counter already moved before any task:\n%s", before)
	}

	tid := celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.issue_custom_domain_task", Args: []any{id}})
	raw, cerr := celery.Get(t, tid, 90*time.Second)
	if cerr != nil {
		t.Fatalf("issue task raised %v\n%s", cerr, logs.String())
	}
	if !strings.Contains(string(raw), `"issued": true`) && !strings.Contains(string(raw), `"issued":true`) {
		t.Fatalf("result %s", raw)
	}
	pong := celery.Send(t, testpeers.SendOptions{Task: "certmgr.ping"})
	if raw, cerr := celery.Get(t, pong, 30*time.Second); cerr != nil || string(raw) != `"pong"` {
		t.Fatalf("certmgr.ping = %s %v", raw, cerr)
	}
	_, after := get(pathMetrics)
	for series, want := range map[string]float64{
		issueSuccess: 1,
		`certmgr_tasks_total{outcome="success",task="certmgr.ping"}`: 1,
		"certmgr_certificates_issued_total":                          1,
		`certmgr_nginx_reloads_total{outcome="reloaded"}`:            1,
		// NGINX_CERT_MODE=auto (the default) on Debian's nginx, one domain.
		`certmgr_nginx_cert_mode{http2="listen",mode="per-server",rule="small-fleet"}`: 1,
	} {
		if got := metric(after, series); got != want {
			t.Errorf("%s = %v after the tasks, want %v", series, got, want)
		}
	}

	leafExpiry := regexp.MustCompile(`(?m)^certmgr_certificate_expiry_timestamp_seconds\{domain="` + regexp.QuoteMeta(d) + `"\} ([0-9.e+]+)$`)
	if m := leafExpiry.FindStringSubmatch(after); m == nil {
		t.Errorf("no expiry gauge for %s:\n%s", d, after)
	} else if v, _ := strconv.ParseFloat(m[1], 64); time.Unix(int64(v), 0).Before(time.Now().Add(80 * 24 * time.Hour)) {
		t.Errorf("expiry gauge %s is not the new certificate's notAfter (about 90 days ahead)", m[1])
	}

	// The operators' commands see what the worker made.
	code, out, errOut := runCLI(t, env, "certificates", "--json")
	if code != exitOK || !strings.Contains(out, `"name": "`+d+`"`) || !strings.Contains(out, `"valid": true`) {
		t.Fatalf("certificates --json exit %d:\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, env, "renew", "--dry-run")
	if code != exitOK || !strings.Contains(out, d+": kept") || !strings.Contains(out, "checked 1, renewed 0, failed 0") {
		t.Fatalf("renew --dry-run exit %d:\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, env, "issue", "--domain", strings.ToUpper(d)+".")
	if code != exitOK || !strings.Contains(out, d+": ssl_issued, existing certificate kept") {
		t.Fatalf("issue --domain exit %d:\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, env, "issue", "--domain", "x.platform-cmd.test")
	if code != exitUsage || !strings.Contains(errOut, "--domain") || !strings.Contains(errOut, "platform") {
		t.Fatalf("issue of a platform name: exit %d:\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, env, "verify-dns", "--domain", d, "--json")
	var v struct {
		Result struct {
			DNSOK  bool   `json:"dns_ok"`
			Status string `json:"status"`
		} `json:"result"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &v) != nil || !v.Result.DNSOK || v.Result.Status != "ssl_issued" {
		t.Fatalf("verify-dns --json exit %d: %s", code, out)
	}
}

// A database that does not answer makes /readyz fail and name it, while
// /healthz stays up.
func TestReadyzNamesDeadDatabase(t *testing.T) {
	t.Parallel()
	rd := testpeers.Redis(t)
	ng := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t))
	env := map[string]string{
		EnvBrokerURL: rd.URL, EnvDBURL: fmt.Sprintf("postgres://u@127.0.0.1:%d/x?connect_timeout=1", testpeers.FreePort(t)),
		EnvCNAMETarget: "custom.platform-ready.test", EnvDNSServers: "127.0.0.1:53",
		EnvLetsEncryptDir: t.TempDir(), EnvACMEWebroot: ng.Webroot,
		EnvNginxConfPath: filepath.Join(ng.ConfDir, "custom-domains.conf"), EnvNginxBinary: ng.Binary,
		EnvNginxMainConf: ng.MainConf, EnvNginxPrefix: ng.Prefix, EnvHTTPAddr: httpAddr,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var logs testpeers.LogBuffer
	go func() {
		done <- run(ctx, []string{"worker"}, io.Discard, &logs, func(k string) string { return env[k] })
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + pathReadyz)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "database") {
				t.Fatalf("/readyz = %d %s; want 503 naming the database", resp.StatusCode, b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker did not serve /readyz:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp, err := http.Get("http://" + httpAddr + pathHealthz); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz = %v %v", resp, err)
	}
}

// metric reads one sample from a Prometheus text exposition; 0 when absent.
func metric(exposition, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(exposition)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
