// Command lua is an experiment for issue 17, not a certmgr mode: can an
// nginx that picks certificates in Lua (Debian's libnginx-mod-http-lua with
// lua-resty-core) serve 100,000 names at the handshake rate of a static
// per-server configuration in under 1 GB, where ssl_certificate_cache
// cannot (11.6 KB per cached domain)?
//
// It writes two configurations for Debian's nginx over the benchmark's
// certificate store (bench/nginx/scale.sh mints it): a static per-server
// baseline of -baseline names, and one server whose
// ssl_certificate_by_lua_block keeps each name's parsed leaf and key in a
// per-worker LRU and shares one parsed intermediate (the CA here) among all
// chains. It warms every name once, then measures full TLS 1.3 handshakes
// with a random SNI over all names in one-second windows alternating
// between the two nginx, and prints the rates and the workers' RSS.
//
//	bench/nginx/lua/run.sh                 # 100,000 names
//	bench/nginx/lua/run.sh -names 10000
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

func main() {
	home, _ := os.UserHomeDir()
	store := flag.String("store", filepath.Join(home, ".cache", "certmgr-bench", "nginx-store"), "certbot-layout store of bench names (minted by bench/nginx/scale.sh)")
	names := flag.Int("names", 100000, "names the Lua server serves (random SNI over all of them)")
	baseline := flag.Int("baseline", 2000, "names of the static per-server baseline")
	lru := flag.Int("lru", 0, "entries of the Lua LRU (default: every name)")
	windows := flag.Int("windows", 6, "one-second handshake windows per nginx")
	bin := flag.String("nginx", "/usr/sbin/nginx", "nginx binary (with the lua module available)")
	flag.Parse()
	if err := run(*store, *bin, *names, *baseline, max(*lru, *names), *windows); err != nil {
		fmt.Fprintln(os.Stderr, "lua bench:", err)
		os.Exit(1)
	}
}

func benchName(i int) string {
	return fmt.Sprintf("shop%06d.tenant-%d.example-store.com", i, i%97)
}

