package redisbroker

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseURLForms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url, network, addr, user, pass string
		db                             int
		tls                            bool
	}{
		{"redis://localhost:6379/0", "tcp", "localhost:6379", "", "", 0, false},
		{"redis://:s3cret@10.0.0.1/3", "tcp", "10.0.0.1:6379", "", "s3cret", 3, false},
		{"redis://alice:s3cret@h:7000/2", "tcp", "h:7000", "alice", "s3cret", 2, false},
		{"redis://s3cret@h", "tcp", "h:6379", "", "s3cret", 0, false},
		{"rediss://h:6380/1?ssl_cert_reqs=CERT_NONE", "tcp", "h:6380", "", "", 1, true},
		{"rediss://h:6380/1?ssl_cert_reqs=none", "tcp", "h:6380", "", "", 1, true},
		{"redis+socket:///run/redis.sock?virtual_host=4", "unix", "/run/redis.sock", "", "", 4, false},
		{"unix:///run/redis.sock?db=5", "unix", "/run/redis.sock", "", "", 5, false},
		{"socket://:pw@/run/redis.sock", "unix", "/run/redis.sock", "", "pw", 0, false},
	} {
		ep, err := ParseURL(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if ep.Network != tc.network || ep.Addr != tc.addr || ep.Username != tc.user || ep.Password != tc.pass || ep.DB != tc.db || (ep.TLS != nil) != tc.tls {
			t.Errorf("%s: got %+v", tc.url, ep)
		}
		if tc.pass != "" && strings.Contains(ep.String(), tc.pass) {
			t.Errorf("%s: String() %q shows the password", tc.url, ep.String())
		}
	}
}

func TestParseURLErrorsNameProblemNotPassword(t *testing.T) {
	t.Parallel()
	const pw = "hunter2-secret"
	for _, tc := range []struct{ url, want string }{
		{"amqp://u:" + pw + "@h//", `scheme "amqp"`},
		{"redis://:" + pw + "@h:99999/0", "port is not a number"},
		{"redis://:" + pw + "@h/zero", "database is not a number"},
		{"redis://:hunter2/secret@h/0", "percent-encode"},
		{"redis://:hunter2#secret@h/0", "percent-encode"},
		{"redis://:hunter2:secret@h/0?x=1", "not supported"},
		{"redis://:" + pw + "@h/0?ssl_cert_reqs=required", "need the rediss:// scheme"},
		{"rediss://:" + pw + "@h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"},
		{"rediss://:" + pw + "@h/0?ssl_ca_certs=/nonexistent/ca.pem", "ssl_ca_certs"},
		{"rediss://:" + pw + "@h/0?ssl_certfile=/c.pem", "ssl_certfile and ssl_keyfile go together"},
		{"redis://:" + pw + "@h/0?health_check=1", `"health_check" is not supported`},
		{"redis+socket://:" + pw + "@host/run/redis.sock", "no host"},
		{"redis://:" + pw + "@:h:1:2/0", "is not host or host:port"},
		{"redis://:hunter2-secret/x@h:1/0", "percent-encode"},
		{"redis://:" + pw + "@/0", "no host"},
		{":" + pw + "@h", "not a valid URL"},
	} {
		_, err := ParseURL(tc.url)
		if err == nil {
			t.Errorf("%s: accepted", tc.url)
			continue
		}
		var ue *URLError
		if !errors.As(err, &ue) {
			t.Errorf("%s: %T %v is not a *URLError", tc.url, err, err)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not say %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error %q shows the password", tc.url, err)
		}
	}
}

func TestParseSentinelURL(t *testing.T) {
	t.Parallel()
	ep, err := ParseURL("sentinel://:pw@h1:26380/2;sentinel://h2;sentinel://h3:5000")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ep.Sentinels, ","); got != "h1:26380,h2:26379,h3:5000" || ep.DB != 2 || ep.Password != "pw" {
		t.Errorf("got %+v", ep)
	}
	if strings.Contains(ep.String(), "pw") {
		t.Errorf("String() %q shows the password", ep)
	}
	if _, err := newDialer("sentinel://h1", Options{}, time.Second, time.Second); err == nil || !strings.Contains(err.Error(), "master_name") {
		t.Errorf("no master_name: %v", err)
	}
	if _, err := newDialer("redis://h1", Options{MasterName: "m"}, time.Second, time.Second); err == nil {
		t.Error("master_name on a redis:// URL accepted")
	}
	if _, err := ParseURL("sentinel://:hunter2@h1;redis://h2"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("mixed schemes: %v", err)
	}
}
