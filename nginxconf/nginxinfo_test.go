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
			out:         "nginx version: openresty/1.25.3.2\nconfigure arguments: --prefix=/usr/local/openresty/nginx --with-http_ssl_module --with-http_v2_module --user=nobody\n",
			wantVersion: Version{1, 25, 3}, wantHTTP2: HTTP2Directive, has: []string{"http_ssl", "http_v2"},
			wantUser: "nobody", wantPrefix: "/usr/local/openresty/nginx",
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
