package nginxconf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestChoose(t *testing.T) {
	t.Parallel()
	v122 := NginxInfo{Version: Version{1, 22, 1}, Modules: []string{"http_ssl", "http_v2"}}
	v128 := NginxInfo{Version: Version{1, 28, 3}, Modules: []string{"http_ssl", "http_v2"}}
	lua122, lua128 := v122, v128
	lua122.Lua, lua128.Lua = true, true
	luaTaken := lua122
	luaTaken.LuaInitTaken = true
	unreadable := errors.New("user www-data cannot enter /etc/letsencrypt/live")
	tests := []struct {
		desc      string
		mode      CertMode
		info      NginxInfo
		domains   int
		keys      error
		wantMode  CertMode
		wantRule  PlanRule
		wantCache int
		wantHTTP2 HTTP2Style
	}{
		{"1.22, few domains", CertModeAuto, v122, 10, nil, CertModePerServer, RuleSmallFleet, 0, HTTP2Listen},
		{"1.22, at the threshold", CertModeAuto, v122, 1000, nil, CertModePerServer, RuleSmallFleet, 0, HTTP2Listen},
		{"1.22, above the threshold", CertModeAuto, v122, 1001, nil, CertModeVariable, RuleLargeFleet, 0, HTTP2Listen},
		{"1.22, 100,000 domains", CertModeAuto, v122, 100000, nil, CertModeVariable, RuleLargeFleet, 0, HTTP2Listen},
		{"1.22, many domains, keys unreadable", CertModeAuto, v122, 5000, unreadable, CertModePerServer, RuleKeysUnreadable, 0, HTTP2Listen},
		{"1.28, few domains: the cache", CertModeAuto, v128, 10, nil, CertModeVariable, RuleCertCache, 1000, HTTP2Directive},
		{"1.28, 50,000 domains", CertModeAuto, v128, 50000, nil, CertModeVariable, RuleCertCache, 105000, HTTP2Directive},
		{"1.28, 100,000 domains: the cache is capped at 75,000 domains", CertModeAuto, v128, 100000, nil, CertModeVariable, RuleCertCache, DefaultCertCacheMax, HTTP2Directive},
		{"1.28, keys unreadable, few domains", CertModeAuto, v128, 10, unreadable, CertModePerServer, RuleSmallFleet, 0, HTTP2Directive},
		{"1.28, keys unreadable, many", CertModeAuto, v128, 5000, unreadable, CertModePerServer, RuleKeysUnreadable, 0, HTTP2Directive},
		{"configured per-server on 1.28", CertModePerServer, v128, 100000, nil, CertModePerServer, RuleConfigured, 0, HTTP2Directive},
		{"configured variable on 1.28 gets the cache", CertModeVariable, v128, 5000, nil, CertModeVariable, RuleConfigured, 11000, HTTP2Directive},
		{"configured variable on 1.22", CertModeVariable, v122, 5, nil, CertModeVariable, RuleConfigured, 0, HTTP2Listen},
		{"1.22 with lua, few domains", CertModeAuto, lua122, 10, nil, CertModeLua, RuleLua, 0, HTTP2Listen},
		{"1.22 with lua, 100,000 domains", CertModeAuto, lua122, 100000, nil, CertModeLua, RuleLua, 0, HTTP2Listen},
		{"1.28 with lua: lua before the cache", CertModeAuto, lua128, 100000, nil, CertModeLua, RuleLua, 0, HTTP2Directive},
		{"lua, keys unreadable, many", CertModeAuto, lua122, 5000, unreadable, CertModePerServer, RuleKeysUnreadable, 0, HTTP2Listen},
		{"configured lua", CertModeLua, v122, 5, nil, CertModeLua, RuleConfigured, 0, HTTP2Listen},
		{"lua, but the platform has its own init_by_lua", CertModeAuto, luaTaken, 5000, nil, CertModeVariable, RuleLargeFleet, 0, HTTP2Listen},
		{"no http_v2 module", CertModeAuto, NginxInfo{Version: Version{1, 22, 1}, Modules: []string{"http_ssl"}}, 1, nil, CertModePerServer, RuleSmallFleet, 0, HTTP2None},
	}
	for _, tc := range tests {
		p := Choose(Config{CertMode: tc.mode}, tc.info, tc.domains, tc.keys)
		if p.Mode != tc.wantMode || p.Rule != tc.wantRule || p.CertCache != tc.wantCache || p.HTTP2 != tc.wantHTTP2 {
			t.Errorf("%s: Choose = %s/%s cache %d http2 %s; want %s/%s cache %d http2 %s (%s)", tc.desc,
				p.Mode, p.Rule, p.CertCache, p.HTTP2, tc.wantMode, tc.wantRule, tc.wantCache, tc.wantHTTP2, p.Reason)
		}
		if p.Reason == "" {
			t.Errorf("%s: no reason", tc.desc)
		}
		if tc.info.LuaInitTaken && !strings.Contains(p.Reason, "init_by_lua of its own") {
			t.Errorf("%s: reason %q does not say why not lua", tc.desc, p.Reason)
		}
		if tc.keys != nil && tc.wantRule == RuleKeysUnreadable && !strings.Contains(p.Reason, tc.keys.Error()) {
			t.Errorf("%s: reason %q does not say why the keys are unreadable", tc.desc, p.Reason)
		}
	}
}

