package nginxconf

import (
	"cmp"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// DefaultAutoVariableAbove is where auto mode leaves per-server mode on an
// nginx without ssl_certificate_cache. Measured here (docs/benchmarks.md,
// bench/nginx): at 1,000 per-server domains `nginx -t` takes 1.2 s and a
// reload by signal 1.5 s, so a new name is already served only after about
// 2.7 s; above that both grow by about 1.2 ms per domain (10,000: 12 s and
// 14 s, 526 MB in the master), while variable mode stays under 0.3 s and
// 22 MB. Below it per-server serves each full handshake about twice as fast
// (618 against 287 handshakes/s), so it stays the choice for small fleets.
const DefaultAutoVariableAbove = 1000

// DefaultCertCacheMax bounds ssl_certificate_cache's max= (entries: a
// certificate and a key per domain). Each nginx worker keeps its own cache;
// measured here (bench/nginx/scale.sh, nginx 1.30.4) a worker with every one
// of 100,000 domains cached holds 1,225 MB, about 11.6 KB per domain, and
// with this default (75,000 domains) 926 MB, under 1 GB. Past that, the
// least recently used names are read from disk again.
const DefaultCertCacheMax = 150000

// certCacheInactive is ssl_certificate_cache's inactive=: an entry unused
// for an hour is dropped (nginx's default, 10 s, would drop nearly every
// tenant of a large fleet between two of its visitors).
const certCacheInactive = "1h"

// DefaultCertRecheck is Config.CertRecheck: a cached certificate older than
// ten minutes is checked against its file at its next handshake, so a
// renewal (due 30 days before expiry) is served within ten minutes without a
// reload. Not shorter: with 100,000 names and traffic spread over all of
// them, a name comes back about once a minute, and a one-minute recheck
// (a readlink per handshake in lua mode) cost 10% of the handshake rate
// there (bench/nginx/scale.sh: 1,405–1,433 against 1,592 handshakes/s).
const DefaultCertRecheck = 10 * time.Minute

// nginxDuration writes d (whole seconds) as nginx and lua read it: "1m" for
// a minute, else seconds.
func nginxDuration(d time.Duration) string {
	if d%time.Minute == 0 {
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// Plan is how one regeneration renders: the mode, the nginx features the
// file uses, and why.
type Plan struct {
	// Mode is per-server, variable or lua, never auto.
	Mode CertMode
	// HTTP2 is how server blocks turn on HTTP/2 for this nginx.
	HTTP2 HTTP2Style
	// CertCache is ssl_certificate_cache's max= (variable mode on nginx ≥
	// 1.27.4), 0 for none.
	CertCache int
	// LuaCache is the number of names each worker keeps parsed in lua mode.
	LuaCache int
	// Rule is which of Choose's rules decided (a closed set, for /metrics);
	// Reason says why in words, for the log.
	Rule   PlanRule
	Reason string
}

// PlanRule names the rule that chose a Plan's mode.
type PlanRule string

const (
	RuleConfigured     PlanRule = "configured"      // NGINX_CERT_MODE was not auto
	RuleLua            PlanRule = "lua"             // nginx loads the lua module: lua
	RuleCertCache      PlanRule = "cert-cache"      // nginx has ssl_certificate_cache: variable
	RuleSmallFleet     PlanRule = "small-fleet"     // few domains: per-server
	RuleLargeFleet     PlanRule = "large-fleet"     // many domains, no cache: variable
	RuleKeysUnreadable PlanRule = "keys-unreadable" // variable wanted, workers cannot read keys: per-server
	RuleNoNginxInfo    PlanRule = "no-nginx-info"   // Render without nginx -V
)

// legacyPlan is what Render does without an nginx to look at: the
// configured mode (auto means per-server) written for nginx 1.22.
func legacyPlan(mode CertMode) Plan {
	if mode != CertModeVariable && mode != CertModeLua {
		mode = CertModePerServer
	}
	return Plan{Mode: mode, HTTP2: HTTP2Listen, Rule: RuleNoNginxInfo, Reason: "no nginx -V information"}
}

// Choose decides how to render domains domains for the nginx info describes.
// cfg gives CertMode, AutoVariableAbove and CertCacheMax (defaults applied
// here). auto picks:
//
//   - lua when the main configuration loads nginx's lua module (or nginx has
//     it compiled in, as OpenResty does): handshakes run at the rate of
//     per-server blocks (each worker parses a name's certificate once and
//     shares intermediates), and neither nginx -t nor a reload parses a
//     certificate (bench/nginx: 94% of the per-server rate at 100,000 names,
//     where variable mode with ssl_certificate_cache reached 69%), unless
//     the main configuration has an init_by_lua of its own (lua mode's file
//     needs the one an http{} may have);
//   - variable with ssl_certificate_cache when nginx has the cache (≥ 1.27.4):
//     handshakes use certificates parsed once per worker, and neither nginx -t
//     nor a reload parses a single certificate;
//   - otherwise per-server up to variableAbove domains (handshakes cost the
//     least), variable above (nginx -t, reloads and memory stay flat).
//
// keysReadable is whether nginx's worker processes can read the private keys
// (variable mode has them read at handshake by the workers, not by the
// master); when they cannot, auto keeps per-server mode and says so.
// Choose is pure.
func Choose(cfg Config, info NginxInfo, domains int, keysReadable error) Plan {
	cfg = cfg.WithDefaults()
	mode, variableAbove := cfg.CertMode, cfg.AutoVariableAbove
	p := Plan{Mode: mode, HTTP2: info.HTTP2()}
	cache := func() {
		if info.CertificateCache() {
			// One entry for the certificate and one for the key of each
			// domain (each worker has its own cache).
			p.CertCache = cacheEntries(cfg.CertCacheMax, 2, domains)
		}
	}
	switch mode {
	case CertModePerServer:
		p.Rule, p.Reason = RuleConfigured, "NGINX_CERT_MODE=per-server"
		return p
	case CertModeVariable:
		p.Rule, p.Reason = RuleConfigured, "NGINX_CERT_MODE=variable"
		cache()
		return p
	case CertModeLua:
		p.Rule, p.Reason = RuleConfigured, "NGINX_CERT_MODE=lua"
		p.LuaCache = luaCache(cfg.CertCacheMax, domains)
		return p
	}
	switch {
	case info.Lua && !info.LuaInitTaken && keysReadable == nil:
		p.Mode, p.Rule = CertModeLua, RuleLua
		p.Reason = fmt.Sprintf("nginx %s loads the lua module: each worker parses a certificate once and shares intermediates, nginx -t and reloads parse none", info.Version)
		p.LuaCache = luaCache(cfg.CertCacheMax, domains)
	case info.CertificateCache() && keysReadable == nil:
		p.Mode, p.Rule = CertModeVariable, RuleCertCache
		p.Reason = fmt.Sprintf("nginx %s has ssl_certificate_cache: certificates are parsed once per worker, never by nginx -t or a reload", info.Version)
		cache()
	case domains <= variableAbove:
		p.Mode, p.Rule = CertModePerServer, RuleSmallFleet
		p.Reason = fmt.Sprintf("%d domains, at most %d: per-server serves full handshakes fastest and reloads stay short", domains, variableAbove)
	case keysReadable != nil:
		p.Mode, p.Rule = CertModePerServer, RuleKeysUnreadable
		p.Reason = fmt.Sprintf("%d domains would want variable mode, but nginx's workers cannot read the keys: %v", domains, keysReadable)
	default:
		p.Mode, p.Rule = CertModeVariable, RuleLargeFleet
		p.Reason = fmt.Sprintf("%d domains, more than %d, and nginx %s has no ssl_certificate_cache (1.27.4): variable mode keeps nginx -t, reloads and memory flat", domains, variableAbove, info.Version)
	}
	if info.Lua && info.LuaInitTaken {
		p.Reason += " (not lua: the main configuration has an init_by_lua of its own, and lua mode's file needs the one http{} may have)"
	}
	return p
}

// luaCache sizes each worker's cache of parsed certificates in lua mode: one
// entry per domain (a lineage holds the certificate and its key).
func luaCache(max_, domains int) int { return cacheEntries(max_, 1, domains) }

// cacheEntries sizes a per-worker certificate cache of perDomain entries for
// each domain: room for every domain and a tenth more (so that a few new
// names never evict), in steps of 1,000, at least 1,000, at most max_.
func cacheEntries(max_, perDomain, domains int) int {
	return min(max_, max(1000, (perDomain*domains+domains/10+999)/1000*1000))
}

// workerUser is who nginx's worker processes run as: the main
// configuration's `user` directive or the compiled-in --user (default
// nobody) when the master runs as root, and the master's own user otherwise.
// certmgr cannot see the master's user before nginx runs; it assumes the
// master runs as certmgr's own user, as in the manifests (deploy/: both
// containers run as uid 101, where nginx ignores `user`).
func workerUser(mainConf string, info NginxInfo) string {
	if os.Geteuid() != 0 {
		return "" // same user as certmgr: certmgr read the keys itself
	}
	name := info.User
	if main, err := os.ReadFile(mainConf); err == nil {
		if ds, err := directives(string(main)); err == nil {
			for _, d := range ds {
				if d.name == "user" && !d.block && len(d.args) >= 1 {
					name = d.args[0]
				}
			}
		}
	}
	return cmp.Or(name, "nobody")
}

// readableBy reports (as an error saying where it fails) whether the user
// named can read path: search permission on every directory on the way, of
// the path as written and of the file its symlinks lead to, and read
// permission on the file. "" is certmgr's own user, which is checked by
// opening the file. root reads everything.
func readableBy(username, path string) error {
	if username == "" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		return f.Close()
	}
	u, err := user.Lookup(username)
	if err != nil {
		return fmt.Errorf("nginx worker user %s: %w", username, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	if uid == 0 {
		return nil
	}
	var gids []uint32
	if gs, err := u.GroupIds(); err == nil {
		for _, g := range gs {
			if n, err := strconv.Atoi(g); err == nil {
				gids = append(gids, uint32(n))
			}
		}
	}
	if n, err := strconv.Atoi(u.Gid); err == nil {
		gids = append(gids, uint32(n))
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	for _, p := range []string{path, real} {
		for dir := filepath.Dir(p); ; dir = filepath.Dir(dir) {
			if err := permitted(dir, uint32(uid), gids, 1); err != nil {
				return fmt.Errorf("user %s cannot enter %s: %w", username, dir, err)
			}
			if dir == "/" || dir == "." {
				break
			}
		}
	}
	if err := permitted(real, uint32(uid), gids, 4); err != nil {
		return fmt.Errorf("user %s cannot read %s: %w", username, real, err)
	}
	return nil
}

// permitted checks one permission bit (4 read, 1 search) of path for uid and
// gids by its mode bits (ACLs are not looked at).
func permitted(path string, uid uint32, gids []uint32, bit fs.FileMode) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	m := st.Mode().Perm()
	switch {
	case sys.Uid == uid:
		m >>= 6
	case slices.Contains(gids, sys.Gid):
		m >>= 3
	}
	if m&bit == 0 {
		return fmt.Errorf("mode %s, owner %d:%d", st.Mode().Perm(), sys.Uid, sys.Gid)
	}
	return nil
}
