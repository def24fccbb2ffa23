package testpeers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// setupHint is the command that installs and starts every peer.
const setupHint = "run scripts/setup-peers.sh (or make test) to install and start it"

// missing reports a peer the test cannot run without: fatal in CI, where every
// peer must be present, a skip elsewhere.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + "; " + setupHint
	if os.Getenv("CI") != "" {
		t.Fatalf("peer missing in CI: %s", msg)
	}
	t.Skip(msg)
}

// lookBinary finds a peer's executable on PATH or in the Go bin directory,
// where `go install` puts Pebble.
func lookBinary(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	candidates := []string{}
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		candidates = append(candidates, gobin+"/"+name)
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		candidates = append(candidates, string(trimNL(gopath))+"/bin/"+name)
	}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, home+"/go/bin/"+name)
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c
		}
	}
	missing(t, "%s not found on PATH or in the Go bin directory", name)
	return ""
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// FreePort returns a TCP port on 127.0.0.1 that no other test process on this
// machine has been handed and that nothing listens on now.
//
// Ports come from below the kernel's ephemeral range (32768 and up), so an
// outgoing connection (to Redis, Postgres, Pebble...) can never take the port
// between this call and the peer binding it; and each port is reserved across
// the test binaries that go test runs at once by an flock held until the
// process exits. Binding :0 had both races: an nginx reload failed once with
// "bind() to 0.0.0.0:36821 failed (98: Address already in use)".
func FreePort(t testing.TB) int {
	t.Helper()
	return reservePort(t, false)
}

// freeUDPPort returns a port free for both UDP and TCP on 127.0.0.1 (DNS
// servers listen on both), reserved as FreePort's are.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	return reservePort(t, true)
}

const (
	portLow  = 20000
	portHigh = 32767 // below the default ephemeral range, 32768-60999
)

var (
	portMu    sync.Mutex
	portLocks = map[int]*os.File{} // held open for the life of the process
)

func reservePort(t testing.TB, udp bool) int {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "certmgr-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatalf("reserve port: %v", err)
	}
	portMu.Lock()
	defer portMu.Unlock()
	for range 200 {
		port := portLow + rand.IntN(portHigh-portLow+1)
		if _, held := portLocks[port]; held {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			t.Fatalf("reserve port: %v", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close() // another test process holds it
			continue
		}
		if !portFree(port, udp) {
			f.Close()
			continue
		}
		portLocks[port] = f
		return port
	}
	t.Fatalf("no free port between %d and %d", portLow, portHigh)
	return 0
}

// portFree reports whether port can be bound on every address (nginx listens
// on 0.0.0.0) and, with udp, for UDP on 127.0.0.1 too.
func portFree(port int, udp bool) bool {
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return false
	}
	l.Close()
	if udp {
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		u.Close()
	}
	return true
}

// startProcess runs a peer in the background, its output in logPath, and kills
// it when the test ends.
func startProcess(t testing.TB, logPath string, env []string, name string, args ...string) *Process {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create %s: %v", logPath, err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// A group of its own, so Kill also ends its children (Celery's prefork
	// pool, nginx's workers).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	p := &Process{Cmd: cmd, done: done}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("%s output:\n%s", name, tail(b, 4000))
			}
		}
	})
	return p
}

// Process is a peer process started by a helper.
type Process struct {
	Cmd  *exec.Cmd
	done chan struct{}
}

// Kill stops the process at once (SIGKILL) and waits for it to be gone.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.done }

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// waitFor polls cond until it succeeds or the timeout passes.
func waitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	delay := 10 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %s: %w", timeout, err)
		}
		time.Sleep(delay)
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// waitTCP waits until something accepts connections on addr.
func waitTCP(addr string, timeout time.Duration) error {
	return waitFor(timeout, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// httpDo sends one request to a peer's management API and fails on non-2xx.
func httpDo(ctx context.Context, client *http.Client, req *http.Request) error {
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return errors.New(resp.Status)
	}
	return nil
}
