package faults

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// hostileNames are domain names an attacker or a broken client may send:
// config injection, path traversal, wildcards, addresses, control bytes,
// oversized labels, lookalikes that are not in canonical form.
var hostileNames = []string{
	"evil.example.com;\n}\nserver { listen 80; root /; }",
	"evil.example.com\r\nX-Injected: 1",
	"../../../etc/cron.d/evil",
	"evil.example.com/../../live",
	"*.evil.example.com",
	"127.0.0.1",
	"[::1]",
	"evil..example.com",
	"-evil.example.com",
	"evil.example.com\x00.attacker.test",
	"ev il.example.com",
	"evil.example.com$host",
	"evil.example.com'\"`",
	strings.Repeat("a", 64) + ".example.com",
	strings.Repeat("abcdefghi.", 26) + "com",
	"xn--.example.com",
	"localhost",
	"",
}

// fragments must never appear in nginx's config or the certificate store.
var fragments = []string{"evil", "injected", "cron", "attacker", "..", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abcdefghi.abcdefghi"}

// Hostile input at every entrance: malformed Celery messages pushed raw onto
// the queue, hostile names in task arguments, in rows of Django's table and
// in command-line flags. The worker stays up (a later certmgr.ping
// succeeds), malformed messages land in certmgr.dead, every task ends in a
// FAILURE a caller can branch on, and nothing reaches nginx's config, the
// certificate store or the ACME webroot.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	confBefore, err := os.ReadFile(s.confPath())
	if err != nil {
		t.Fatal(err)
	}
	w := s.startWorker("w1")

	t.Run("malformed messages", func(t *testing.T) {
		pwned := filepath.Join(t.TempDir(), "pwned")
		// A pickle that runs `touch pwned` if anything unpickles it.
		pickle := "cos\nsystem\n(S'touch " + pwned + "'\ntR."
		raw := []string{
			"not json at all",
			"",
			`{"body": 1}`,
			`[1, 2, 3]`,
			`null`,
			strings.Repeat("[", 100000) + strings.Repeat("]", 100000),
			envelope(t, "application/x-python-serialize", "binary", base64.StdEncoding.EncodeToString([]byte(pickle)), true),
			envelope(t, "application/json", "base64", "!!! not base64 !!!", true),
			envelope(t, "application/json", "base64", base64.StdEncoding.EncodeToString([]byte(`{"args": "wrong shape"}`)), true),
			envelope(t, "application/json", "base64", base64.StdEncoding.EncodeToString([]byte(`[[1], {}, {}]`)), false), // no delivery tag
			envelope(t, "application/json", "base64", base64.StdEncoding.EncodeToString([]byte(`[["`+strings.Repeat("A", 8<<20)+`"], {}, {}]`+"\x00")), true),
		}
		for _, m := range raw {
			if _, err := s.do("LPUSH", "certmgr", m); err != nil {
				t.Fatal(err)
			}
		}
		pingAlive(t, s, w)
		testpeers.Until(t, 30*time.Second, "every malformed message in certmgr.dead", func() bool {
			return s.llen("certmgr.dead") == len(raw)
		})
		if _, err := os.Stat(pwned); err == nil {
			t.Errorf("the pickle payload ran")
		}
		if s.llen("certmgr") != 0 || s.hlen("unacked") != 0 {
			t.Errorf("queue %d, unacked %d after the malformed messages", s.llen("certmgr"), s.hlen("unacked"))
		}
	})

	t.Run("task arguments", func(t *testing.T) {
		type expect struct {
			desc string
			want []string
		}
		var calls []call
		var exp []expect
		for _, n := range append(hostileNames, "shop."+s.target, s.target) {
			calls = append(calls, call{Task: "tenant.tasks.issue_custom_domain_task", Args: []any{n}},
				call{Task: "tenant.tasks.verify_custom_domain_dns_task", Args: []any{n}},
				call{Task: "tenant.tasks.remove_custom_domain_task", Args: []any{n}, Kwargs: map[string]any{"purge": true}})
			for _, task := range []string{"issue", "verify", "remove"} {
				exp = append(exp, expect{fmt.Sprintf("%s %q", task, n), []string{"DomainRejected", "BadArguments"}})
			}
		}
		for _, args := range [][]any{{}, {nil}, {1.5}, {-1}, {map[string]any{"id": 1}}, {[]any{1}}, {1, 2}, {true}, {"1; DROP TABLE tenant_customdomain"}} {
			calls = append(calls, call{Task: "tenant.tasks.issue_custom_domain_task", Args: args})
			exp = append(exp, expect{fmt.Sprintf("issue %v", args), []string{"BadArguments", "NotFound", "DomainRejected"}})
		}
		calls = append(calls, call{Task: "tenant.tasks.issue_custom_domain_task", Args: []any{1}, Kwargs: map[string]any{"force": "yes; rm -rf /"}})
		exp = append(exp, expect{"force kwarg", []string{"BadArguments"}})
		for i, o := range s.batch(calls, 90*time.Second) {
			if o.State != "FAILURE" || !contains(exp[i].want, o.ExcType) {
				t.Errorf("%s: %s %s %s, want a FAILURE of %v", exp[i].desc, o.State, o.ExcType, o.Result, exp[i].want)
			}
		}
		pingAlive(t, s, w)
	})

	t.Run("rows", func(t *testing.T) {
		var calls []call
		for _, n := range hostileNames {
			if n == "" || strings.ContainsRune(n, 0) || len(n) > 253 {
				continue // the column or PostgreSQL itself refuses these
			}
			// As written by a client that skipped Django's validation, in
			// both states: waiting to be issued, and claimed to be live.
			calls = append(calls, call{Task: "tenant.tasks.issue_custom_domain_task", Args: []any{s.insertRow(n, "pending")}})
			calls = append(calls, call{Task: "tenant.tasks.verify_custom_domain_dns_task", Args: []any{s.insertRow("WWW."+n, "ssl_issued")}})
		}
		for i, o := range s.batch(calls, 90*time.Second) {
			if o.State != "FAILURE" || o.ExcType != "DomainRejected" {
				t.Errorf("%s of hostile row %v: %s %s, want DomainRejected", calls[i].Task, calls[i].Args, o.State, o.ExcType)
			}
		}
		// Regeneration and the renewal sweep skip the rows and carry on.
		for _, o := range s.batch([]call{{Task: "tenant.tasks.regen_custom_domains_nginx_task"}, {Task: "tenant.tasks.renew_custom_domains_task"}}, 60*time.Second) {
			if o.State != "SUCCESS" {
				t.Errorf("task with hostile rows in the table: %s %s", o.State, o.ExcType)
			}
		}
		pingAlive(t, s, w)
	})

	t.Run("command line", func(t *testing.T) {
		for _, n := range hostileNames {
			if strings.ContainsRune(n, 0) {
				continue // no argv can carry a NUL byte
			}
			for _, cmd := range [][]string{{"issue", "--force", "--domain", n}, {"verify-dns", "--domain", n}} {
				code, out := s.cli(cmd...)
				if code != 2 || !strings.Contains(out, "--domain") {
					t.Errorf("certmgr %q: exit %d, want 2 naming --domain:\n%s", cmd, code, out)
				}
			}
		}
	})

	// Nothing reached nginx, the store or the webroot.
	confAfter, _ := os.ReadFile(s.confPath())
	if string(confAfter) != string(confBefore) {
		t.Errorf("custom-domains.conf changed:\n%s", confAfter)
	}
	for _, f := range fragments {
		if strings.Contains(strings.ToLower(string(confAfter)), f) {
			t.Errorf("nginx config contains %q", f)
		}
	}
	if e := s.storeEntries(); len(e) != 0 {
		t.Errorf("the certificate store holds %v", e)
	}
	if e, _ := os.ReadDir(filepath.Join(s.nginx.Webroot, ".well-known", "acme-challenge")); len(e) != 0 {
		t.Errorf("the ACME webroot holds %d file(s)", len(e))
	}
	if !w.alive() {
		t.Fatal("the worker exited")
	}
}

