package nginxconf

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestParseNginxV reads `nginx -V` outputs captured from real binaries
// (testdata/nginx-V: Debian bookworm's package; nginx 1.28.3 built from the
// public source with the configure line shown in it) and a few version
// lines of other builds.
func TestParseNginxV(t *testing.T) {
	t.Parallel()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata", "nginx-V", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		desc        string
		out         string
		wantVersion Version
		wantHTTP2   HTTP2Style
		wantCache   bool
		has         []string // static modules that must be found
		hasNot      []string // modules that must not count as static
		wantConf    string
		wantPid     string
		wantUser    string
		wantPrefix  string
		wantLua     bool
	}{
		{
			desc: "Debian bookworm nginx 1.22.1", out: read("debian-bookworm-1.22.1.txt"),
			wantVersion: Version{1, 22, 1}, wantHTTP2: HTTP2Listen,
			has:      []string{"http_ssl", "http_v2", "stream_ssl"},
			hasNot:   []string{"stream", "mail", "http_geoip", "cc-opt", "debug", "threads", "pcre-jit"},
			wantConf: "/etc/nginx/nginx.conf", wantPid: "/run/nginx.pid", wantPrefix: "/usr/share/nginx",
		},
		{
			desc: "nginx 1.28.3 built from source", out: read("source-1.28.3.txt"),
			wantVersion: Version{1, 28, 3}, wantHTTP2: HTTP2Directive, wantCache: true,
			has:        []string{"http_ssl", "http_v2"},
			hasNot:     []string{"http_gzip", "threads"},
			wantPrefix: "/opt/nginx-1.28.3",
		},
		{
			desc: "nginx 1.30.4 (stable) built from source", out: read("source-1.30.4.txt"),
			wantVersion: Version{1, 30, 4}, wantHTTP2: HTTP2Directive, wantCache: true,
			has:        []string{"http_ssl", "http_v2"},
			hasNot:     []string{"threads"},
			wantPrefix: "/opt/nginx-1.30.4",
		},
		{
			desc: "NGINX Plus version line", out: "nginx version: nginx/1.27.4 (nginx-plus-r34-p1)\n",
			wantVersion: Version{1, 27, 4}, wantHTTP2: HTTP2None, wantCache: true,
		},
		{
			desc:        "OpenResty names its own version first",
			out:         "nginx version: openresty/1.25.3.2\nconfigure arguments: --prefix=/usr/local/openresty/nginx --with-http_ssl_module --with-http_v2_module --user=nobody --add-module=../ngx_devel_kit-0.3.3 --add-module=../ngx_lua-0.10.26 --add-module=../lua-resty-core\n",
			wantVersion: Version{1, 25, 3}, wantHTTP2: HTTP2Directive, has: []string{"http_ssl", "http_v2"},
			wantUser: "nobody", wantPrefix: "/usr/local/openresty/nginx", wantLua: true,
		},
		{
			desc:        "just before the certificate cache, quoted arguments with spaces",
			out:         "nginx version: nginx/1.27.3\nbuilt by gcc 12.2.0\nconfigure arguments: --with-cc-opt='-g -O2 --with-http_v2_module' --with-http_ssl_module --user=nginx --conf-path=/etc/nginx/nginx.conf\n",
			wantVersion: Version{1, 27, 3}, wantHTTP2: HTTP2None, has: []string{"http_ssl"}, hasNot: []string{"http_v2"},
			wantUser: "nginx", wantConf: "/etc/nginx/nginx.conf",
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			info, err := ParseNginxV(tc.out)
			if err != nil {
				t.Fatal(err)
			}
			if info.Version != tc.wantVersion {
				t.Errorf("Version = %v, want %v", info.Version, tc.wantVersion)
			}
			if got := info.HTTP2(); got != tc.wantHTTP2 {
				t.Errorf("HTTP2 = %s, want %s", got, tc.wantHTTP2)
			}
			if got := info.CertificateCache(); got != tc.wantCache {
				t.Errorf("CertificateCache = %v, want %v", got, tc.wantCache)
			}
			for _, m := range tc.has {
				if !info.Has(m) {
					t.Errorf("Has(%s) = false; modules %v", m, info.Modules)
				}
			}
			for _, m := range tc.hasNot {
				if info.Has(m) {
					t.Errorf("Has(%s) = true; modules %v", m, info.Modules)
				}
			}
			if info.Lua != tc.wantLua {
				t.Errorf("Lua = %v, want %v", info.Lua, tc.wantLua)
			}
			if info.ConfPath != tc.wantConf || info.PidPath != tc.wantPid || info.User != tc.wantUser || info.Prefix != tc.wantPrefix {
				t.Errorf("paths = conf %q pid %q user %q prefix %q; want %q %q %q %q",
					info.ConfPath, info.PidPath, info.User, info.Prefix, tc.wantConf, tc.wantPid, tc.wantUser, tc.wantPrefix)
			}
		})
	}
	t.Run("dynamic modules", func(t *testing.T) {
		info, _ := ParseNginxV(read("debian-bookworm-1.22.1.txt"))
		if !slices.Contains(info.Dynamic, "stream") || !slices.Contains(info.Dynamic, "http_geoip") {
			t.Errorf("Dynamic = %v, want stream and http_geoip", info.Dynamic)
		}
	})
}

