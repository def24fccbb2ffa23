package nginxconf

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"iter"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/midsummer/certmgr/domain"
)

// Domain is a name to serve and the certbot lineage holding its certificate.
type Domain struct {
	Name domain.Name
	// Lineage is the directory under LetsEncryptDir/live/; "" means Name,
	// certbot's (and acme's) name for a new lineage. Older certbot lineages
	// may be Name-NNNN (acme.Store.Find says which).
	Lineage string
}

// Domains is a helper for callers whose lineages are named after the domain.
func Domains(names ...domain.Name) []Domain {
	ds := make([]Domain, len(names))
	for i, n := range names {
		ds[i] = Domain{Name: n}
	}
	return ds
}

func (d Domain) lineage() string { return cmp.Or(d.Lineage, string(d.Name)) }

// Site is one domain to serve, as vetted by [Vetter].
type Site struct {
	Domain
	// CertSHA256 is the hex SHA-256 of the leaf certificate. In per-server
	// mode it is written into the file as a comment, so a renewed certificate
	// changes the file and Apply reports a change (nginx must reload to load
	// it). Empty is allowed (tests, or a caller that vets elsewhere).
	CertSHA256 string
}

// Render returns the configuration for sites written for nginx 1.22 (the
// configured mode; auto means per-server): deterministic (sorted by name; of
// a name listed twice the first by lineage, then fingerprint, is kept) and
// pure. It refuses any name that is not plain lower-case LDH labels, so that
// nothing but whole server names can reach the file. Use
// [Config.WithDefaults] values; Render applies them itself too.
func Render(cfg Config, sites []Site) ([]byte, error) {
	return RenderPlan(cfg, legacyPlan(cfg.CertMode), sites)
}

// RenderPlan is Render for the nginx and mode a [Plan] describes.
func RenderPlan(cfg Config, plan Plan, sites []Site) ([]byte, error) {
	var b bytes.Buffer
	if err := RenderTo(&b, cfg, plan, slices.Values(SortSites(sites))); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// SortSites returns sites sorted by name with each name once (of a name
// listed twice the first by lineage, then fingerprint), as RenderTo wants
// them.
func SortSites(sites []Site) []Site {
	sites = slices.Clone(sites)
	slices.SortFunc(sites, func(a, b Site) int {
		return cmp.Or(strings.Compare(string(a.Name), string(b.Name)),
			strings.Compare(a.lineage(), b.lineage()), strings.Compare(a.CertSHA256, b.CertSHA256))
	})
	return slices.CompactFunc(sites, func(a, b Site) bool { return a.Name == b.Name })
}

// RenderTo streams the configuration to w: its memory does not grow with the
// number of sites. sites must yield the same sites, sorted by name, each
// name once, every time it is called: the variable and lua modes go over them
// several times (once to check and size, then once per list in the file).
// Nothing is written when a site is refused.
func RenderTo(w io.Writer, cfg Config, plan Plan, sites iter.Seq[Site]) error {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("render nginx config: %w", err)
	}
	switch plan.Mode {
	case CertModePerServer, CertModeVariable:
	case CertModeLua:
		if err := checkLuaPath(cfg.LetsEncryptDir); err != nil {
			return fmt.Errorf("render nginx config: %w", err)
		}
	default:
		return fmt.Errorf("render nginx config: plan mode %q: want per-server, variable or lua", plan.Mode)
	}
	var st siteStats
	var prev domain.Name
	for s := range sites {
		if err := checkName(string(s.Name)); err != nil {
			return fmt.Errorf("render nginx config: %w", err)
		}
		if err := checkLineage(s.lineage()); err != nil {
			return fmt.Errorf("render nginx config: lineage of %s: %w", s.Name, err)
		}
		if !isHex(s.CertSHA256) {
			return fmt.Errorf("render nginx config: certificate fingerprint of %s is not hex", s.Name)
		}
		if st.count > 0 && s.Name <= prev {
			return fmt.Errorf("render nginx config: sites out of order or repeated: %s after %s", s.Name, prev)
		}
		prev = s.Name
		st.count++
		st.longest = max(st.longest, len(s.Name))
	}
	r := newRenderer(cfg, plan, w)
	r.header(st)
	r.common(st)
	switch plan.Mode {
	case CertModeVariable:
		r.variable(sites, st)
	case CertModeLua:
		r.lua(sites, st)
	default:
		r.defaultServer()
		for s := range sites {
			r.perServer(s)
		}
	}
	r.httpServer(sites, st)
	if err := r.w.Flush(); err != nil {
		return fmt.Errorf("render nginx config: %w", err)
	}
	return nil
}

