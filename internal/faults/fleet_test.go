package faults

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/tasks"
)

// fleet turns the stack into fleet mode: the store in the stack's
// PostgreSQL, the worker's LETSENCRYPT_DIR a scratch directory of its own,
// and one agent (pod app-0) beside the stack's nginx, writing the directory
// that nginx reads. It returns the agent and its environment (to restart it).
func (s *stack) fleet() (*workerProc, map[string]string) {
	s.t.Helper()
	s.env["CERTMGR_STORE"] = "postgres"
	s.env["CERTMGR_STORE_KEY"] = testpeers.StoreKey()
	s.env["CERTMGR_AGENT_WAIT"] = "60"
	agentAddr := fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(s.t))
	agentEnv := map[string]string{"CERTMGR_HTTP_ADDR": agentAddr, "POD_NAME": "app-0", "LETSENCRYPT_DIR": s.store}
	s.env["LETSENCRYPT_DIR"] = s.t.TempDir() // the workers' mirror
	return s.startAgent("agent", agentEnv), agentEnv
}

// startAgent runs `certmgr agent` with env and waits for its first sync.
func (s *stack) startAgent(name string, env map[string]string) *workerProc {
	s.t.Helper()
	a := s.startProc(name, env, "agent")
	testpeers.Until(s.t, 60*time.Second, name+"'s first sync", func() bool {
		resp, err := http.Get("http://" + env["CERTMGR_HTTP_ADDR"] + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return a
}

// startProc runs a certmgr subcommand with extra environment, as startWorker
// runs the worker.
func (s *stack) startProc(name string, extra map[string]string, args ...string) *workerProc {
	s.t.Helper()
	logPath := filepath.Join(s.ctl, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(certmgrBin, args...)
	cmd.Env = s.environ()
	for k, v := range extra {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		s.t.Fatalf("start certmgr %v: %v", args, err)
	}
	p := &workerProc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.done) }()
	s.t.Cleanup(func() {
		p.stop()
		if s.t.Failed() {
			b, _ := os.ReadFile(logPath)
			s.t.Logf("%s log (tail):\n%s", name, tailString(string(b), 6000))
		}
	})
	return p
}

// Fleet mode: a worker killed after it stored the certificate in
// PostgreSQL, while it waits for the agents (the agent's nginx -t is held).
// The redelivered task finds the stored certificate: no second order, one
// version in the store, and the agent's nginx serves it.
func TestFleetWorkerKilledAfterTheStoreWrite(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	s.fleet()
	d := s.domain("fleet")
	id := s.pg.InsertDomain(t, d)
	s.flag("slow-test", true) // the agent cannot apply: the worker waits for it

	w1 := s.startWorker("w1")
	task := s.celery.Send(t, sendIssue(id))
	conn := s.pg.Conn(t)
	testpeers.Until(t, 90*time.Second, "the certificate stored and published", func() bool {
		var versions, served int
		err := conn.QueryRow(ctxT(t), `SELECT (SELECT count(*) FROM certmgr_lineage_version WHERE lineage = $1),
			(SELECT count(*) FROM certmgr_served WHERE domain = $1)`, d).Scan(&versions, &served)
		return err == nil && versions == 1 && served == 1
	})
	w1.kill9()
	if _, done := s.meta(task); done {
		t.Fatal("the task has a result although its worker was killed while waiting for the agents")
	}
	s.flag("slow-test", false)

	w2 := s.startWorker("w2")
	res := s.getIssue(task, 90*time.Second)
	if res.Status != "ssl_issued" || res.Issued {
		t.Errorf("result after restart = %+v, want ssl_issued with the stored certificate (issued=false)", res)
	}
	var versions int
	if err := conn.QueryRow(ctxT(t), `SELECT count(*) FROM certmgr_lineage_version WHERE lineage = $1`, d).Scan(&versions); err != nil || versions != 1 {
		t.Errorf("%d versions of %s in the store (%v), want 1: no second order", versions, d, err)
	}
	if n := succeeded(w1.logText(), task) + succeeded(w2.logText(), task); n != 1 {
		t.Errorf("task succeeded %d times in the workers' logs, want 1", n)
	}
	if leaf := s.served(d); leaf == nil {
		t.Fatal("not served")
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Fleet mode: the agent of pod app-0 SIGKILLed, two domains issued and one
// removed while it is down (the CA's HTTP-01 validation reaches pod app-1,
// as a Service routes to a ready pod: app-0's nginx proxies the challenge to
// its dead agent and answers 502), then restarted with the same pod name
// and directory. While it is dead its heartbeat row stays: the tasks report
// app-0 timed_out (never reloaded) as long as the row is fresh, and once it
// is stale the pod is no longer listed. Restarted, the agent converges: its
// nginx serves exactly the new set (the removed domain answers 421) and its
// heartbeat row shows the store's version.
func TestFleetAgentKilledConvergesOnRestart(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{gateHTTP01: true})
	// Heartbeats every second, counted for 15 s (defaults 5 s and 30 s):
	// the dead pod goes stale within this test's time.
	s.env["CERTMGR_AGENT_HEARTBEAT"], s.env["CERTMGR_AGENT_ALIVE"] = "1", "15"
	a, agentEnv := s.fleet()
	ng1 := testpeers.Nginx(t, testpeers.NginxOptions{})
	ng1.StopOnCleanup(t)
	s.startAgent("agent-app-1", map[string]string{
		"CERTMGR_HTTP_ADDR": fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t)), "POD_NAME": "app-1", "LETSENCRYPT_DIR": t.TempDir(),
		"NGINX_CONF_PATH": filepath.Join(ng1.ConfDir, "custom-domains.conf"), "NGINX_BINARY": ng1.Binary,
		"NGINX_MAIN_CONF": ng1.MainConf, "NGINX_PREFIX": ng1.Prefix,
		"NGINX_HTTP_PORT": strconv.Itoa(ng1.HTTPPort), "NGINX_HTTPS_PORT": strconv.Itoa(ng1.HTTPSPort),
	})
	s.env["CERTMGR_AGENT_WAIT"] = "3" // a dead agent costs each task this long
	s.startWorker("w")
	conn := s.pg.Conn(t)

	gone := s.domain("gone")
	goneID := s.pg.InsertDomain(t, gone)
	if res := s.getIssue(s.celery.Send(t, sendIssue(goneID)), 90*time.Second); res.Status != "ssl_issued" {
		t.Fatalf("issue %s = %+v", gone, res)
	}
	s.served(gone)

	a.kill9()
	s.http01.route(fmt.Sprintf("127.0.0.1:%d", ng1.HTTPPort))
	b, c := s.domain("bee"), s.domain("sea")
	ids := []string{s.celery.Send(t, sendIssue(s.pg.InsertDomain(t, b))), s.celery.Send(t, sendIssue(s.pg.InsertDomain(t, c)))}
	for _, id := range ids {
		raw, cerr := s.celery.Get(t, id, 90*time.Second)
		if cerr != nil {
			t.Fatalf("issue %s: %v", id, cerr)
		}
		var res tasks.IssueResult
		if err := json.Unmarshal(raw, &res); err != nil || res.Status != "ssl_issued" || !res.Issued {
			t.Fatalf("issue result %s (%v)", raw, err)
		}
		// The dead pod's row is at most 15 s old: listed, and not served.
		if got := outcomes(res.Reloaded); got != "app-0=timed_out app-1=reloaded" {
			t.Errorf("issue while app-0's agent is dead: pods %s, want app-0=timed_out app-1=reloaded (%+v)", got, res.Reloaded)
		}
	}

	// Once the killed agent's heartbeat is stale its pod is gone from the
	// result: the task does not wait for it and says so in the log.
	testpeers.Until(t, 60*time.Second, "the dead agent's heartbeat stale", func() bool {
		var stale bool
		err := conn.QueryRow(ctxT(t), `SELECT last_seen < now() - interval '16 seconds' FROM certmgr_agent WHERE pod = 'app-0'`).Scan(&stale)
		return err == nil && stale
	})
	s.pg.Exec(t, `DELETE FROM tenant_customdomain WHERE id = $1`, goneID)
	raw, cerr := s.celery.Get(t, s.celery.Send(t, testpeers.SendOptions{Task: tasks.RemoveTask, Args: []any{gone}}), 60*time.Second)
	if cerr != nil {
		t.Fatalf("remove: %v", cerr)
	}
	var rr tasks.RemoveResult
	if err := json.Unmarshal(raw, &rr); err != nil || !rr.Removed || outcomes(rr.Reloaded) != "app-1=reloaded" {
		t.Fatalf("remove with app-0's heartbeat stale = %s (%v), want removed and only app-1 listed, reloaded", raw, err)
	}

	s.startAgent("agent2", agentEnv)
	roots := s.roots()
	testpeers.Until(t, 60*time.Second, "the restarted agent's nginx serves exactly the new set", func() bool {
		for _, d := range []string{b, c} {
			if leaf, err := s.handshake(d, roots); err != nil || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != d {
				return false
			}
		}
		return s.httpsStatus(gone) == http.StatusMisdirectedRequest
	})
	testpeers.Until(t, 30*time.Second, "app-0's heartbeat at the store's version", func() bool {
		var applied, version int64
		err := conn.QueryRow(ctxT(t), `SELECT (SELECT applied_version FROM certmgr_agent WHERE pod = 'app-0'),
			(SELECT version FROM certmgr_store_version)`).Scan(&applied, &version)
		return err == nil && applied == version
	})
}

// outcomes is "pod=outcome ..." of a task result's reloaded list.
func outcomes(ps []podreload.PodResult) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Pod+"="+string(p.Outcome))
	}
	return strings.Join(out, " ")
}

// httpsStatus is the status nginx answers GET / with for SNI and Host d
// (0 when the connection fails).
func (s *stack) httpsStatus(d string) int {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp",
		fmt.Sprintf("127.0.0.1:%d", s.nginx.HTTPSPort), &tls.Config{ServerName: d, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return 0
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", d)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
