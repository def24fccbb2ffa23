package nginxconf

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func sites(names ...string) []Site {
	var s []Site
	for _, n := range names {
		s = append(s, Site{Domain: Domain{Name: domain.Name(n)}})
	}
	return s
}

func TestRenderGolden(t *testing.T) {
	t.Parallel()
	fp := strings.Repeat("ab", 32)
	tests := []struct {
		desc   string
		golden string
		cfg    Config
		sites  []Site
	}{
		{
			desc:   "per-server, names out of order and duplicated",
			golden: "per-server.conf",
			cfg:    Config{CertMode: CertModePerServer},
			sites: []Site{
				{Domain: Domain{Name: "shop.example.com"}, CertSHA256: fp},
				{Domain: Domain{Name: "events.tenant-a.org"}, CertSHA256: fp},
				{Domain: Domain{Name: "xn--bcher-kva.example", Lineage: "xn--bcher-kva.example-0001"}, CertSHA256: fp},
				{Domain: Domain{Name: "shop.example.com"}, CertSHA256: fp},
			},
		},
		{
			desc:   "variable",
			golden: "variable.conf",
			cfg:    Config{CertMode: CertModeVariable},
			sites:  []Site{{Domain: Domain{Name: "shop.example.com"}, CertSHA256: fp}, {Domain: Domain{Name: "events.tenant-a.org"}, CertSHA256: fp}},
		},
		{
			desc:   "lua, one lineage named otherwise",
			golden: "lua.conf",
			cfg:    Config{CertMode: CertModeLua},
			sites: []Site{
				{Domain: Domain{Name: "shop.example.com"}, CertSHA256: fp},
				{Domain: Domain{Name: "events.tenant-a.org"}, CertSHA256: fp},
				{Domain: Domain{Name: "xn--bcher-kva.example", Lineage: "xn--bcher-kva.example-0001"}, CertSHA256: fp},
			},
		},
		{
			desc:   "no domains",
			golden: "empty.conf",
			cfg:    Config{CertMode: CertModePerServer},
		},
		{
			desc:   "non-default settings, hash left to the main config",
			golden: "custom-settings.conf",
			cfg: Config{
				Upstream: "unix:/run/hypercorn.sock", HTTPSPort: 443, HTTPPort: 80,
				DefaultCert: "/etc/nginx/default.pem", DefaultKey: "/etc/nginx/default.key",
				ACMEWebroot: "/srv/acme", LetsEncryptDir: "/data/le", HashMode: HashOff, CertMode: CertModePerServer,
			},
			sites: sites("a.example.com"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got, err := Render(tc.cfg, tc.sites)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestRenderGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Render differs from %s (rerun with -update and review the diff):\n%s", path, got)
			}
			again, _ := Render(tc.cfg, reversed(tc.sites))
			if !bytes.Equal(got, again) {
				t.Error("Render depends on the order of its input")
			}
		})
	}
}

// TestRenderGoldenGenerations renders for the two nginx generations, with
// the plans Choose makes from real `nginx -V` outputs: Debian's 1.22
// (listen … http2, no certificate cache) and 1.28 (http2 on,
// ssl_certificate_cache in variable mode), each also with the lua module
// loaded (auto picks lua).
func TestRenderGoldenGenerations(t *testing.T) {
	t.Parallel()
	fp := strings.Repeat("cd", 32)
	ss := []Site{
		{Domain: Domain{Name: "shop.example.com"}, CertSHA256: fp},
		{Domain: Domain{Name: "events.tenant-a.org"}, CertSHA256: fp},
		{Domain: Domain{Name: "xn--bcher-kva.example", Lineage: "xn--bcher-kva.example-0001"}, CertSHA256: fp},
	}
	tests := []struct {
		golden   string
		nginxV   string
		mode     CertMode
		above    int // AutoVariableAbove
		wantMode CertMode
		lua      bool // the main configuration loads the lua module
	}{
		{"auto-1.22-per-server.conf", "debian-bookworm-1.22.1.txt", CertModeAuto, 0, CertModePerServer, false},
		{"auto-1.22-variable.conf", "debian-bookworm-1.22.1.txt", CertModeAuto, 2, CertModeVariable, false},
		{"auto-1.28.conf", "source-1.28.3.txt", CertModeAuto, 0, CertModeVariable, false},
		{"per-server-1.28.conf", "source-1.28.3.txt", CertModePerServer, 0, CertModePerServer, false},
		{"auto-1.22-lua.conf", "debian-bookworm-1.22.1.txt", CertModeAuto, 0, CertModeLua, true},
		{"auto-1.28-lua.conf", "source-1.28.3.txt", CertModeAuto, 0, CertModeLua, true},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			t.Parallel()
			out, err := os.ReadFile(filepath.Join("testdata", "nginx-V", tc.nginxV))
			if err != nil {
				t.Fatal(err)
			}
			info, err := ParseNginxV(string(out))
			if err != nil {
				t.Fatal(err)
			}
			info.Lua = tc.lua
			cfg := Config{CertMode: tc.mode, AutoVariableAbove: tc.above}.WithDefaults()
			plan := Choose(cfg, info, len(ss), nil)
			if plan.Mode != tc.wantMode {
				t.Fatalf("Choose = %s (%s), want %s", plan.Mode, plan.Reason, tc.wantMode)
			}
			got, err := RenderPlan(cfg, plan, ss)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata", tc.golden), got)
			checkStructure(t, plan.Mode, got, ss)
		})
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestRenderGolden -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (rerun with -update and review the diff):\n%s", path, got)
	}
}