func run(store, bin string, names, baseline, lru, windows int) error {
	if _, err := os.Stat(filepath.Join(store, "live", benchName(names-1), "fullchain.pem")); err != nil {
		return fmt.Errorf("store %s lacks %d names (run CERTMGR_BENCH_SIZES=%d bench/nginx/scale.sh once to mint them): %w", store, names, names, err)
	}
	dir, err := os.MkdirTemp("", "certmgr-lua-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	luaPort, staticPort, err := freePorts()
	if err != nil {
		return err
	}
	luaConf := filepath.Join(dir, "lua.conf")
	staticConf := filepath.Join(dir, "static.conf")
	if err := os.WriteFile(luaConf, []byte(luaConfig(dir, store, luaPort, lru)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(staticConf, []byte(staticConfig(dir, store, staticPort, baseline)), 0o644); err != nil {
		return err
	}
	for _, c := range []string{staticConf, luaConf} {
		stop, err := start(bin, c)
		if err != nil {
			return err
		}
		defer stop()
	}
	luaAddr, staticAddr := "127.0.0.1:"+strconv.Itoa(luaPort), "127.0.0.1:"+strconv.Itoa(staticPort)
	if err := waitListening(luaAddr, staticAddr); err != nil {
		return err
	}

	cold, _ := alternate(staticAddr, baseline, luaAddr, names, 2)
	t0 := time.Now()
	if bad := testpeers.WarmNames(luaAddr, names, benchName, 4, servedWithChain); bad > 0 {
		return fmt.Errorf("%d handshakes failed while warming", bad)
	}
	warmed := time.Since(t0)
	rates, bad := alternate(staticAddr, baseline, luaAddr, names, windows)
	if bad > 0 {
		return fmt.Errorf("%d handshakes failed or presented another certificate", bad)
	}
	rss, err := workerRSS(filepath.Join(dir, "lua.pid"))
	if err != nil {
		return err
	}
	fmt.Println("| names | LRU entries | static per-server (names) handshakes/s | Lua handshakes/s cold / warm | % of static cold / warm | warm-up s | Lua worker RSS MB |")
	fmt.Println("|---:|---:|---|---|---|---:|---:|")
	fmt.Printf("| %d | %d | %.0f (%d) | %.0f / %.0f | %.0f%% / %.0f%% | %.0f | %.0f |\n", names, lru, rates[0], baseline,
		cold[1], rates[1], 100*cold[1]/cold[0], 100*rates[1]/rates[0], warmed.Seconds(), rss)
	return nil
}

// luaConfig is one TLS server whose certificates come from Lua: the SNI
// names a live/<name>/ lineage; on the first handshake for a name its leaf
// (the first certificate of fullchain.pem) and key are parsed and kept in
// the worker's LRU; the chain gets the one parsed intermediate, shared by
// reference (X509_up_ref) instead of parsed per name. A name without a
// lineage gets the default certificate.
func luaConfig(dir, store string, port, lru int) string {
	live := filepath.Join(store, "live")
	return fmt.Sprintf(`load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
%[1]sworker_processes 1;
pid %[2]s/lua.pid;
error_log %[2]s/lua-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[2]s;
    lua_package_path "/usr/share/lua/5.1/?.lua;;";
    init_by_lua_block {
        require "resty.core"
        local ffi = require "ffi"
        ffi.cdef[[
            int OPENSSL_sk_push(void *st, const void *data);
            void *OPENSSL_sk_value(const void *st, int i);
            int X509_up_ref(void *x);
        ]]
        local f = assert(io.open("%[3]s/ca.pem"))
        local pem = f:read("*a")
        f:close()
        INTERMEDIATE = assert(require("ngx.ssl").parse_pem_cert(pem))
        LRU = require("resty.lrucache").new(%[5]d)
    }
    server {
        listen 127.0.0.1:%[4]d ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate %[6]s/default.invalid/fullchain.pem;
        ssl_certificate_key %[6]s/default.invalid/privkey.pem;
        ssl_certificate_by_lua_block {
            local ssl = require "ngx.ssl"
            local ffi = require "ffi"
            local name = ssl.server_name()
            if not name or name:find("/", 1, true) or name:find("..", 1, true) then
                return
            end
            local e = LRU:get(name)
            if not e then
                local f = io.open("%[6]s/" .. name .. "/fullchain.pem")
                if not f then
                    return
                end
                local pem = f:read("*a")
                f:close()
                local cut = pem:find("-----BEGIN CERTIFICATE-----", 2, true)
                local chain = assert(ssl.parse_pem_cert(cut and pem:sub(1, cut - 1) or pem))
                local x = ffi.C.OPENSSL_sk_value(INTERMEDIATE, 0)
                ffi.C.X509_up_ref(x)
                ffi.C.OPENSSL_sk_push(chain, x)
                f = assert(io.open("%[6]s/" .. name .. "/privkey.pem"))
                local key = assert(ssl.parse_pem_priv_key(f:read("*a")))
                f:close()
                e = { chain, key }
                LRU:set(name, e)
            end
            ssl.clear_certs()
            assert(ssl.set_cert(e[1]))
            assert(ssl.set_priv_key(e[2]))
        }
        location / { return 200; }
    }
}
`, rootUser(), dir, store, port, lru, live)
}

func staticConfig(dir, store string, port, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `%sworker_processes 1;
pid %[2]s/static.pid;
error_log %[2]s/static-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[2]s;
    server_names_hash_max_size %[3]d;
    server_names_hash_bucket_size 512;
`, rootUser(), dir, max(1024, 4*n))
	for i := range n {
		d := benchName(i)
		live := filepath.Join(store, "live", d)
		fmt.Fprintf(&b, "    server { listen 127.0.0.1:%d ssl; ssl_protocols TLSv1.3; server_name %s; ssl_certificate %s/fullchain.pem; ssl_certificate_key %s/privkey.pem; location / { return 200; } }\n", port, d, live, live)
	}
	b.WriteString("}\n")
	return b.String()
}

// rootUser lets workers started by root read the store's 0600 keys.
func rootUser() string {
	if os.Geteuid() == 0 {
		return "user root;\n"
	}
	return ""
}

func start(bin, conf string) (stop func(), err error) {
	cmd := exec.Command(bin, "-c", conf, "-g", "daemon off;")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}, nil
}

func freePorts() (a, b int, err error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, err
		}
		ls = append(ls, l)
	}
	return ls[0].Addr().(*net.TCPAddr).Port, ls[1].Addr().(*net.TCPAddr).Port, nil
}

func waitListening(addrs ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, a := range addrs {
		for {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", a)
			if err == nil {
				c.Close()
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("nginx not listening on %s: %w", a, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// servedWithChain: nginx presented name's certificate and the shared
// intermediate (a chain of two).
func servedWithChain(st tls.ConnectionState, name string) bool {
	return len(st.PeerCertificates) == 2 && testpeers.Served(st, name)
}

// alternate returns handshakes per second of the static and the Lua nginx,
// measured in one-second windows taking turns.
func alternate(static string, staticNames int, lua string, luaNames, windows int) (rates [2]float64, bad int64) {
	var done [2]int64
	for range windows {
		for i, t := range []struct {
			addr string
			n    int
		}{{static, staticNames}, {lua, luaNames}} {
			o, b := testpeers.Handshakes(t.addr, t.n, benchName, 4, time.Second, servedWithChain)
			done[i] += o
			bad += b
		}
	}
	for i := range done {
		rates[i] = float64(done[i]) / float64(windows)
	}
	return rates, bad
}

// workerRSS is the RSS in MB of the worker processes of the nginx whose
// master wrote pidFile.
func workerRSS(pidFile string) (float64, error) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, err
	}
	master := strings.TrimSpace(string(b))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var kb float64
	found := false
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 2 || f[1] != master {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				var n float64
				if _, err := fmt.Sscan(v, &n); err == nil {
					kb += n
					found = true
				}
			}
		}
	}
	if !found {
		return 0, errors.New("no nginx worker found")
	}
	return kb / 1024, nil
}
