package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/internal/testpeers"
)

// Every setting is checked before a command runs, and a bad one is named
// with exit 2.
func TestBadSettingsAreNamedOnExit2(t *testing.T) {
	t.Parallel()
	noPEM := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(noPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, value string
	}{
		{EnvACMECABundle, "/nonexistent/bundle.pem"},
		{EnvACMECABundle, noPEM},
		{EnvLetsEncryptDir, "letsencrypt"},
		{EnvACMEWebroot, "var/www"},
		{EnvNginxBinary, "/nonexistent/nginx"},
		{EnvDNSServers, "foo"},
		{EnvDNSServers, "10.0.0.10:53,resolver.local"},
		{EnvDNSServers, "10.0.0.10:99999"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			t.Parallel()
			for _, cmd := range []string{"certificates", "check"} {
				env := map[string]string{tc.name: tc.value, EnvLetsEncryptDir: t.TempDir(),
					EnvDBURL: "postgres://u@127.0.0.1:1/x", EnvCNAMETarget: "custom.platform.test"}
				env[tc.name] = tc.value
				code, out, errOut := runCLI(t, env, cmd)
				if code != exitUsage || !strings.Contains(errOut, tc.name) {
					t.Errorf("%s with %s=%q: exit %d, want 2 naming it\n%s\n%s", cmd, tc.name, tc.value, code, out, errOut)
				}
			}
		})
	}
	// Good values pass these checks.
	code, _, errOut := runCLI(t, map[string]string{EnvDNSServers: "10.0.0.10, [fd00::a]:53, 127.0.0.1:5353",
		EnvLetsEncryptDir: t.TempDir()}, "certificates")
	if code != exitOK {
		t.Errorf("good resolvers refused: exit %d %s", code, errOut)
	}
}

// A mistyped LETSENCRYPT_DIR is an error, not an empty store.
func TestMissingLetsencryptDirIsAnError(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "letsencrpyt")
	code, out, errOut := runCLI(t, map[string]string{EnvLetsEncryptDir: missing}, "certificates")
	if code != exitFailed || !strings.Contains(errOut, "LETSENCRYPT_DIR") || strings.Contains(out, "No certificates found") {
		t.Errorf("certificates on a missing store: exit %d\n%s\n%s", code, out, errOut)
	}
	// An existing, empty store is fine: nothing issued yet.
	code, out, errOut = runCLI(t, map[string]string{EnvLetsEncryptDir: t.TempDir()}, "certificates")
	if code != exitOK || !strings.Contains(out, "No certificates found") || !strings.Contains(out, "Rows not checked") {
		t.Errorf("certificates on an empty store: exit %d\n%s\n%s", code, out, errOut)
	}
}

// Commands that need the database say so, exit 1, when it does not answer.
func TestCommandsNeedingTheDatabaseFailWhenItIsDown(t *testing.T) {
	t.Parallel()
	ng := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	env := map[string]string{
		EnvDBURL: fmt.Sprintf("postgres://u@127.0.0.1:%d/x?connect_timeout=2", testpeers.FreePort(t)), EnvCNAMETarget: "custom.platform.test",
		EnvDNSServers: "127.0.0.1:1", EnvLetsEncryptDir: t.TempDir(), EnvACMEWebroot: ng.Webroot,
		EnvACMEDirectoryURL: fmt.Sprintf("https://127.0.0.1:%d/dir", testpeers.FreePort(t)),
		EnvNginxConfPath:    filepath.Join(ng.ConfDir, "custom-domains.conf"), EnvNginxBinary: ng.Binary,
		EnvNginxMainConf: ng.MainConf, EnvNginxPrefix: ng.Prefix,
	}
	for _, args := range [][]string{{"renew", "--dry-run"}, {"renew"}, {"regen-nginx", "--no-reload"}, {"certificates"},
		{"issue", "--domain", "shop.example.com"}, {"verify-dns", "--domain", "shop.example.com"}} {
		code, out, errOut := runCLI(t, env, args...)
		if code != exitFailed || !strings.Contains(errOut, "connect") {
			t.Errorf("%s with the database down: exit %d, want 1 with the reason\n%s\n%s", strings.Join(args, " "), code, out, errOut)
		}
	}
}

// issued is a certificate for names valid until notAfter, signed by a CA
// of the test kit, PEM encoded for acme.Store.Save.
func issued(t *testing.T, notAfter time.Time, names ...string) acme.Issued {
	t.Helper()
	l := testpeers.NewCA(t, "certmgr cmd test CA").Issue(t, testpeers.LeafOptions{Names: names, NotAfter: notAfter})
	return acme.Issued{Cert: l.Cert, Chain: l.Chain, Key: l.Key}
}

