package nginxconf

import (
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"
)

// luaChunk bounds each Lua long string of names in the file. nginx reads a
// *_by_lua_block through its configuration buffer (4 KB), and a long string
// is one token there: a longer one fails with "Lua code block missing the
// closing long bracket". A line is at most 253+1+250+1 bytes.
const luaChunk = 3000

// lua serves every name from one default server whose certificate is set in
// Lua. The names and their lineages are data in long strings, read into one
// table by init_by_lua in the master (so the workers share it); a worker
// parses a lineage's leaf and key at its first handshake and keeps them in
// an LRU of plan.LuaCache lineages, with one parsed copy of each distinct
// intermediate chain shared by all leaves that end in it. A cached lineage
// older than Config.CertRecheck is checked against its fullchain.pem at its
// next handshake (the target of certbot's symlink, one readlink; a file
// that is not a symlink is read and its CRC compared), so a renewal is served
// within that time without changing the file or reloading (which would
// empty every worker's cache). Unknown names keep the default certificate
// and get 421, as in variable mode; a request whose Host is not its SNI gets
// 421 too; a known name whose files cannot be loaded fails its handshake.
//
// nginx -t neither compiles nor runs the Lua code (lua-nginx-module skips
// init_by_lua when testing), so the code is a fixed text and only checked
// names and lineages reach it, each inside a long string that none of them
// can close (checkStructure's luaData).
func (r *renderer) lua(sites iter.Seq[Site], st siteStats) {
	if st.count == 0 {
		r.defaultServer()
		return
	}
	size := r.plan.LuaCache
	if size <= 0 {
		size = luaCache(r.cfg.CertCacheMax, st.count)
	}
	r.p("# Certificates chosen in Lua (NGINX_CERT_MODE=lua): the table of names is\n")
	r.p("# built once in the nginx master; each worker parses a lineage's certificate\n")
	r.p("# and key at its first handshake, keeps up to %d of them, and checks a\n", size)
	r.p("# cached one against its file every %s (renewals need no reload).\n", nginxDuration(r.cfg.CertRecheck))
	r.p("init_by_lua_block {\n")
	r.p("    local names, count = {}, 0 -- SNI name -> lineage\n")
	r.p("    local function add(s)\n")
	r.p("        for name, lineage in s:gmatch(\"(%%S+) ?(%%S*)\\n\") do\n")
	r.p("            names[name] = lineage ~= \"\" and lineage or name\n")
	r.p("            count = count + 1\n")
	r.p("        end\n")
	r.p("    end\n")
	r.p("    -- name[ lineage, when not the name]\n")
	// Written straight through: a long string is closed before the line
	// that would take it past luaChunk, and a new one opened.
	open, n := false, 0
	for s := range sites {
		lineage := s.lineage()
		if lineage == string(s.Name) {
			lineage = "" // the name itself: left out
		}
		line := len(s.Name) + 1
		if lineage != "" {
			line += 1 + len(lineage)
		}
		if open && n+line > luaChunk {
			r.s("]==]\n")
			open = false
		}
		if !open {
			r.s("    add[==[\n")
			open, n = true, 0
		}
		r.s(string(s.Name))
		if lineage != "" {
			r.s(" ", lineage)
		}
		r.s("\n")
		n += line
	}
	if open {
		r.s("]==]\n")
	}
	r.s("    local live = [==[", r.liveDir, "]==]\n")
	r.p("    local cache_size, recheck = %d, %d\n", size, r.cfg.CertRecheck/time.Second)
	r.s(luaInit)
	r.p("}\n")
	r.oneServerHead(r.cfg.DefaultCert, r.cfg.DefaultKey)
	r.s(luaHandshake)
	r.p("    if ($certmgr_misdirected) {\n        return 421;\n    }\n")
	r.s(luaUnknown)
	r.proxyLocation("/")
	r.p("}\n")
}

