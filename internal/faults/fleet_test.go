package faults

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// fleet turns the stack into fleet mode: the store in the stack's
// PostgreSQL, the worker's LETSENCRYPT_DIR a scratch directory of its own,
// and one agent (pod app-0) beside the stack's nginx, writing the directory
// that nginx reads.
func (s *stack) fleet() *workerProc {
	s.t.Helper()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	s.env["CERTMGR_STORE"] = "postgres"
	s.env["CERTMGR_STORE_KEY"] = base64.StdEncoding.EncodeToString(k)
	s.env["CERTMGR_AGENT_WAIT"] = "60"
	agentAddr := fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(s.t))
	agentEnv := map[string]string{"CERTMGR_HTTP_ADDR": agentAddr, "POD_NAME": "app-0", "LETSENCRYPT_DIR": s.store}
	s.env["LETSENCRYPT_DIR"] = s.t.TempDir() // the workers' mirror
	a := s.startProc("agent", agentEnv, "agent")
	testpeers.Until(s.t, 60*time.Second, "the agent's first sync", func() bool {
		resp, err := http.Get("http://" + agentAddr + "/readyz")
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