// siteStats are what the file's head needs to know about all sites.
type siteStats struct {
	count, longest int
}

type renderer struct {
	cfg  Config
	plan Plan
	w    *bufio.Writer
	// Pieces repeated for every site, built once: the per-site loops only
	// copy strings (fmt per line costs 5x more at 10,000 domains).
	listenHTTPS   string // "    listen 8443 ssl http2;\n" or with "    http2 on;\n"
	listenDefault string // the same for the default server
	liveDir       string // "/etc/letsencrypt/live/"
	proxyRoot     string // location / { ... }
}

func newRenderer(cfg Config, plan Plan, w io.Writer) *renderer {
	r := &renderer{cfg: cfg, plan: plan}
	listen := func(def string) string {
		switch plan.HTTP2 {
		case HTTP2Listen:
			return fmt.Sprintf("    listen %s ssl http2%s;\n", cfg.listen(cfg.HTTPSPort), def)
		case HTTP2Directive:
			return fmt.Sprintf("    listen %s ssl%s;\n    http2 on;\n", cfg.listen(cfg.HTTPSPort), def)
		}
		return fmt.Sprintf("    listen %s ssl%s;\n", cfg.listen(cfg.HTTPSPort), def)
	}
	r.listenHTTPS, r.listenDefault = listen(""), listen(" default_server")
	r.liveDir = filepath.Join(cfg.LetsEncryptDir, "live") + "/"
	var b bytes.Buffer
	r.w = bufio.NewWriter(&b)
	r.proxyLocation("/")
	r.w.Flush()
	r.proxyRoot = b.String()
	r.w = bufio.NewWriterSize(w, 64<<10)
	return r
}

func (r *renderer) s(parts ...string) {
	for _, p := range parts {
		r.w.WriteString(p)
	}
}

func (r *renderer) p(format string, args ...any) { fmt.Fprintf(r.w, format, args...) }

func (r *renderer) header(st siteStats) {
	r.p("# Generated by certmgr from tenant_customdomain; certmgr rewrites this file.\n")
	r.p("# Do not edit: run `certmgr regen-nginx` instead.\n")
	r.p("# mode %s, %d domains\n", r.plan.Mode, st.count)
	if r.cfg.CertMode == CertModeAuto {
		r.p("# NGINX_CERT_MODE=auto: %s\n", r.plan.Reason)
	}
	r.p("\n")
}

func (r *renderer) common(st siteStats) {
	if r.cfg.HashMode == HashAuto {
		maxSize, bucket := hashSizes(st.count, st.longest)
		r.p("server_names_hash_max_size %d;\n", maxSize)
		r.p("server_names_hash_bucket_size %d;\n", bucket)
		if r.plan.Mode == CertModeVariable {
			r.p("map_hash_max_size %d;\n", maxSize)
			r.p("map_hash_bucket_size %d;\n", bucket)
		}
		r.p("\n")
	}
	r.p("map $http_upgrade $certmgr_connection_upgrade {\n")
	r.p("    default upgrade;\n")
	r.p("    ''      '';\n")
	r.p("}\n\n")
	r.p("upstream certmgr_upstream {\n")
	r.p("    server %s;\n", r.cfg.Upstream)
	r.p("    keepalive 32;\n")
	r.p("}\n\n")
}

func (r *renderer) defaultServer() {
	r.p("# Any name without a server below: 421 Misdirected Request.\n")
	r.p("server {\n")
	r.s(r.listenDefault)
	r.p("    server_name _;\n")
	r.p("    ssl_certificate %s;\n", r.cfg.DefaultCert)
	r.p("    ssl_certificate_key %s;\n", r.cfg.DefaultKey)
	r.p("    return 421;\n")
	r.p("}\n")
}