// TestReadableBy checks the permission walk against a real user (nobody)
// and real modes: certbot's 0700 live/ and archive/ keep nobody out, 0755
// lets it in.
func TestReadableBy(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make files owned by root that another user cannot read")
	}
	dir := t.TempDir() // 0700 (and its parent), owned by root
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	live := filepath.Join(dir, "live", "a.example.com")
	archive := filepath.Join(dir, "archive", "a.example.com")
	for _, d := range []string{live, archive} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	key := filepath.Join(archive, "privkey1.pem")
	if err := os.WriteFile(key, []byte("key"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(live, "privkey.pem")
	if err := os.Symlink("../../archive/a.example.com/privkey1.pem", link); err != nil {
		t.Fatal(err)
	}
	if err := readableBy("nobody", link); err != nil {
		t.Errorf("0755 dirs, 0644 key: %v", err)
	}
	if err := readableBy("root", link); err != nil {
		t.Errorf("root: %v", err)
	}
	if err := os.Chmod(filepath.Join(dir, "archive"), 0o700); err != nil { // certbot's mode
		t.Fatal(err)
	}
	err := readableBy("nobody", link)
	if err == nil || !strings.Contains(err.Error(), "archive") {
		t.Errorf("0700 archive/: err = %v, want one naming archive", err)
	}
	os.Chmod(filepath.Join(dir, "archive"), 0o755)
	os.Chmod(key, 0o600)
	if err := readableBy("nobody", link); err == nil || !strings.Contains(err.Error(), "cannot read") {
		t.Errorf("0600 key: err = %v, want cannot read", err)
	}
	if err := readableBy("no-such-user-certmgr", link); err == nil {
		t.Error("unknown user: no error")
	}
}

// TestLuaCacheSize: lua mode's per-worker cache holds every domain and a
// tenth more, at least 1,000, at most NGINX_CERT_CACHE_MAX.
func TestLuaCacheSize(t *testing.T) {
	t.Parallel()
	lua := NginxInfo{Version: Version{1, 22, 1}, Lua: true}
	for _, tc := range []struct{ max, domains, want int }{
		{0, 10, 1000}, {0, 50000, 55000}, {0, 100000, 110000}, {0, 200000, DefaultCertCacheMax}, {20000, 100000, 20000},
	} {
		p := Choose(Config{CertMode: CertModeAuto, CertCacheMax: tc.max}, lua, tc.domains, nil)
		if p.LuaCache != tc.want || p.CertCache != 0 {
			t.Errorf("max %d, %d domains: LuaCache %d CertCache %d; want %d and 0", tc.max, tc.domains, p.LuaCache, p.CertCache, tc.want)
		}
	}
}
