package faults

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// `nginx -t` fails on the new configuration (the NGINX_BINARY wrapper fails
// -t while a flag file exists). A live domain keeps answering TLS handshakes
// with its certificate throughout (a client loops handshakes during the
// fault: zero failures), the generated file is left as it was, the error is
// on the new domain's row and in the task's FAILURE. Once -t passes again the
// new domain is served.
func TestNginxTestFailureKeepsLiveDomains(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	live := s.domain("live")
	w := s.startWorker("w1")
	workers := s.nginx.WorkerPIDs(t)
	s.getIssue(s.celery.Send(t, sendIssue(s.pg.InsertDomain(t, live))), 90*time.Second)
	// Until the workers of the old configuration are gone, a handshake may
	// still reach one that does not know the domain yet.
	s.nginx.WaitWorkersReplaced(t, workers)
	liveLeaf := s.served(live)
	before, err := os.ReadFile(s.confPath())
	if err != nil {
		t.Fatal(err)
	}

	// A client loops handshakes with the live domain for the whole fault.
	roots := s.roots()
	var handshakes, failures atomic.Int32
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			leaf, err := s.handshake(live, roots)
			handshakes.Add(1)
			if err == nil && !leaf.Equal(liveLeaf) {
				err = errFmt("served another certificate: %v", leaf.DNSNames)
			}
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Errorf("%s: %w", time.Now().Format("15:04:05.000"), err))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	s.flag("fail-test", true)
	fresh := s.domain("fresh")
	task := s.celery.Send(t, sendIssue(s.pg.InsertDomain(t, fresh)))
	_, cerr := s.celery.Get(t, task, 90*time.Second)
	if cerr == nil || cerr.ExcType != "NginxConfigInvalid" {
		t.Fatalf("task outcome %v, want a FAILURE NginxConfigInvalid", cerr)
	}
	r := s.row(fresh)
	if r.LastError == "" || !strings.Contains(r.LastError, "web server configuration") {
		t.Errorf("row of the domain nginx -t refused = %+v; want the error in last_error", r)
	}
	after, _ := os.ReadFile(s.confPath())
	if !bytes.Equal(before, after) {
		t.Errorf("custom-domains.conf changed although nginx -t refused it")
	}
	// A regeneration during the fault is refused too, and the worker lives.
	if _, cerr := s.celery.Get(t, s.celery.Send(t, sendRegen()), 60*time.Second); cerr == nil {
		t.Errorf("regen task succeeded while nginx -t fails")
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || handshakes.Load() < 20 {
		errLog, _ := os.ReadFile(s.nginx.ErrorLog)
		for _, l := range strings.Split(string(errLog), "\n") {
			if strings.Contains(l, "signal") || strings.Contains(l, "reconfiguring") || strings.Contains(l, "start worker") || strings.Contains(l, "exit") {
				t.Log(l)
			}
		}
		t.Fatalf("%d of %d handshakes with the live domain failed during the fault: %v",
			failures.Load(), handshakes.Load(), firstErr.Load())
	}
	t.Logf("%d handshakes with the live domain during the fault, none failed", handshakes.Load())
	if !w.alive() {
		t.Fatal("the worker exited")
	}

	// The fault clears: issuing again serves the new domain, with the
	// certificate the first attempt stored (no second order).
	s.flag("fail-test", false)
	res := s.getIssue(s.celery.Send(t, sendIssue(r.ID)), 90*time.Second)
	if res.Status != "ssl_issued" {
		t.Errorf("result after the fault = %+v", res)
	}
	s.served(fresh)
	if r := s.row(fresh); r.Status != "ssl_issued" || r.LastError != "" {
		t.Errorf("row after the fault = %+v", r)
	}
	s.oneLineage(fresh)
	s.oneLineage(live)
	s.quiet()
}
