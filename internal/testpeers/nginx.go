package testpeers

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NginxOptions shape a test's nginx.
type NginxOptions struct {
	// Files are written into ConfDir before nginx starts (name → content).
	Files map[string]string
	// NoStart leaves nginx stopped (for tests that only run nginx -t).
	NoStart bool
	// Binary is the nginx to run; empty means Debian's /usr/sbin/nginx (or
	// the first nginx on PATH).
	Binary string
	// Lua makes the main config load Debian's lua module (and the NDK it
	// needs), from libnginx-mod-http-lua, a peer setup-peers installs.
	Lua bool
	// MainHTTP is written into the main config's http{}, before the include
	// of ConfDir (the platform's own directives).
	MainHTTP string
}

// luaModules are Debian's lua module and the NDK it needs, from the
// packages libnginx-mod-http-lua (which needs libnginx-mod-http-ndk),
// lua-resty-core and lua-resty-lrucache, built for Debian's nginx only.
var luaModules = []string{"/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so"}

// LuaMissing says which of Debian's lua module files is missing, nil when
// NginxOptions.Lua can load them.
func LuaMissing() error {
	for _, m := range luaModules {
		if _, err := os.Stat(m); err != nil {
			return fmt.Errorf("nginx lua module: %w (run make peers: it installs libnginx-mod-http-lua)", err)
		}
	}
	return nil
}

// NginxPeer is an nginx of the test's own: its own prefix, main config, pid
// file, logs and free ports. The main config includes ConfDir/*.conf inside
// http{}, where certmgr's generated file goes.
type NginxPeer struct {
	Binary    string
	Prefix    string // -p
	MainConf  string // -c
	ConfDir   string // included as ConfDir/*.conf in http{}
	Webroot   string // an ACME webroot a generated config can serve
	ErrorLog  string
	HTTPPort  int // free ports reserved for the generated config
	HTTPSPort int
	proc      *Process
}

// Nginx writes a main config into a fresh prefix and starts nginx in the
// foreground; it is stopped when the test ends.
func Nginx(t testing.TB, opts NginxOptions) *NginxPeer {
	t.Helper()
	bin := opts.Binary
	if bin == "" {
		bin = "/usr/sbin/nginx"
		if _, err := os.Stat(bin); err != nil {
			bin = lookBinary(t, "nginx")
		}
	}
	prefix := t.TempDir()
	p := &NginxPeer{
		Binary:    bin,
		Prefix:    prefix,
		MainConf:  filepath.Join(prefix, "nginx.conf"),
		ConfDir:   filepath.Join(prefix, "conf.d"),
		Webroot:   filepath.Join(prefix, "webroot"),
		ErrorLog:  filepath.Join(prefix, "error.log"),
		HTTPPort:  FreePort(t),
		HTTPSPort: FreePort(t),
	}
	for _, d := range []string{p.ConfDir, p.Webroot, filepath.Join(prefix, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("mkdir %s: %v", d, err)
		}
	}
	// t.TempDir is 0700: worker processes run as root so they can read it.
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n"
	}
	if opts.Lua {
		if err := LuaMissing(); err != nil {
			t.Fatal(err)
		}
		var load string
		for _, m := range luaModules {
			load += "load_module " + m + ";\n"
		}
		user = load + user
	}
	tmp := filepath.Join(prefix, "tmp")
	main := fmt.Sprintf(`%sworker_processes 1;
pid %s/nginx.pid;
error_log %s info;
events { worker_connections 1024; }
http {
    access_log %s/access.log;
    client_body_temp_path %s/body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fastcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;
%s    include %s/*.conf;
}
`, user, prefix, p.ErrorLog, prefix, tmp, tmp, tmp, tmp, tmp, opts.MainHTTP, p.ConfDir)
	if err := os.WriteFile(p.MainConf, []byte(main), 0o644); err != nil {
		t.Fatalf("write nginx.conf: %v", err)
	}
	for name, content := range opts.Files {
		if err := os.WriteFile(filepath.Join(p.ConfDir, name), []byte(content), 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	if opts.NoStart {
		return p
	}
	p.Start(t)
	return p
}

// Start starts nginx (in the foreground, as a child of the test) on the
// prefix; Nginx does this unless NoStart is set.
func (p *NginxPeer) Start(t testing.TB) {
	t.Helper()
	p.proc = startProcess(t, filepath.Join(p.Prefix, "stderr.log"), nil, p.Binary,
		"-p", p.Prefix, "-c", p.MainConf, "-e", p.ErrorLog, "-g", "daemon off;")
	// A SIGKILLed master leaves its workers behind: stop it the way nginx
	// stops (SIGTERM, workers exit with it) before the generic cleanup kills
	// what is left. Cleanups run last-registered first.
	proc := p.proc
	t.Cleanup(func() {
		_ = proc.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-proc.Exited():
		case <-time.After(10 * time.Second):
		}
	})
	if err := waitFor(10*time.Second, func() error {
		_, err := p.masterPID()
		return err
	}); err != nil {
		t.Fatalf("nginx did not start: %v\n%s", err, readTail(p.ErrorLog))
	}
}

