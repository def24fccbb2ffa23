package nginxconf

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Version is an nginx release number.
type Version struct{ Major, Minor, Patch int }

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// AtLeast reports whether v is o or newer.
func (v Version) AtLeast(o Version) bool {
	return cmpVersion(v, o) >= 0
}

func cmpVersion(a, b Version) int {
	switch {
	case a.Major != b.Major:
		return a.Major - b.Major
	case a.Minor != b.Minor:
		return a.Minor - b.Minor
	}
	return a.Patch - b.Patch
}

// Versions at which nginx changed what the generated file may say.
var (
	// VersionHTTP2Directive: `http2 on;` replaced `listen … http2`, which
	// newer releases still accept with a deprecation warning (1.25.1).
	VersionHTTP2Directive = Version{1, 25, 1}
	// VersionCertificateCache: ssl_certificate_cache keeps certificates and
	// keys named by variables parsed between handshakes (1.27.4).
	VersionCertificateCache = Version{1, 27, 4}
)

// NginxInfo is what `nginx -V` says about a binary.
type NginxInfo struct {
	Version Version
	// Modules are the statically compiled modules named by --with-<m>_module
	// ("http_ssl", "http_v2", …); modules built as =dynamic are in Dynamic
	// because they need a load_module to be present.
	Modules []string
	Dynamic []string
	// Without are the standard modules left out with --without-<m>_module.
	Without []string
	// Compiled-in paths (empty when not given at build time).
	Prefix, ConfPath, PidPath string
	// User is the compiled-in worker user (--user), "" for nginx's default
	// (nobody).
	User string
	// Lua is whether nginx runs Lua: the lua module (lua-nginx-module) is
	// compiled in (--add-module, as in OpenResty) or the main configuration
	// loads it (load_module, directly or through a top-level include such as
	// Debian's modules-enabled/*.conf). ParseNginxV sees only the first; the
	// Applier adds the second when it reads the main configuration.
	Lua bool
	// LuaInitTaken is whether the main configuration (or a file it
	// includes, other than the generated one) has its own init_by_lua*,
	// which lua mode's file would duplicate. Set by the Applier.
	LuaInitTaken bool
}

// Has reports whether module m ("http_v2") is compiled in statically.
func (i NginxInfo) Has(m string) bool { return slices.Contains(i.Modules, m) }

// CertificateCache reports whether nginx has ssl_certificate_cache.
func (i NginxInfo) CertificateCache() bool { return i.Version.AtLeast(VersionCertificateCache) }

// HTTP2 says how the generated file turns on HTTP/2 for this nginx.
func (i NginxInfo) HTTP2() HTTP2Style {
	switch {
	case !i.Has("http_v2"):
		return HTTP2None
	case i.Version.AtLeast(VersionHTTP2Directive):
		return HTTP2Directive
	}
	return HTTP2Listen
}

// HTTP2Style is how the generated server blocks turn on HTTP/2.
type HTTP2Style string

const (
	// HTTP2Listen: `listen 8443 ssl http2;` (nginx before 1.25.1).
	HTTP2Listen HTTP2Style = "listen"
	// HTTP2Directive: `listen 8443 ssl;` and `http2 on;` (1.25.1 and later).
	HTTP2Directive HTTP2Style = "directive"
	// HTTP2None: nginx has no http_v2 module; HTTPS is served as HTTP/1.1.
	HTTP2None HTTP2Style = "none"
)

// ParseNginxV reads the output of `nginx -V` (nginx prints it on stderr). It
// needs the version line; everything else is optional, since a hand-built
// nginx may have no configure arguments at all.
func ParseNginxV(out string) (NginxInfo, error) {
	var info NginxInfo
	found := false
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "nginx version:"); ok {
			v, err := parseVersionWord(strings.TrimSpace(rest))
			if err != nil {
				return NginxInfo{}, fmt.Errorf("parse nginx -V: %w", err)
			}
			info.Version, found = v, true
			continue
		}
		if rest, ok := strings.CutPrefix(line, "configure arguments:"); ok {
			info.parseArgs(rest)
		}
	}
	if !found {
		return NginxInfo{}, fmt.Errorf("parse nginx -V: no \"nginx version:\" line in %q", truncate(out, 200))
	}
	return info, nil
}

// parseVersionWord reads "nginx/1.22.1", "nginx/1.27.4 (nginx-plus-r34)",
// "openresty/1.25.3.1" or "angie/1.6.0 (nginx/1.25.4)"-like words: the first
// name/x.y.z whose name is nginx wins, else the first one.
func parseVersionWord(s string) (Version, error) {
	var first *Version
	for f := range strings.FieldsSeq(strings.NewReplacer("(", " ", ")", " ").Replace(s)) {
		name, num, ok := strings.Cut(f, "/")
		if !ok {
			continue
		}
		v, err := parseVersion(num)
		if err != nil {
			continue
		}
		if name == "nginx" {
			return v, nil
		}
		if first == nil {
			first = &v
		}
	}
	if first != nil {
		return *first, nil
	}
	return Version{}, fmt.Errorf("no version number in %q", s)
}