func TestRenderDuplicateNamesDeterministic(t *testing.T) {
	t.Parallel()
	a := Site{Domain: Domain{Name: "a.example.com", Lineage: "a.example.com-0001"}}
	b := Site{Domain: Domain{Name: "a.example.com"}}
	x, _ := Render(Config{}, []Site{a, b})
	y, _ := Render(Config{}, []Site{b, a})
	if !bytes.Equal(x, y) {
		t.Error("which of two sites with the same name is rendered depends on input order")
	}
}

func reversed(s []Site) []Site {
	out := make([]Site, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

func TestRenderRefusesBadNames(t *testing.T) {
	t.Parallel()
	for _, n := range []string{
		"", "example", "Example.com", "a b.com", "a;b.com", "a}.com", "*.example.com", ".example.com",
		"example.com.", "a..b.com", "-a.example.com", "a-.example.com", "~^(.*)$.com", "a.com\nserver",
		"a_b.example.com", "é.example.com", "$host.com", strings.Repeat("a", 64) + ".com",
		strings.Repeat("abcdefghi.", 26) + "com",
	} {
		if _, err := Render(Config{}, sites(n)); err == nil {
			t.Errorf("Render accepted server name %q", n)
		}
	}
	for _, l := range []string{"../../etc", "a.example.com/x", "a.example.com;", "..", ".hidden", "a b", "a{b", "-x", "a..b"} {
		if _, err := Render(Config{}, []Site{{Domain: Domain{Name: "a.example.com", Lineage: l}}}); err == nil {
			t.Errorf("Render accepted lineage %q", l)
		}
	}
	// certbot --cert-name lineages: any name of letters, digits, '.', '_', '-'.
	for _, l := range []string{"custom-name", "Shop_Certs.2024", "a.example.com-0001"} {
		if _, err := Render(Config{}, []Site{{Domain: Domain{Name: "a.example.com", Lineage: l}}}); err != nil {
			t.Errorf("Render refused lineage %q: %v", l, err)
		}
	}
	if _, err := Render(Config{}, []Site{{Domain: Domain{Name: "a.example.com"}, CertSHA256: "ab;cd"}}); err == nil {
		t.Error("Render accepted a fingerprint that is not hex")
	}
}

func TestRenderRefusesBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		cfg  Config
	}{
		{"relative letsencrypt dir", Config{LetsEncryptDir: "letsencrypt"}},
		{"semicolon in webroot", Config{ACMEWebroot: "/var/www;return 200"}},
		{"space in default cert", Config{DefaultCert: "/etc/a b.pem"}},
		{"upstream without port", Config{Upstream: "127.0.0.1"}},
		{"upstream with brace", Config{Upstream: "a}:80"}},
		{"same ports", Config{HTTPPort: 8443}},
		{"unknown mode", Config{CertMode: "both"}},
		{"lua: a directory that closes the Lua string", Config{CertMode: CertModeLua, LetsEncryptDir: "/etc/]==]os.exit()--"}},
		{"lua: a directory past nginx's 4 KB buffer", Config{CertMode: CertModeLua, LetsEncryptDir: "/" + strings.Repeat("d", 3000)}},
	}
	for _, tc := range tests {
		if _, err := Render(tc.cfg, sites("a.example.com")); err == nil {
			t.Errorf("%s: Render accepted the config", tc.desc)
		}
	}
}

