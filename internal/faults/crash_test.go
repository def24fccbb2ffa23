package faults

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// kill -9 of the worker process at each stage of the issue pipeline. The
// moment is picked from outside: the message in kombu's unacked hash, Pebble's
// HTTP-01 request held at the gate in front of nginx, the certificate live in
// the store (live/<name>/ swapped in, its links resolving),
// `nginx -s reload` held by the NGINX_BINARY wrapper. A second worker restores
// the message after the visibility timeout (2s) and the task completes once:
// one result, the row ssl_issued with the served certificate's expiry, exactly
// one certificate version, nginx serving it, nothing left in the broker.
func TestKillWorkerAtEachStage(t *testing.T) {
	t.Parallel()
	stages := []struct {
		desc       string
		gate       bool // hold Pebble's HTTP-01 request
		slowTest   bool // hold nginx -t, so the nginx config cannot be written yet
		slowReload bool // hold nginx -s reload
		killWhen   func(s *stack, d string) bool
		issuedOnce bool // the restarted worker orders (true) or finds the stored certificate (false)
	}{
		{
			desc: "after fetching", gate: true,
			killWhen:   func(s *stack, d string) bool { return s.hlen("unacked") == 1 },
			issuedOnce: true,
		},
		{
			desc: "during the ACME order", gate: true,
			killWhen: func(s *stack, d string) bool {
				select {
				case <-s.http01.arrived:
					return true
				default:
					return false
				}
			},
			issuedOnce: true,
		},
		{
			desc: "after the store write", slowTest: true,
			killWhen: func(s *stack, d string) bool {
				// The certificate is live: live/<d> is swapped in by one
				// rename, acme.Store.Save's last step, so its links
				// resolving means the whole lineage is stored. (Neither
				// cert1.pem nor renewal/<d>.conf will do: both are written
				// before the swap, and a crash before it orders again, by
				// design.) nginx -t is held, so the task is still running.
				live := filepath.Join(s.store, "live", d)
				for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
					if _, err := os.Stat(filepath.Join(live, f)); err != nil {
						return false
					}
				}
				return true
			},
		},
		{
			desc: "before the ack", slowReload: true,
			killWhen: func(s *stack, d string) bool {
				return s.exists("reload-waiting") && s.row(d).Status == "ssl_issued"
			},
			// The killed worker installed custom-domains.conf but never
			// reloaded; the restored message finds the file unchanged and
			// must still reload (nginxconf's reload-pending marker).
		},
	}
	for _, tc := range stages {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, stackOptions{gateHTTP01: tc.gate})
			d := s.domain("crash")
			id := s.pg.InsertDomain(t, d)
			if tc.gate {
				s.http01.close()
			}
			s.flag("slow-reload", tc.slowReload)
			s.flag("slow-test", tc.slowTest)

			w1 := s.startWorker("w1")
			task := s.celery.Send(t, sendIssue(id))
			testpeers.Until(t, 60*time.Second, "the stage to kill at", func() bool { return tc.killWhen(s, d) })
			w1.kill9()
			if n := s.hlen("unacked"); n != 1 {
				t.Fatalf("after kill -9 unacked holds %d messages, want the killed task's 1", n)
			}
			if _, done := s.meta(task); done {
				t.Fatalf("the task has a result although its worker was killed before the ack")
			}
			s.flag("slow-reload", false)
			s.flag("slow-test", false)
			if tc.gate {
				s.http01.release()
			}

			w2 := s.startWorker("w2")
			res := s.getIssue(task, 90*time.Second)
			if res.Status != "ssl_issued" || res.Domain != d || res.Issued != tc.issuedOnce {
				t.Errorf("result after restart = %+v, want ssl_issued with issued=%v", res, tc.issuedOnce)
			}
			s.oneLineage(d)
			r := s.row(d)
			if r.Status != "ssl_issued" || r.LastError != "" || r.Expires == nil {
				t.Errorf("row = %+v", r)
			}
			// Nothing runs it a second time: two visibility timeouts later
			// the broker is empty and one success was logged in all.
			testpeers.Until(t, 10*time.Second, "the ack", func() bool { return s.hlen("unacked") == 0 })
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				if s.llen("certmgr") != 0 || s.hlen("unacked") != 0 {
					t.Fatalf("the task came back after it completed")
				}
				time.Sleep(100 * time.Millisecond)
			}
			if n := succeeded(w1.logText(), task) + succeeded(w2.logText(), task); n != 1 {
				t.Errorf("task succeeded %d times in the workers' logs, want 1", n)
			}
			s.quiet()
			if leaf := s.served(d); !r.Expires.Equal(leaf.NotAfter) {
				t.Errorf("row expiry %s, served notAfter %s", r.Expires, leaf.NotAfter)
			}
		})
	}
}