func TestParseNginxVRefuses(t *testing.T) {
	t.Parallel()
	for _, out := range []string{
		"",
		"nginx: [emerg] open() \"/etc/nginx/nginx.conf\" failed\n",
		"nginx version: nginx/\n",
		"nginx version: nginx/one.two\n",
		"nginx version: 1\n",
	} {
		if info, err := ParseNginxV(out); err == nil {
			t.Errorf("ParseNginxV(%q) = %+v, want an error", out, info)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v, o Version
		want bool
	}{
		{Version{1, 27, 4}, VersionCertificateCache, true},
		{Version{1, 27, 3}, VersionCertificateCache, false},
		{Version{1, 28, 0}, VersionCertificateCache, true},
		{Version{2, 0, 0}, VersionCertificateCache, true},
		{Version{1, 22, 1}, VersionHTTP2Directive, false},
		{Version{1, 25, 1}, VersionHTTP2Directive, true},
	}
	for _, tc := range tests {
		if got := tc.v.AtLeast(tc.o); got != tc.want {
			t.Errorf("%v.AtLeast(%v) = %v", tc.v, tc.o, got)
		}
	}
}

// TestMainLua: the lua module counts when the main configuration loads it,
// itself or through a main-context include (Debian's modules-enabled), and
// not when the text only appears inside http{} or nowhere; an init_by_lua of
// the platform's own, anywhere but in the generated file, is seen.
func TestMainLua(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "modules-enabled", "10-mod-http-ndk.conf"), "load_module modules/ndk_http_module.so;\n")
	writeFile(t, filepath.Join(dir, "modules-enabled", "50-mod-http-lua.conf"), "load_module modules/ngx_http_lua_module.so;\n")
	writeFile(t, filepath.Join(dir, "modules-enabled", ".50-hidden-lua.conf"), "load_module modules/ngx_http_lua_module.so;\n")
	writeFile(t, filepath.Join(dir, "other", "50-mod-stream.conf"), "load_module modules/ngx_stream_module.so;\n")
	writeFile(t, filepath.Join(dir, "conf.d", "lua.conf"), "# load_module modules/ngx_http_lua_module.so;\nlua_package_path x;\n")
	for _, tc := range []struct {
		desc, main string
		want       bool
	}{
		{"Debian layout, absolute include", "include " + dir + "/modules-enabled/*.conf;\nevents {}\nhttp {}\n", true},
		{"relative include", "include modules-enabled/*.conf;\nevents {}\n", true},
		{"load_module itself", "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\nevents {}\n", true},
		{"OpenResty-style module path", "load_module modules/ngx_http_lua_module-0.10.26.so;\n", true},
		{"other modules only", "include other/*.conf;\nload_module modules/ndk_http_module.so;\n", false},
		{"hidden files are not included", "include " + dir + "/modules-enabled/.50-*.conf;\n", true},
		{"lua text inside http only", "events {}\nhttp { include conf.d/*.conf; }\n", false},
		{"no modules", "events {}\nhttp {}\n", false},
	} {
		if got, taken := mainLua(tc.main, dir, ""); got != tc.want || taken {
			t.Errorf("%s: mainLua = %v, %v; want %v, false", tc.desc, got, taken, tc.want)
		}
	}
	// The glob skips hidden files unless the pattern names them.
	if got, _ := mainLua("include "+dir+"/modules-enabled/*-hidden-lua.conf;\n", dir, ""); got {
		t.Error("a * glob matched a hidden file")
	}
	// init_by_lua: the platform's own in an included file counts, certmgr's
	// own file (ours) does not.
	writeFile(t, filepath.Join(dir, "sites", "app.conf"), "init_by_lua_block { require \"app\" }\n")
	writeFile(t, filepath.Join(dir, "sites", "custom-domains.conf"), "init_by_lua_block { local names = {} }\n")
	main := "include modules-enabled/*.conf;\nevents {}\nhttp { include sites/*.conf; }\n"
	if loads, taken := mainLua(main, dir, filepath.Join(dir, "sites", "custom-domains.conf")); !loads || !taken {
		t.Errorf("platform's init_by_lua in sites/app.conf: mainLua = %v, %v; want true, true", loads, taken)
	}
	os.Remove(filepath.Join(dir, "sites", "app.conf"))
	if loads, taken := mainLua(main, dir, filepath.Join(dir, "sites", "custom-domains.conf")); !loads || taken {
		t.Errorf("only certmgr's own init_by_lua: mainLua = %v, %v; want true, false", loads, taken)
	}
	if _, taken := mainLua("http { init_by_lua 'x = {}'; }\n", dir, ""); !taken {
		t.Error("init_by_lua in the main file itself not seen")
	}
	// Only an init_by_lua in http{} is taken: not a comment, not stream{}'s
	// (the stream lua module has its own).
	for _, other := range []string{
		"http {\n    # init_by_lua_block { require 'old' }\n}\n",
		"stream { init_by_lua_block { require 'proxy' } }\nhttp {}\n",
	} {
		if _, taken := mainLua(other, dir, ""); taken {
			t.Errorf("mainLua(%q) says init_by_lua is taken", other)
		}
	}
	// A main configuration with Lua of its own (no ';' after its last
	// statement) still parses: the modules it includes are found.
	withLua := "include modules-enabled/*.conf;\nevents {}\nhttp {\n" + platformLua + "}\n"
	if loads, taken := mainLua(withLua, dir, ""); !loads || taken {
		t.Errorf("main configuration with Lua blocks: mainLua = %v, %v; want true, false", loads, taken)
	}
	// certmgr's file reached through a symlink (sites-enabled ->
	// sites-available) is still certmgr's.
	if err := os.Symlink(filepath.Join(dir, "sites", "custom-domains.conf"), filepath.Join(dir, "sites", "link.conf")); err != nil {
		t.Fatal(err)
	}
	if _, taken := mainLua(main, dir, filepath.Join(dir, "sites", "custom-domains.conf")); taken {
		t.Error("certmgr's own file, through a symlink, counted as the platform's init_by_lua")
	}
	// The platform's init_by_lua two includes down.
	writeFile(t, filepath.Join(dir, "nested", "a.conf"), "include nested/b/*.conf;\n")
	writeFile(t, filepath.Join(dir, "nested", "b", "c.conf"), "init_by_lua_file /srv/app/init.lua;\n")
	if _, taken := mainLua("http { include nested/a.conf; }\n", dir, ""); !taken {
		t.Error("init_by_lua two includes down not seen")
	}
	// This machine's Debian nginx, with libnginx-mod-http-lua installed by
	// setup-peers.
	debian, err := os.ReadFile("/etc/nginx/nginx.conf")
	if err != nil {
		t.Fatalf("Debian's nginx.conf: %v (run make peers)", err)
	}
	if loads, _ := mainLua(string(debian), "/etc/nginx", "/etc/nginx/conf.d/custom-domains.conf"); !loads {
		t.Error("/etc/nginx/nginx.conf: the lua module is not seen as loaded (is libnginx-mod-http-lua installed?)")
	}
}