// checkLuaPath refuses a directory that could close the long string it is
// written into.
func checkLuaPath(dir string) error {
	if strings.Contains(dir, "]==]") || strings.ContainsAny(dir, "\n\r") {
		return fmt.Errorf("LetsEncryptDir (LETSENCRYPT_DIR) %s: cannot be written into lua mode's file", strconv.Quote(dir))
	}
	if len(dir) > luaChunk {
		return fmt.Errorf("LetsEncryptDir (LETSENCRYPT_DIR) is %d bytes long: lua mode's file holds at most %d (nginx reads a Lua string of its configuration into a 4 KB buffer)", len(dir), luaChunk)
	}
	return nil
}

// luaInit is the rest of init_by_lua_block, after the names: the worker's
// cache and get, which returns a lineage's parsed certificate chain and key
// (or nil, why, and whether that was logged already; the handshake then
// fails). The cache is a plain table when every lineage fits in it,
// else lua-resty-lrucache (without it, the plain table emptied when full).
const luaInit = `    local ffi = require "ffi"
    for _, decl in ipairs({
        "int OPENSSL_sk_num(const void *st);",
        "void *OPENSSL_sk_value(const void *st, int i);",
        "int OPENSSL_sk_push(void *st, const void *data);",
        "int X509_up_ref(void *x);",
        "void X509_free(void *x);",
        "int X509_check_private_key(const void *x, const void *k);",
        "void ERR_clear_error(void);",
        "long readlink(const char *path, char *buf, size_t size);",
    }) do
        pcall(ffi.cdef, decl) -- already declared by other code: fine
    end
    local C = ffi.C
    -- When every lineage fits (at most one per name), a plain table: no
    -- least-recently-used order to keep up at each handshake. Otherwise
    -- lua-resty-lrucache, or without it the plain table, emptied when full.
    local cache
    local ok, lrucache = pcall(require, "resty.lrucache")
    if ok and count > cache_size then
        cache = lrucache.new(cache_size)
    else
        local t, n = {}, 0
        cache = {
            get = function(_, k) return t[k] end,
            set = function(_, k, v)
                if t[k] == nil then
                    if n >= cache_size then t, n = {}, 0 end
                    n = n + 1
                end
                t[k] = v
            end,
        }
    end
    -- What a renewal changes: the target of certbot's live/ symlink
    -- (archive/<lineage>/fullchainN.pem), one system call; nil when the
    -- file is not a symlink, and then its content's CRC is compared at each
    -- recheck. An archive file rewritten under the same name (a lineage
    -- deleted and issued again from version 1) keeps its link: the content
    -- is compared every sixth recheck too.
    local verify = recheck * 6
    local linkbuf = ffi.new("char[?]", 4096)
    local function target(path)
        local n = tonumber(C.readlink(path, linkbuf, 4096))
        if n > 0 and n < 4096 then
            return ffi.string(linkbuf, n)
        end
    end
    local function read(path)
        local f, err = io.open(path, "rb")
        if not f then
            return nil, err
        end
        local s
        s, err = f:read("*a")
        f:close()
        return s, err
    end
    -- One parsed copy of each intermediate chain (Let's Encrypt has a
    -- handful), shared by reference by every leaf that ends in it.
    local chains, nchains = {}, 0
    local function load(dir, pem)
        local ssl = require "ngx.ssl"
        -- The leaf is the first certificate, after whatever text precedes
        -- it (openssl x509 writes subject= and issuer= lines).
        local begin = "-----BEGIN CERTIFICATE-----"
        local first = pem:find(begin, 1, true)
        if not first then
            return nil, dir .. "fullchain.pem: no certificate in it"
        end
        local cut = pem:find(begin, first + 1, true)
        local cert, err = ssl.parse_pem_cert(pem:sub(first, cut and cut - 1 or -1))
        if not cert then
            return nil, dir .. "fullchain.pem: " .. err
        end
        local kpem
        kpem, err = read(dir .. "privkey.pem")
        if not kpem then
            return nil, err
        end
        local key
        key, err = ssl.parse_pem_priv_key(kpem)
        if not key then
            return nil, dir .. "privkey.pem: " .. err
        end
        if C.X509_check_private_key(C.OPENSSL_sk_value(cert, 0), key) ~= 1 then
            C.ERR_clear_error() -- a queued error would fail this handshake
            return nil, dir .. "privkey.pem does not belong to fullchain.pem (a renewal half done?)"
        end
        if cut then
            local rest = pem:sub(cut)
            local shared = chains[rest]
            if not shared then
                shared, err = ssl.parse_pem_cert(rest)
                if not shared then
                    return nil, dir .. "fullchain.pem: " .. err
                end
                if nchains < 64 then
                    chains[rest], nchains = shared, nchains + 1
                end
            end
            for i = 0, C.OPENSSL_sk_num(shared) - 1 do
                local x = C.OPENSSL_sk_value(shared, i)
                C.X509_up_ref(x)
                if C.OPENSSL_sk_push(cert, x) == 0 then
                    C.X509_free(x)
                    C.ERR_clear_error()
                    return nil, "out of memory"
                end
            end
        end
        return { cert, key }
    end
    -- get returns a lineage's entry: { cert, key, link target, recheck at,
    -- content CRC, content compared again at }, or nil, the error and
    -- whether it was already reported (a lineage that failed to load is
    -- tried again after a second, not at every handshake).
    local function get(lineage)
        local e = cache:get(lineage)
        local now = ngx.now()
        if e and now < e[4] then
            if not e[1] then
                return nil, e[2], true
            end
            return e
        end
        if e and not e[1] then
            e = nil
        end
        local dir = live .. lineage .. "/"
        local stamp = target(dir .. "fullchain.pem")
        if e and stamp and stamp == e[3] and now < e[6] then
            e[4] = now + recheck -- unchanged
            return e
        end
        local pem, err = read(dir .. "fullchain.pem")
        local crc = pem and ngx.crc32_long(pem)
        if e and pem and crc == e[5] then
            e[3], e[4], e[6] = stamp, now + recheck, now + verify -- unchanged
            return e
        end
        local fresh
        if pem then
            fresh, err = load(dir, pem)
        end
        if not fresh then
            if e then
                e[4] = now + 1 -- keep serving what we have; look again soon
                ngx.log(ngx.WARN, "certmgr: keeping the cached certificate of ", lineage, ": ", err)
                return e
            end
            cache:set(lineage, { false, err, nil, now + 1 })
            return nil, err
        end
        fresh[3], fresh[4], fresh[5], fresh[6] = stamp, now + recheck, crc, now + verify
        cache:set(lineage, fresh)
        return fresh
    end
    package.loaded.certmgr_sni = { names = names, get = get }
`