// pingAlive checks that the worker still consumes: certmgr.ping succeeds.
func pingAlive(t *testing.T, s *stack, w *workerProc) {
	t.Helper()
	raw, cerr := s.celery.Get(t, s.celery.Send(t, testpeers.SendOptions{Task: "certmgr.ping"}), 30*time.Second)
	if cerr != nil || string(raw) != `"pong"` || !w.alive() {
		t.Fatalf("certmgr.ping after hostile input = %s %v (worker alive %v)", raw, cerr, w.alive())
	}
}

// envelope builds a kombu message around body, with or without a delivery
// tag.
func envelope(t *testing.T, contentType, bodyEncoding, body string, tagged bool) string {
	props := map[string]any{"correlation_id": "3b0c2a55-0000-4000-8000-000000000001", "delivery_mode": 2,
		"delivery_info": map[string]any{"exchange": "", "routing_key": "certmgr"}, "priority": 0,
		"body_encoding": bodyEncoding}
	if tagged {
		props["delivery_tag"] = fmt.Sprintf("hostile-%d", time.Now().UnixNano())
	}
	b, err := json.Marshal(map[string]any{"body": body, "content-encoding": "utf-8", "content-type": contentType,
		"headers": map[string]any{"lang": "py", "task": "tenant.tasks.issue_custom_domain_task",
			"id": "3b0c2a55-0000-4000-8000-000000000001", "retries": 0, "root_id": "3b0c2a55-0000-4000-8000-000000000001"},
		"properties": props})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