// StopOnCleanup stops the nginx running on the prefix when t ends, whichever
// process started it (the pid file names the master): SIGTERM, then a wait
// of up to 20 s for the master and its workers to exit, so that no orphaned
// worker keeps its ports and memory after the test. Tests whose nginx was
// started by the code under test (an agent, a reload that re-executed the
// binary) call it; Start registers the same stop for its own process.
func (p *NginxPeer) StopOnCleanup(t testing.TB) {
	t.Cleanup(func() {
		b, err := os.ReadFile(filepath.Join(p.Prefix, "nginx.pid"))
		if err != nil {
			return
		}
		master, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return
		}
		workers, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", master, master))
		_ = syscall.Kill(master, syscall.SIGTERM)
		pids := append(strings.Fields(string(workers)), strconv.Itoa(master))
		deadline := time.Now().Add(20 * time.Second)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for _, pid := range pids {
			for !exited(pid) && time.Now().Before(deadline) {
				<-tick.C
			}
		}
	})
}

// exited reports whether process pid is gone or a zombie.
func exited(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// Kill stops nginx at once, as a crash would; its workers go with it.
func (p *NginxPeer) Kill() {
	if p.proc == nil {
		return
	}
	workers, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.proc.Cmd.Process.Pid, p.proc.Cmd.Process.Pid))
	p.proc.Kill()
	for _, f := range strings.Fields(string(workers)) {
		if pid, err := strconv.Atoi(f); err == nil && isNginxWorker(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Args are the flags that point an nginx command at this instance.
func (p *NginxPeer) Args() []string {
	return []string{"-p", p.Prefix, "-c", p.MainConf, "-e", p.ErrorLog}
}

// Test runs nginx -t on the current configuration and returns nginx's own
// message when it fails.
func (p *NginxPeer) Test(ctx context.Context) error {
	return p.run(ctx, "-t", "-q")
}

// Reload sends the reload signal through nginx -s reload.
func (p *NginxPeer) Reload(ctx context.Context) error {
	return p.run(ctx, "-s", "reload")
}

func (p *NginxPeer) run(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.Binary, append(p.Args(), args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nginx %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// ReloadAndWait reloads and waits until a new generation of worker processes
// has replaced the old one, so the new configuration is being served.
func (p *NginxPeer) ReloadAndWait(t testing.TB) {
	t.Helper()
	before := p.WorkerPIDs(t)
	if err := p.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.WaitWorkersReplaced(t, before)
}

// WaitWorkersReplaced waits until none of the before workers is serving.
func (p *NginxPeer) WaitWorkersReplaced(t testing.TB, before []int) {
	t.Helper()
	err := waitFor(15*time.Second, func() error {
		now := p.WorkerPIDs(t)
		if len(now) == 0 {
			return fmt.Errorf("no workers")
		}
		for _, pid := range now {
			if slices.Contains(before, pid) {
				return fmt.Errorf("old worker %d still running", pid)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("nginx reload: %v\n%s", err, readTail(p.ErrorLog))
	}
}

// WorkerPIDs lists the master's worker processes (children in /proc).
func (p *NginxPeer) WorkerPIDs(t testing.TB) []int {
	t.Helper()
	master, err := p.masterPID()
	if err != nil {
		t.Fatalf("nginx master: %v", err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", master, master))
	if err != nil {
		t.Fatalf("nginx workers: %v", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && isNginxWorker(pid) {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// MasterPID is the pid of the running master process.
func (p *NginxPeer) MasterPID(t testing.TB) int {
	t.Helper()
	pid, err := p.masterPID()
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func (p *NginxPeer) masterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(p.Prefix, "nginx.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func isNginxWorker(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte("worker process")) && !bytes.Contains(b, []byte("shutting down"))
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	return string(tail(b, 3000))
}
