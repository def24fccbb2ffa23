package certstore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// A lineage certbot itself made (two versions, its own account) goes into
// the store and comes back out as certbot wrote it: certbot lists the export
// and renews from it with the exported account (the rollback path).
func TestImportsCertbotsOwnLineageAndCertbotRenewsTheExport(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("certbot")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("certbot missing: apt-get install certbot")
		}
		t.Skip("certbot missing")
	}
	dns := testpeers.ChallTestSrv(t)
	ng := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	conf := fmt.Sprintf("server {\n    listen 127.0.0.1:%d;\n    location /.well-known/acme-challenge/ { root %s; default_type text/plain; }\n}\n", ng.HTTPPort, ng.Webroot)
	if err := os.WriteFile(filepath.Join(ng.ConfDir, "webroot.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ng.Start(t)
	pb := testpeers.Pebble(t, testpeers.PebbleOptions{HTTPPort: ng.HTTPPort, DNS: dns})
	d := fmt.Sprintf("certbot-%d.example.com", time.Now().UnixNano())
	dns.AddA(t, d, "127.0.0.1")
	work := t.TempDir()
	certbot := func(config string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append(args, "--non-interactive", "--config-dir", config,
			"--work-dir", filepath.Join(work, "work"), "--logs-dir", filepath.Join(work, "logs"))...)
		cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+pb.CABundle)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("certbot %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	src := filepath.Join(t.TempDir(), "letsencrypt")
	for _, extra := range [][]string{nil, {"--force-renewal"}} {
		certbot(src, append([]string{"certonly", "--webroot", "-w", ng.Webroot, "-d", d, "--server", pb.DirectoryURL,
			"--agree-tos", "--register-unsafely-without-email", "--key-type", "ecdsa"}, extra...)...)
	}

	s := openStore(t, newPG(t).URL, testpeers.StoreKey())
	res, err := s.Import(ctxT(t), src)
	if err != nil || len(res.Lineages) != 1 || res.AccountFiles < 3 {
		t.Fatalf("import of certbot's directory: %+v %v", res, err)
	}
	ls, err := s.Lineages(ctxT(t), LineageFilter{AllVersions: true})
	if err != nil || len(ls) != 1 || len(ls[0].Versions) != 2 || ls[0].Current != 2 || ls[0].Domains[0] != d {
		t.Fatalf("stored lineage: %+v %v", ls, err)
	}
	// The rollback: the volume is gone, the export is written where it was
	// (certbot's renewal configuration names absolute paths).
	orig := src + ".orig"
	if err := os.Rename(src, orig); err != nil {
		t.Fatal(err)
	}
	dst := src
	if _, err := s.Export(ctxT(t), dst); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"renewal/" + d + ".conf", "archive/" + d + "/privkey1.pem", "archive/" + d + "/fullchain2.pem"} {
		a, _ := os.ReadFile(filepath.Join(orig, rel))
		b, err := os.ReadFile(filepath.Join(dst, rel))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs after the round trip (%v)", rel, err)
		}
	}
	if out := certbot(dst, "certificates"); !strings.Contains(out, "Certificate Name: "+d) || !strings.Contains(out, "VALID") {
		t.Fatalf("certbot certificates on the export:\n%s", out)
	}
	// certbot renews from the export with the account the store kept.
	// Without a terminal, `certbot renew` first sleeps up to 8 minutes at
	// random (for cron); the flag turns that off.
	certbot(dst, "renew", "--cert-name", d, "--force-renewal", "--no-random-sleep-on-renew")
	if _, err := os.Stat(filepath.Join(dst, "archive", d, "cert3.pem")); err != nil {
		t.Fatalf("certbot did not renew from the export: %v", err)
	}
}