// The hashes of a large variable-mode file (the SNI map, the HTTP server's
// names) build on nginx's first try: nginx warns "could not build optimal
// ..." when no size up to max_size fits, after a pass over every name per
// size tried (at 100,000 names that search was most of nginx -t).
func TestHashSizesBuildOnFirstTry(t *testing.T) {
	t.Parallel()
	peer := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	names := []string{"a.io"}
	for i := range 20000 {
		// Lengths from 16 to 60 characters, as tenants' names vary.
		names = append(names, fmt.Sprintf("s%d.%s.example.com", i, strings.Repeat("t", i%45+1)))
	}
	cfg := Config{ConfPath: filepath.Join(peer.ConfDir, "custom-domains.conf"), CertMode: CertModeVariable,
		HTTPSPort: peer.HTTPSPort, HTTPPort: peer.HTTPPort, ACMEWebroot: peer.Webroot}
	out, err := Render(cfg, sites(names...))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg.ConfPath, string(out))
	cmd := exec.Command(peer.Binary, "-t", "-p", peer.Prefix, "-c", peer.MainConf, "-e", peer.ErrorLog)
	msg, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, msg)
	}
	if strings.Contains(string(msg), "could not build") {
		t.Errorf("nginx -t had to search for hash sizes:\n%s", msg)
	}
	// The sizes stay within nginx's limits whatever the names.
	for _, tc := range []struct{ count, longest int }{{0, 0}, {1, 253}, {1e6, 253}} {
		maxSize, bucket := hashSizes(tc.count, tc.longest)
		if bucket%64 != 0 || bucket > 65536-64 || maxSize < tc.count {
			t.Errorf("hashSizes(%d, %d) = %d, %d", tc.count, tc.longest, maxSize, bucket)
		}
	}
}

func TestRenderFleetProxiesChallengesToTheAgent(t *testing.T) {
	t.Parallel()
	out, err := Render(Config{ACMEChallengeProxy: "127.0.0.1:9102"}, sites("shop.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	want := "    location ^~ /.well-known/acme-challenge/ {\n        proxy_pass http://127.0.0.1:9102;\n        proxy_set_header Host $host;\n    }\n"
	if !strings.Contains(string(out), want) {
		t.Fatalf("no proxy to the agent:\n%s", out)
	}
	if strings.Contains(string(out), "root /var/www/letsencrypt") {
		t.Fatal("fleet config still serves the webroot")
	}
	for _, bad := range []string{"127.0.0.1", "127.0.0.1:9102;evil", ":9102"} {
		if _, err := Render(Config{ACMEChallengeProxy: bad}, nil); err == nil {
			t.Errorf("ACMEChallengeProxy %q accepted", bad)
		}
	}
}

// NGINX_LISTEN_ADDRESS puts every generated server on one address.
func TestRenderListenAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ addr, https, http string }{
		{"", "listen 8443 ssl", "listen 8080;"},
		{"127.0.0.1", "listen 127.0.0.1:8443 ssl", "listen 127.0.0.1:8080;"},
		{"::1", "listen [::1]:8443 ssl", "listen [::1]:8080;"},
	} {
		out, err := Render(Config{ListenAddress: tc.addr}, sites("a.example.com"))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "listen ") && !strings.HasPrefix(l, tc.https) && l != tc.http {
				t.Errorf("ListenAddress %q: %q", tc.addr, l)
			}
		}
		if !strings.Contains(string(out), tc.https) || !strings.Contains(string(out), tc.http) {
			t.Errorf("ListenAddress %q: no %q or %q in\n%s", tc.addr, tc.https, tc.http, out)
		}
	}
	if _, err := Render(Config{ListenAddress: "localhost"}, sites("a.example.com")); err == nil {
		t.Error("Render accepted a listen address that is not an IP")
	}
}