func (r *renderer) perServer(s Site) {
	r.s("\nserver {\n", r.listenHTTPS, "    server_name ", string(s.Name), ";\n")
	if s.CertSHA256 != "" {
		r.s("    # certificate sha256 ", s.CertSHA256, "\n")
	}
	r.s("    ssl_certificate ", r.liveDir, s.lineage(), "/fullchain.pem;\n")
	r.s("    ssl_certificate_key ", r.liveDir, s.lineage(), "/privkey.pem;\n")
	r.s(r.proxyRoot, "}\n")
}

// variable serves every name from one default server whose certificate
// paths are nginx variables: one map from the SNI to the lineage (the only
// list of names on the HTTPS port, so nginx parses each name once there, not
// in a map per file and a server_name list), two small maps from the lineage
// to its files, and 421 for a connection without a known SNI or a request
// whose Host is not the name the connection was opened for.
func (r *renderer) variable(sites iter.Seq[Site], st siteStats) {
	if st.count == 0 {
		r.defaultServer()
		return
	}
	r.p("# Certificates by SNI, only for known names: any other name (or none) maps to\n")
	r.p("# \"\", gets the default certificate and 421, and cannot make nginx open\n")
	r.p("# another path.\n")
	r.p("map $ssl_server_name $certmgr_lineage {\n")
	r.p("    default \"\";\n")
	for s := range sites {
		r.s("    ", string(s.Name), " ", s.lineage(), ";\n")
	}
	r.p("}\n")
	for _, m := range []struct{ v, file, def string }{
		{"$certmgr_ssl_certificate", "fullchain.pem", r.cfg.DefaultCert},
		{"$certmgr_ssl_certificate_key", "privkey.pem", r.cfg.DefaultKey},
	} {
		r.p("map $certmgr_lineage %s {\n", m.v)
		r.p("    \"\" %s;\n", m.def)
		r.s("    default ", r.liveDir, "$certmgr_lineage/", m.file, ";\n")
		r.p("}\n")
	}
	r.oneServerHead("$certmgr_ssl_certificate", "$certmgr_ssl_certificate_key")
	if r.plan.CertCache > 0 {
		r.p("    ssl_certificate_cache max=%d inactive=%s valid=%s;\n", r.plan.CertCache, certCacheInactive, nginxDuration(r.cfg.CertRecheck))
	}
	r.p("    if ($certmgr_lineage = \"\") {\n        return 421;\n    }\n")
	r.p("    if ($certmgr_misdirected) {\n        return 421;\n    }\n")
	r.proxyLocation("/")
	r.p("}\n")
}

// oneServerHead starts the one HTTPS server of variable and lua mode (the
// port's default), after the map that tells a request whose Host is not its
// connection's SNI.
func (r *renderer) oneServerHead(cert, key string) {
	r.p("# A request for another Host than the connection's SNI: 421, as nginx answers\n")
	r.p("# a Host without a server in per-server mode (never another tenant's site).\n")
	r.p("map \"$ssl_server_name $host\" $certmgr_misdirected {\n")
	r.p("    \"~*^(\\S+) \\1$\" \"\";\n")
	r.p("    default 1;\n")
	r.p("}\n")
	r.p("\nserver {\n")
	r.s(r.listenDefault)
	r.p("    server_name _;\n")
	r.p("    ssl_certificate %s;\n", cert)
	r.p("    ssl_certificate_key %s;\n", key)
}

func (r *renderer) proxyLocation(path string) {
	r.p("    location %s {\n", path)
	r.p("        proxy_pass http://certmgr_upstream;\n")
	r.p("        proxy_http_version 1.1;\n")
	r.p("        proxy_set_header Host $host;\n")
	r.p("        proxy_set_header X-Real-IP $remote_addr;\n")
	r.p("        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n")
	if path == PingPath {
		r.p("        proxy_set_header X-Forwarded-Proto http;\n")
	} else {
		r.p("        proxy_set_header X-Forwarded-Proto https;\n")
	}
	r.p("        proxy_set_header X-Forwarded-Host $host;\n")
	r.p("        proxy_set_header Upgrade $http_upgrade;\n")
	r.p("        proxy_set_header Connection $certmgr_connection_upgrade;\n")
	r.p("    }\n")
}