// luaHandshake picks the certificate for the SNI (compared in lower case,
// as nginx compares server names): a known name's lineage from the worker's
// cache, loaded on a miss; an unknown name keeps the default certificate
// (and its requests get 421). A known name whose certificate cannot be
// loaded fails its handshake, as it does in variable mode, rather than
// reach the tenant's site under the default certificate.
const luaHandshake = `    ssl_certificate_by_lua_block {
        local c = package.loaded.certmgr_sni
        local ssl = require "ngx.ssl"
        local name = ssl.server_name()
        if name and name:find("%u") then
            name = name:lower()
        end
        local lineage = name and c.names[name]
        if not lineage then
            return
        end
        local e, err, reported = c.get(lineage)
        if not e then
            if not reported then
                ngx.log(ngx.ERR, "certmgr: certificate of ", name, ": ", err)
            end
            return ngx.exit(ngx.ERROR)
        end
        local ok
        ok, err = ssl.clear_certs()
        if ok then
            ok, err = ssl.set_cert(e[1])
        end
        if ok then
            ok, err = ssl.set_priv_key(e[2])
        end
        if not ok then
            ngx.log(ngx.ERR, "certmgr: certificate of ", name, ": ", err)
            return ngx.exit(ngx.ERROR)
        end
    }
`

// luaUnknown answers 421 to a request on a connection whose SNI is not a
// served name (none, or one that got the default certificate).
const luaUnknown = `    rewrite_by_lua_block {
        local name = ngx.var.ssl_server_name
        if not name or not package.loaded.certmgr_sni.names[name:lower()] then
            return ngx.exit(421)
        end
    }
`