// renew --dry-run and certificates say what needs an operator — a broken
// lineage, a lineage no row names, a row no certificate serves — and exit 1
// until nothing does.
func TestDryRunAndCertificatesReportWhatNeedsAnOperator(t *testing.T) {
	t.Parallel()
	pg := testpeers.Postgres(t)
	ng := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	dir := t.TempDir()
	env := map[string]string{
		EnvDBURL: pg.URL, EnvCNAMETarget: "custom.platform.test", EnvDNSServers: "127.0.0.1:1",
		EnvLetsEncryptDir: dir, EnvACMEWebroot: ng.Webroot,
		// No CA: ARI is not asked, the one-third rule decides.
		EnvACMEDirectoryURL: fmt.Sprintf("https://127.0.0.1:%d/dir", testpeers.FreePort(t)),
		EnvNginxConfPath:    filepath.Join(ng.ConfDir, "custom-domains.conf"), EnvNginxBinary: ng.Binary,
		EnvNginxMainConf: ng.MainConf, EnvNginxPrefix: ng.Prefix,
		EnvNginxHTTPPort: strconv.Itoa(ng.HTTPPort), EnvNginxHTTPSPort: strconv.Itoa(ng.HTTPSPort),
	}
	store := acme.NewStore(dir)
	later := time.Now().Add(80 * 24 * time.Hour)
	for name, names := range map[string][]string{
		"good.example.com":   {"good.example.com"},
		"custom-name":        {"orphan.example.com"},
		"broken.example.com": {"broken.example.com"},
	} {
		if _, err := store.Save(acme.LineageName(name), issued(t, later, names...), acme.RenewalParams{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(dir, "live", "broken.example.com", "privkey.pem")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"good.example.com", "broken.example.com", "lost.example.com"} {
		id := pg.InsertDomain(t, d)
		pg.Exec(t, `UPDATE tenant_customdomain SET status = 'ssl_issued' WHERE id = $1`, id)
	}

	code, out, errOut := runCLI(t, env, "renew", "--dry-run")
	if code != exitFailed {
		t.Fatalf("renew --dry-run exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"good.example.com: kept", "custom-name: no row", "broken.example.com: would renew",
		"lost.example.com: row with no certificate"} {
		if !strings.Contains(out, want) {
			t.Errorf("renew --dry-run does not say %q:\n%s", want, out)
		}
	}
	for _, want := range []string{"1 broken lineage", "1 lineage with no custom domain row", "1 row with no certificate (lost.example.com)"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("renew --dry-run's error does not say %q: %s", want, errOut)
		}
	}
	code, out, errOut = runCLI(t, env, "certificates")
	if code != exitFailed || !strings.Contains(out, "Rows: none") || !strings.Contains(out, "Row with no certificate: lost.example.com") ||
		!strings.Contains(errOut, "broken: broken.example.com") || !strings.Contains(errOut, "no custom domain row: custom-name") {
		t.Errorf("certificates exit %d\n%s\n%s", code, out, errOut)
	}

	// The operator fixes each: removes the broken lineage and the lost row,
	// adds the row the custom-name lineage serves.
	if err := store.Remove("broken.example.com"); err != nil {
		t.Fatal(err)
	}
	pg.Exec(t, `DELETE FROM tenant_customdomain WHERE domain IN ('broken.example.com', 'lost.example.com')`)
	pg.InsertDomain(t, "orphan.example.com")
	for _, args := range [][]string{{"renew", "--dry-run"}, {"certificates"}} {
		if code, out, errOut := runCLI(t, env, args...); code != exitOK {
			t.Errorf("%s after the fixes: exit %d\n%s\n%s", strings.Join(args, " "), code, out, errOut)
		}
	}
}

// issue checks nginx before ordering anything.
func TestIssueChecksNginxBeforeOrdering(t *testing.T) {
	t.Parallel()
	pg := testpeers.Postgres(t)
	ng := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	pg.InsertDomain(t, "shop.example.com")
	env := map[string]string{
		EnvDBURL: pg.URL, EnvCNAMETarget: "custom.platform.test", EnvDNSServers: "127.0.0.1:1",
		EnvLetsEncryptDir: t.TempDir(), EnvACMEWebroot: ng.Webroot,
		EnvACMEDirectoryURL: fmt.Sprintf("https://127.0.0.1:%d/dir", testpeers.FreePort(t)),
		EnvNginxConfPath:    filepath.Join(ng.ConfDir, "custom-domains.conf"), EnvNginxBinary: ng.Binary,
		EnvNginxMainConf: filepath.Join(ng.Prefix, "missing.conf"), EnvNginxPrefix: ng.Prefix,
	}
	code, out, errOut := runCLI(t, env, "issue", "--domain", "shop.example.com", "--force")
	if code != exitFailed || !strings.Contains(errOut, "nothing ordered") || !strings.Contains(errOut, "NGINX_MAIN_CONF") {
		t.Errorf("issue with nginx's main config missing: exit %d\n%s\n%s", code, out, errOut)
	}
}
