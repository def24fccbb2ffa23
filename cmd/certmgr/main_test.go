package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
)

// runCLI runs certmgr in-process with the given environment.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

func TestHelpListsContractCommandsAndFlags(t *testing.T) {
	t.Parallel()
	code, out, _ := runCLI(t, nil, "--help")
	if code != exitOK {
		t.Fatalf("--help exit %d", code)
	}
	for _, c := range []string{"worker", "issue", "renew", "regen-nginx", "certificates", "verify-dns"} {
		if !strings.Contains(out, "\n  "+c+" ") {
			t.Errorf("--help does not list %s:\n%s", c, out)
		}
	}
	for _, v := range Variables {
		if !strings.Contains(out, v.Name) {
			t.Errorf("--help does not document %s", v.Name)
		}
	}

	tests := []struct {
		desc  string
		cmd   string
		flags []string
	}{
		{"worker", "worker", []string{"-Q", "--concurrency", "--loglevel"}},
		{"issue", "issue", []string{"--domain", "--force", "--json"}},
		{"renew", "renew", []string{"--dry-run", "--json"}},
		{"regen", "regen-nginx", []string{"--json"}},
		{"certificates", "certificates", []string{"--json"}},
		{"verify-dns", "verify-dns", []string{"--domain", "--json"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			code, out, _ := runCLI(t, nil, tc.cmd, "--help")
			if code != exitOK {
				t.Fatalf("%s --help exit %d", tc.cmd, code)
			}
			for _, f := range tc.flags {
				if !strings.Contains(out, "  "+f+" ") {
					t.Errorf("%s --help lacks %s:\n%s", tc.cmd, f, out)
				}
			}
		})
	}
}

func TestBadConfigurationExits2NamingTheVariable(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		EnvDBURL:       "postgres://u@db:5432/app",
		EnvCNAMETarget: "custom.midsummer.cloud",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		m[k] = v
		return m
	}
	tests := []struct {
		desc string
		env  map[string]string
		args []string
		want string
	}{
		{"missing db", with(EnvDBURL, ""), []string{"worker"}, "MIDSUMMER_DB_URL is required"},
		{"missing target", with(EnvCNAMETarget, ""), []string{"renew"}, "CUSTOM_DOMAIN_CNAME_TARGET is required"},
		{"db not a url", with(EnvDBURL, "db.internal"), []string{"worker"}, `MIDSUMMER_DB_URL="db.internal" is invalid`},
		{"broker scheme", with(EnvBrokerURL, "sqs://key:hunter2@"), []string{"worker"}, `CELERY_BROKER_URL="sqs://REDACTED@" is invalid`},
		{"broker password hidden", with(EnvBrokerURL, "redis://:hunter2@h:99999/0"), []string{"worker"}, `CELERY_BROKER_URL="redis://REDACTED@h:99999/0" is invalid: expected redis url redis://:***@h:99999/0: the port is not a number`},
		{"rpc backend on redis", with(EnvResultBackend, "rpc://"), []string{"worker"}, "CELERY_RESULT_BACKEND=\"rpc://\" is invalid: expected result backend rpc:// replies over AMQP"},
		{"transport option", with(EnvBrokerOptions, `{"fanout_patterns": false}`), []string{"worker"}, `CELERY_BROKER_TRANSPORT_OPTIONS: option "fanout_patterns": not supported`},
		{"max message bytes", with(EnvMaxMessageBytes, "-1"), []string{"worker"}, "CERTMGR_MAX_MESSAGE_BYTES"},
		{"visibility", with(EnvVisibilityTimeout, "soon"), []string{"worker"}, "CELERY_VISIBILITY_TIMEOUT"},
		{"key type", with(EnvACMEKeyType, "dsa"), []string{"worker"}, "ACME_KEY_TYPE=\"dsa\" is invalid: expected unknown key type \"dsa\" (want one of ec256"},
		{"staging bool", with(EnvACMEStaging, "maybe"), []string{"worker"}, "ACME_STAGING"},
		{"acme over http", with(EnvACMEDirectoryURL, "http://pebble:14000/dir"), []string{"worker"}, `ACME_DIRECTORY_URL="http://pebble:14000/dir" is invalid`},
		{"retry max under base", with(EnvRetryMax, "5"), []string{"worker"}, "CERTMGR_RETRY_MAX"},
		{"port", with(EnvNginxHTTPSPort, "70000"), []string{"regen-nginx"}, "NGINX_HTTPS_PORT"},
		{"cert mode", with(EnvNginxCertMode, "sni"), []string{"regen-nginx"}, "NGINX_CERT_MODE"},
		{"upstream", with(EnvNginxUpstream, "hypercorn"), []string{"regen-nginx"}, "NGINX_UPSTREAM"},
		{"reload without deployment", with(EnvReloadAllPods, "true"), []string{"worker"}, "DEPLOYMENT_NAME is required"},
		{"reload bool", with(EnvReloadAllPods, "all"), []string{"worker"}, "RELOAD_ALL_PODS"},
		{"concurrency env", with(EnvConcurrency, "0"), []string{"worker"}, "CERTMGR_CONCURRENCY"},
		{"concurrency flag", good, []string{"worker", "--concurrency", "many"}, "--concurrency"},
		{"loglevel", good, []string{"--loglevel", "loud", "worker"}, "--loglevel"},
		{"log format", good, []string{"worker", "--log-format", "xml"}, "--log-format"},
		{"issue without domain", good, []string{"issue"}, "--domain is required"},
		{"verify without domain", good, []string{"verify-dns"}, "--domain is required"},
		{"unknown flag", good, []string{"renew", "--now"}, "flag provided but not defined"},
		{"unknown command", good, []string{"obtain"}, `unknown command "obtain"`},
		{"stray argument", good, []string{"issue", "--domain", "a.example.com", "b.example.com"}, "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, tc.env, tc.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Fatalf("stderr does not name the problem %q:\n%s", tc.want, stderr)
			}
			if strings.Contains(stderr, "hunter2") {
				t.Fatalf("stderr shows the password:\n%s", stderr)
			}
		})
	}
}