// httpServer answers HTTP-01 challenges for the custom names and redirects the
// rest to https. It is not the port's default_server (the platform's own
// server on that port, if any, stays the default), but when it is the only
// server there nginx makes it the default, so it also proxies the platform's
// health check PingPath instead of redirecting it.
func (r *renderer) httpServer(sites iter.Seq[Site], st siteStats) {
	r.p("\n# HTTP: ACME HTTP-01 challenges, the health check, and a redirect to https.\n")
	r.p("server {\n")
	r.p("    listen %s;\n", r.cfg.listen(r.cfg.HTTPPort))
	if st.count == 0 {
		r.p("    server_name _;\n")
	}
	for s := range sites {
		r.s("    server_name ", string(s.Name), ";\n")
	}
	r.p("    location ^~ /.well-known/acme-challenge/ {\n")
	if r.cfg.ACMEChallengeProxy != "" {
		// Fleet mode: the certmgr agent answers from the certificate store.
		r.p("        proxy_pass http://%s;\n", r.cfg.ACMEChallengeProxy)
		r.p("        proxy_set_header Host $host;\n")
	} else {
		r.p("        root %s;\n", r.cfg.ACMEWebroot)
		r.p("        default_type text/plain;\n")
		r.p("        try_files $uri =404;\n")
	}
	r.p("    }\n")
	r.proxyLocation(PingPath)
	r.p("    location / {\n")
	r.p("        return 301 https://$host$request_uri;\n")
	r.p("    }\n")
	r.p("}\n")
}

// hashSizes sizes server_names_hash (and map_hash) for the names so that
// nginx builds each hash on its first try. nginx stores each name as a
// pointer, a 2-byte length and the name, aligned to pointer size; a bucket
// also holds one terminating pointer. Above 10,000 slots nginx tries the last
// 1,000 sizes up to max_size, each a pass over every name, and when none fits
// it warns and builds an oversized hash: at 100,000 names that search was most
// of `nginx -t` (measured in bench/nginx). With max_size at 4 slots per name
// (a load of 1/4) and buckets that hold 8 of the longest name, the chance that
// any bucket overflows on the first try is negligible (Poisson, P(X>8) at 1/4
// is about 1e-10 per bucket). Buckets are allocated at their used length, so a
// large bucket_size costs no memory.
func hashSizes(count, longest int) (maxSize, bucket int) {
	elt := 8 + (longest+2+7)/8*8
	bucket = max(128, (8*elt+8+63)/64*64)
	maxSize = max(1024, (count*4+1023)/1024*1024)
	return maxSize, bucket
}

// checkName is the renderer's own defence: lower-case LDH labels of 1-63
// characters, not starting or ending with '-', at least two labels, at most
// 253 characters. package domain is stricter; this only guarantees that a
// name is one nginx word that cannot be a wildcard, regex or syntax.
func checkName(n string) error {
	bad := func(why string) error {
		return fmt.Errorf("refuse server name %s: %s", strconv.QuoteToASCII(truncate(n, 80)), why)
	}
	if n == "" || len(n) > 253 {
		return bad("empty or longer than 253 characters")
	}
	labels := 0
	for l := range strings.SplitSeq(n, ".") {
		labels++
		if l == "" || len(l) > 63 {
			return bad("empty label or label longer than 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return bad("label starts or ends with '-'")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return bad("character outside [a-z0-9.-]")
			}
		}
	}
	if labels < 2 {
		return bad("needs at least two labels")
	}
	return nil
}

// checkLineage accepts a certbot certificate name (--cert-name) as one path
// element nginx reads as one word: letters, digits, '.', '_' and '-',
// starting with a letter or digit, no "..", at most 250 characters (what
// acme.ParseLineageName accepts).
func checkLineage(n string) error {
	bad := func(why string) error {
		return fmt.Errorf("refuse lineage name %s: %s", strconv.QuoteToASCII(truncate(n, 80)), why)
	}
	if n == "" || len(n) > 250 {
		return bad("empty or longer than 250 characters")
	}
	if strings.Contains(n, "..") {
		return bad(`contains ".."`)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return bad("character outside [A-Za-z0-9._-], or not starting with a letter or digit")
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