func parseVersion(s string) (Version, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return Version{}, fmt.Errorf("version %q: want major.minor[.patch]", s)
	}
	var n [3]int
	for i := 0; i < 3 && i < len(parts); i++ {
		v, err := strconv.Atoi(parts[i])
		if err != nil || v < 0 {
			return Version{}, fmt.Errorf("version %q: want numbers", s)
		}
		n[i] = v
	}
	return Version{n[0], n[1], n[2]}, nil
}

// parseArgs reads the configure arguments. Values may be quoted with single
// quotes (--with-cc-opt='-g -O2 …'), which may hold spaces.
func (i *NginxInfo) parseArgs(s string) {
	for _, arg := range shellWords(s) {
		name, val, _ := strings.Cut(arg, "=")
		switch name {
		case "--prefix":
			i.Prefix = val
		case "--conf-path":
			i.ConfPath = val
		case "--pid-path":
			i.PidPath = val
		case "--user":
			i.User = val
		case "--add-module":
			i.Lua = i.Lua || isLuaModule(val)
		}
		if m, ok := strings.CutPrefix(name, "--without-"); ok {
			i.Without = append(i.Without, strings.TrimSuffix(m, "_module"))
			continue
		}
		m, ok := strings.CutPrefix(name, "--with-")
		if !ok || strings.HasSuffix(m, "-opt") || strings.HasSuffix(m, "-path") {
			continue
		}
		switch {
		case strings.HasPrefix(m, "cc") || strings.HasPrefix(m, "cpp") || m == "debug" || m == "compat" ||
			m == "threads" || m == "file-aio" || m == "pcre" || m == "pcre-jit" || m == "openssl" || m == "zlib" || m == "ld-opt":
			continue
		}
		m = strings.TrimSuffix(m, "_module")
		if val == "dynamic" {
			i.Dynamic = append(i.Dynamic, m)
		} else {
			i.Modules = append(i.Modules, m)
		}
	}
}

// isLuaModule reports whether a module source directory or shared object
// (ngx_http_lua_module.so) is lua-nginx-module.
func isLuaModule(path string) bool {
	base := filepath.Base(strings.TrimRight(path, "/"))
	return strings.HasPrefix(base, "ngx_http_lua_module") || strings.HasPrefix(base, "lua-nginx-module") || strings.HasPrefix(base, "ngx_lua-")
}

// mainLua reads the main configuration text (from dir, where nginx resolves
// its relative paths) and the files its includes name, and theirs (up to
// eight levels), except ours (the generated file, however it is reached):
// loads is whether it loads the lua module (a load_module directive in the
// main context: in it or in a file a main-context include names, as
// Debian's modules-enabled/*.conf), initTaken whether any of them has its
// own init_by_lua* in http{} (where it may appear once, and lua mode's file
// needs it; stream{} has its own, and comments do not count). Unreadable
// includes are skipped: nginx -t reports them. A file the tokenizer cannot
// read is searched as text for init_by_lua and counts as not loading the
// module.
func mainLua(main, dir, ours string) (loads, initTaken bool) {
	oursInfo, _ := os.Stat(ours)
	// walk reads text whose top-level directives are in the block ctx
	// ("" for the main context, "http" in http{}).
	var walk func(text, ctx string, level int)
	walk = func(text, ctx string, level int) {
		ds, err := directives(text)
		if err != nil {
			initTaken = initTaken || strings.Contains(text, "init_by_lua")
			return
		}
		if level > 8 {
			return
		}
		var blocks []string // the enclosing blocks' names, outermost first
		for _, d := range ds {
			blocks = blocks[:min(d.depth, len(blocks))]
			in := ctx
			if len(blocks) > 0 {
				in = blocks[len(blocks)-1]
			}
			if d.block {
				blocks = append(blocks, d.name)
			}
			if strings.HasPrefix(d.name, "init_by_lua") && in == "http" {
				initTaken = true
			}
			if len(d.args) != 1 || d.block {
				continue
			}
			switch d.name {
			case "load_module":
				loads = loads || in == "" && isLuaModule(d.args[0])
			case "include":
				files, _ := includeGlob(includePath(dir, d.args[0]), filepath.Glob)
				for _, f := range files {
					if st, err := os.Stat(f); err != nil || (oursInfo != nil && os.SameFile(st, oursInfo)) {
						continue
					}
					b, err := os.ReadFile(f)
					if err != nil {
						continue
					}
					walk(string(b), in, level+1)
				}
			}
		}
	}
	walk(main, "", 0)
	return loads, initTaken
}

// shellWords splits s at spaces outside single or double quotes and removes
// the quotes, as the shell did when nginx's configure received them.
func shellWords(s string) []string {
	var words []string
	var b strings.Builder
	var quote byte
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				b.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				words = append(words, b.String())
				b.Reset()
				in = false
			}
		default:
			b.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, b.String())
	}
	return words
}