func TestConfigsDefaultsFollowTheContract(t *testing.T) {
	t.Parallel()
	s, err := loadConfigs(func(k string) string {
		return map[string]string{EnvDBURL: "postgres://u@db/app", EnvCNAMETarget: "custom.midsummer.cloud", EnvCattleNamespace: "tenant-prod"}[k]
	}, needs{db: true, target: true})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		desc      string
		got, want any
	}{
		{"broker", s.Worker.BrokerURL, "redis://localhost:6379/0"},
		{"backend follows broker (worker's default)", s.Worker.ResultBackendURL, ""},
		{"queue", s.Worker.Queue, "certmgr"},
		{"visibility", s.Worker.VisibilityTimeout.Seconds(), 3600.0},
		{"prefetch follows concurrency", [2]int{s.Worker.Concurrency, s.Worker.Prefetch}, [2]int{4, 4}},
		{"staging directory (acme's default)", [2]any{s.ACME.DirectoryURL, s.ACME.Production}, [2]any{"", false}},
		{"key type", s.ACME.KeyType, acme.EC256},
		{"webroot, both", [2]string{s.ACME.Webroot, s.Nginx.ACMEWebroot}, [2]string{"/var/www/letsencrypt", "/var/www/letsencrypt"}},
		{"store, both", [2]string{s.ACME.Dir, s.Nginx.LetsEncryptDir}, [2]string{"/etc/letsencrypt", "/etc/letsencrypt"}},
		{"target, both", [2]string{s.Names.CNAMETarget, s.DNS.Target}, [2]string{"custom.midsummer.cloud", "custom.midsummer.cloud"}},
		{"conf", s.Nginx.ConfPath, "/etc/nginx/conf.d/custom-domains.conf"},
		{"upstream", s.Nginx.Upstream, "127.0.0.1:8082"},
		{"ports", [2]int{s.Nginx.HTTPSPort, s.Nginx.HTTPPort}, [2]int{8443, 8080}},
		{"cert mode", s.Nginx.CertMode, nginxconf.CertModeAuto},
		{"nginx reload method", s.Nginx.ReloadMethod, nginxconf.ReloadAuto},
		{"max message bytes", s.Worker.MaxMessageBytes, 1 << 20},
		{"task time limit", s.Worker.DefaultTimeLimit, 5 * time.Minute},
		{"dns check timeout", s.DNS.CheckTimeout, 10 * time.Second},
		{"timeout", s.Nginx.Timeout, 2 * time.Minute},
		{"reload", s.Reload.Mode, podreload.ModeLocal},
		{"namespace falls back to rancher's", s.Reload.Namespace, "tenant-prod"},
		{"container", s.Reload.Container, "proxy"},
		{"retry", [2]time.Duration{s.Tasks.RetryBase, s.Tasks.RetryMax}, [2]time.Duration{10 * time.Second, 10 * time.Minute}},
		{"http addr", s.HTTPAddr, ":9102"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.desc, c.got, c.want)
		}
	}

	prod, err := loadConfigs(func(k string) string {
		return map[string]string{EnvACMEStaging: "false", EnvReloadAllPods: "true", EnvDeploymentName: "api", EnvReloadMode: "rollout",
			EnvPodNamespace: "pod-ns", EnvCattleNamespace: "cattle-ns"}[k]
	}, needs{})
	if err != nil {
		t.Fatal(err)
	}
	if !prod.ACME.Production || prod.Reload.Mode != podreload.ModeRollout || prod.Reload.Namespace != "pod-ns" {
		t.Fatalf("production configs = %v %s %s", prod.ACME.Production, prod.Reload.Mode, prod.Reload.Namespace)
	}
	// CERTMGR_RELOAD_MODE means nothing without RELOAD_ALL_PODS=true.
	local, err := loadConfigs(func(k string) string { return map[string]string{EnvReloadMode: "rollout"}[k] }, needs{})
	if err != nil || local.Reload.Mode != podreload.ModeLocal {
		t.Fatalf("reload mode without RELOAD_ALL_PODS = %s, %v", local.Reload.Mode, err)
	}
}

func TestLoggerFormats(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l, err := newLogger(&buf, "WARNING", "")
	if err != nil {
		t.Fatal(err)
	}
	l.Info().Msg("hidden")
	l.Warn().Str("domain", "shop.example.com").Msg("shown")
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
		t.Fatalf("not one JSON line (info should be filtered at WARNING): %q", buf.String())
	}
	if line["message"] != "shown" || line["level"] != "warn" || line["domain"] != "shop.example.com" {
		t.Fatalf("log line = %v", line)
	}
	buf.Reset()
	l, _ = newLogger(&buf, "debug", "console")
	l.Debug().Msg("hello")
	if strings.HasPrefix(buf.String(), "{") || !strings.Contains(buf.String(), "hello") {
		t.Fatalf("console output = %q", buf.String())
	}
}
