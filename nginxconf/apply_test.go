package nginxconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/internal/testpeers"
)

// TestApplyRefusedCandidate forces a candidate that nginx -t refuses (a
// domain rendered without its certificate, as if vetting had been bypassed)
// while a client keeps requesting a live domain: the live file never changes,
// not even during the test, nginx is not reloaded, the client never fails,
// and the error carries nginx's own message.
func TestApplyRefusedCandidate(t *testing.T) {
	t.Parallel()
	f := setup(t, CertModePerServer)
	writeLineage(t, f.le, "live.example.com", leafOpts{})
	f.regenerate(t, "live.example.com")
	liveBefore, err := os.ReadFile(f.cfg.ConfPath)
	if err != nil {
		t.Fatal(err)
	}
	workersBefore := f.workers(t)

	// A client looping on the live domain for the whole fault.
	stop := make(chan struct{})
	var requests, failures atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := f.get("live.example.com", "live.example.com", "/", true)
			requests.Add(1)
			if err != nil || r.status != 200 {
				failures.Add(1)
				firstFailure.CompareAndSwap(nil, []any{r.status, err})
			}
		}
	})
	// A watcher reading the live file as fast as it can during Apply.
	var liveChanged atomic.Bool
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if b, err := os.ReadFile(f.cfg.ConfPath); err != nil || !bytes.Equal(b, liveBefore) {
				liveChanged.Store(true)
			}
		}
	})

	broken, err := Render(f.cfg, sites("live.example.com", "nocert.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		changed, err := f.gen.Applier().Apply(context.Background(), broken)
		var te *TestError
		if !errors.As(err, &te) {
			t.Fatalf("Apply = %v, %v; want a *TestError", changed, err)
		}
		if changed {
			t.Error("Apply reported a change for a refused candidate")
		}
		if !strings.Contains(te.Output, "cannot load certificate") || !strings.Contains(te.Output, "nocert.example.com") {
			t.Errorf("error does not carry nginx's message: %q", te.Output)
		}
		if b, err := os.ReadFile(te.RejectedPath); err != nil || !bytes.Equal(b, broken) {
			t.Errorf("refused candidate not kept at %s: %v", te.RejectedPath, err)
		}
	}
	// Someone reloads during the fault: nginx reads the live file, still good.
	if err := f.reloader.Reload(context.Background()); err != nil {
		t.Fatalf("reload during the fault: %v", err)
	}
	f.peer.WaitWorkersReplaced(t, workersBefore)
	// Let the client see the reloaded nginx too.
	target := requests.Load() + 20
	testpeers.Until(t, 10*time.Second, "20 more requests after the reload", func() bool { return requests.Load() >= target || failures.Load() > 0 })
	close(stop)
	wg.Wait()

	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d requests to the live domain failed during the fault; first: %v", n, requests.Load(), firstFailure.Load())
	}
	if liveChanged.Load() {
		t.Error("the live file changed while a refused candidate was tested")
	}
	if _, err := os.Stat(f.gen.Applier().CandidatePath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("candidate left behind: %v", err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(f.peer.MainConf), ".certmgr-test-*")); len(leftovers) > 0 {
		t.Errorf("temporary main configs left behind: %v", leftovers)
	}
	t.Logf("%d requests during the fault, none failed", requests.Load())
}

// TestApplyUnchangedAndLastGood: the same content writes nothing; a new one
// goes live and the previous file is kept as last-good.
func TestApplyUnchangedAndLastGood(t *testing.T) {
	t.Parallel()
	f := setup(t, CertModeVariable) // variable mode: nginx -t loads no certificate
	a := f.gen.Applier()
	ctx := context.Background()
	first, _ := Render(f.cfg, sites("a.example.com"))
	second, _ := Render(f.cfg, sites("a.example.com", "b.example.com"))

	if changed, err := a.Apply(ctx, first); err != nil || !changed {
		t.Fatalf("first Apply = %v, %v", changed, err)
	}
	st1, _ := os.Stat(f.cfg.ConfPath)
	if changed, err := a.Apply(ctx, first); err != nil || changed {
		t.Fatalf("same content: Apply = %v, %v; want unchanged", changed, err)
	}
	st2, _ := os.Stat(f.cfg.ConfPath)
	if !os.SameFile(st1, st2) || !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("unchanged content rewrote the live file")
	}
	if changed, err := a.Apply(ctx, second); err != nil || !changed {
		t.Fatalf("second Apply = %v, %v", changed, err)
	}
	if b, _ := os.ReadFile(f.cfg.ConfPath); !bytes.Equal(b, second) {
		t.Error("live file is not the second content")
	}
	if b, _ := os.ReadFile(a.LastGoodPath()); !bytes.Equal(b, first) {
		t.Error("last-good is not the first content")
	}
	// nginx -t through the real main conf, which globs conf.d/*.conf, must
	// not see the helper files: they would duplicate every server.
	if err := f.peer.Test(ctx); err != nil {
		t.Errorf("nginx -t of the real main conf with the helper files beside the live one: %v", err)
	}
}

// TestApplyNotIncluded: a live path the main configuration does not include
// cannot be proven, so nothing is written.
func TestApplyNotIncluded(t *testing.T) {
	t.Parallel()
	peer := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	cfg := Config{
		ConfPath: filepath.Join(t.TempDir(), "custom-domains.conf"), Binary: peer.Binary,
		MainConf: peer.MainConf, Prefix: peer.Prefix, HTTPSPort: peer.HTTPSPort, HTTPPort: peer.HTTPPort,
	}
	a, err := NewApplier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Apply(context.Background(), []byte("# nothing\n"))
	if !errors.Is(err, ErrNotIncluded) {
		t.Fatalf("Apply = %v; want ErrNotIncluded", err)
	}
	if _, err := os.Stat(cfg.ConfPath); !errors.Is(err, os.ErrNotExist) {
		t.Error("Apply wrote a file it could not prove")
	}
}

func TestLocalReloaderTimeout(t *testing.T) {
	t.Parallel()
	// A stand-in nginx that hangs: the reload must give up and say so.
	bin := filepath.Join(t.TempDir(), "nginx")
	writeFile(t, bin, "#!/bin/sh\nexec sleep 30\n")
	os.Chmod(bin, 0o755)
	r, err := NewLocalReloader(Config{Binary: bin, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = r.Reload(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timed out after 200ms") {
		t.Errorf("Reload = %v; want a timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Reload took %s", d)
	}
}

func TestLocalReloaderNoNginx(t *testing.T) {
	t.Parallel()
	peer := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	r, err := NewLocalReloader(Config{Binary: peer.Binary, MainConf: peer.MainConf, Prefix: peer.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "nginx.pid") {
		t.Errorf("Reload with nginx stopped = %v; want nginx's message about its pid file", err)
	}
}

// blockingReloader counts reloads; each waits for a value on release.
type blockingReloader struct {
	calls   atomic.Int64
	started chan struct{}
	release chan error
}

func (b *blockingReloader) Reload(ctx context.Context) error {
	b.calls.Add(1)
	b.started <- struct{}{}
	return <-b.release
}

func TestCoalesce(t *testing.T) {
	t.Parallel()
	br := &blockingReloader{started: make(chan struct{}, 10), release: make(chan error)}
	c := Coalesce(br.Reload)
	ctx := context.Background()

	errs := make(chan error, 10)
	go func() { errs <- c.Reload(ctx) }()
	<-br.started // the first reload runs
	for range 5 {
		go func() { errs <- c.Reload(ctx) }()
	}
	testpeers.Until(t, 10*time.Second, "the coalescer's state", func() bool { return c.waiting() == 6 })
	br.release <- nil // the first ends; the five share one more
	<-br.started
	fail := errors.New("reload failed")
	br.release <- fail
	var got []error
	for range 6 {
		got = append(got, <-errs)
	}
	if n := br.calls.Load(); n != 2 {
		t.Errorf("%d reloads for 6 requests; want 2", n)
	}
	if slices.Index(got, nil) < 0 || len(slices.DeleteFunc(slices.Clone(got), func(e error) bool { return e == nil })) != 5 {
		t.Errorf("errors %v; want one nil (first round) and five of the second round", got)
	}
	// Idle again: the next request reloads at once.
	go func() { errs <- c.Reload(ctx) }()
	<-br.started
	br.release <- nil
	if err := <-errs; err != nil || br.calls.Load() != 3 {
		t.Errorf("after idle: %v, %d calls", err, br.calls.Load())
	}
}

func TestCoalesceCallerGivesUp(t *testing.T) {
	t.Parallel()
	br := &blockingReloader{started: make(chan struct{}, 10), release: make(chan error)}
	c := Coalesce(br.Reload)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() { errs <- c.Reload(ctx) }()
	<-br.started
	cancel()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Errorf("Reload = %v; want context.Canceled", err)
	}
	br.release <- nil // the reload itself still finishes
}

// TestHashSizedForTenThousand: with 10,000 names nginx builds its name and
// map hashes from the sizes the file sets, without the "could not build
// optimal" warning it gives with its defaults. (Variable mode: nginx -t loads
// no certificate, so the test is quick.)
func TestHashSizedForTenThousand(t *testing.T) {
	t.Parallel()
	peer := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	var ss []Site
	for i := range 10000 {
		ss = append(ss, Site{Domain: Domain{Name: domain.Name(fmt.Sprintf("shop%05d.tenant-%d.example-store.com", i, i%97))}})
	}
	for _, hash := range []HashMode{HashAuto, HashOff} {
		out, err := Render(Config{CertMode: CertModeVariable, HashMode: hash, HTTPSPort: peer.HTTPSPort, HTTPPort: peer.HTTPPort}, ss)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(peer.ConfDir, "custom-domains.conf"), string(out))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		msg, err := exec.CommandContext(ctx, peer.Binary, append(peer.Args(), "-t")...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("%s: nginx -t: %v\n%s", hash, err, msg)
		}
		warned := strings.Contains(string(msg), "could not build optimal")
		if hash == HashAuto && warned {
			t.Errorf("nginx warns about the hash sizes the file sets:\n%s", msg)
		}
		if hash == HashOff && !warned {
			t.Errorf("without the sizes nginx should warn; the test no longer shows the difference:\n%s", msg)
		}
	}
}

func TestLocalReloaderSignal(t *testing.T) {
	t.Parallel()
	f := setup(t, CertModeVariable)
	cfg := f.cfg
	cfg.ReloadMethod = ReloadSignal
	r, err := NewLocalReloader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := f.workers(t)
	if err := r.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitReplaced(t, f.peer, before, 30*time.Second)
}

// TestLocalReloaderSignalChecksTheProcess: a stale pid file naming another
// process (here the test itself, which SIGHUP would kill) is refused.
func TestLocalReloaderSignalChecksTheProcess(t *testing.T) {
	t.Parallel()
	peer := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "nginx.pid")
	writeFile(t, pidFile, fmt.Sprintf("%d\n", os.Getpid()))
	main := filepath.Join(dir, "nginx.conf")
	writeFile(t, main, "pid "+pidFile+";\nevents {}\nhttp {}\n")
	// auto must refuse too, not fall back to nginx -s reload, which would
	// signal the process named by the pid file without looking.
	for _, m := range []ReloadMethod{ReloadSignal, ReloadAuto} {
		r, err := NewLocalReloader(Config{Binary: peer.Binary, MainConf: main, ReloadMethod: m})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Reload(context.Background())
		if err == nil || !strings.Contains(err.Error(), "not an nginx master") {
			t.Errorf("%s: Reload = %v; want a refusal to signal a process that is not nginx", m, err)
		}
		if r.commands != 0 {
			t.Errorf("%s: ran nginx -s reload", m)
		}
	}
}

// TestLocalReloaderAuto: with the master's pid file where the main
// configuration says, auto reloads by signal (no nginx -s reload, which
// parses everything again); with the pid directive in an included file,
// which certmgr does not follow, it falls back to nginx -s reload, and nginx
// still reloads.
func TestLocalReloaderAuto(t *testing.T) {
	t.Parallel()
	t.Run("signal", func(t *testing.T) {
		t.Parallel()
		f := setup(t, CertModeVariable) // ReloadMethod left to its default
		writeLineage(t, f.le, "a.example.com", leafOpts{})
		writeLineage(t, f.le, "b.example.com", leafOpts{})
		f.regenerate(t, "a.example.com")
		f.regenerate(t, "a.example.com", "b.example.com")
		if f.reloader.signals != 2 || f.reloader.commands != 0 {
			t.Errorf("reloads by signal %d, by command %d; want 2 and 0", f.reloader.signals, f.reloader.commands)
		}
	})
	t.Run("pid in an include", func(t *testing.T) {
		t.Parallel()
		peer := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
		main, err := os.ReadFile(peer.MainConf)
		if err != nil {
			t.Fatal(err)
		}
		pidLine := "pid " + peer.Prefix + "/nginx.pid;\n"
		if !strings.Contains(string(main), pidLine) {
			t.Fatalf("test nginx.conf has no %q", pidLine)
		}
		inc := filepath.Join(peer.Prefix, "pid.inc")
		writeFile(t, inc, pidLine)
		writeFile(t, peer.MainConf, strings.Replace(string(main), pidLine, "include "+inc+";\n", 1))
		peer.StopOnCleanup(t)
		peer.Start(t)
		r, err := NewLocalReloader(Config{Binary: peer.Binary, MainConf: peer.MainConf, Prefix: peer.Prefix})
		if err != nil {
			t.Fatal(err)
		}
		before := waitWorkers(t, peer)
		if err := r.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitReplaced(t, peer, before, 30*time.Second)
		if r.signals != 0 || r.commands != 1 {
			t.Errorf("reloads by signal %d, by command %d; want 0 and 1", r.signals, r.commands)
		}
	})
}

// TestApplyThroughMirror: when the main configuration's directory cannot be
// written, nginx -t runs on a mirror of it; relative includes still find the
// same files, a good candidate goes live and a bad one is refused with
// nginx's message naming the real paths.
func TestApplyThroughMirror(t *testing.T) {
	t.Parallel()
	peer := testpeers.Nginx(t, testpeers.NginxOptions{NoStart: true})
	writeFile(t, filepath.Join(peer.Prefix, "types.inc"), "types { text/plain txt; }\n")
	main := filepath.Join(peer.Prefix, "relative.conf")
	writeFile(t, main, fmt.Sprintf("pid %s/nginx.pid;\nevents {}\nhttp {\n    include types.inc;\n    include conf.d/*.conf;\n}\n", peer.Prefix))
	cfg := Config{
		ConfPath: filepath.Join(peer.ConfDir, "custom-domains.conf"), Binary: peer.Binary, MainConf: main,
		Prefix: peer.Prefix, HTTPSPort: peer.HTTPSPort, HTTPPort: peer.HTTPPort, CertMode: CertModeVariable,
	}
	a, err := NewApplier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.forceMirror = true
	good, _ := Render(cfg, sites("a.example.com"))
	if changed, err := a.Apply(context.Background(), good); err != nil || !changed {
		t.Fatalf("good candidate through the mirror: %v, %v", changed, err)
	}
	bad := append(slices.Clone(good), "unknown_directive on;\n"...)
	_, err = a.Apply(context.Background(), bad)
	var te *TestError
	if !errors.As(err, &te) || !strings.Contains(te.Output, "unknown directive") {
		t.Fatalf("bad candidate: %v; want nginx's refusal", err)
	}
	if strings.Contains(te.Output, "certmgr-nginx-test-") {
		t.Errorf("message names the mirror instead of the real paths: %s", te.Output)
	}
	if b, _ := os.ReadFile(cfg.ConfPath); !bytes.Equal(b, good) {
		t.Error("the refused candidate reached the live file")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(peer.Prefix, ".certmgr-test-*")); len(leftovers) > 0 {
		t.Errorf("wrote into the main configuration's directory: %v", leftovers)
	}
}

// TestApplyFuncRenderFails: a render that fails halfway through the
// candidate leaves the live file as it was, no candidate behind, and runs no
// nginx -t (the binary here does not exist).
func TestApplyFuncRenderFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	live := filepath.Join(dir, "custom-domains.conf")
	writeFile(t, live, "# live\n")
	a, err := NewApplier(Config{ConfPath: live, Binary: filepath.Join(dir, "no-nginx"), MainConf: filepath.Join(dir, "nginx.conf")})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("render failed")
	changed, err := a.ApplyFunc(context.Background(), func(w io.Writer) error {
		if _, err := io.WriteString(w, "server {\n"); err != nil {
			return err
		}
		return boom
	})
	if changed || !errors.Is(err, boom) {
		t.Fatalf("ApplyFunc = %v, %v; want the render's error", changed, err)
	}
	if b, _ := os.ReadFile(live); string(b) != "# live\n" {
		t.Errorf("live file is now %q", b)
	}
	if _, err := os.Stat(a.CandidatePath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("candidate left behind: %v", err)
	}
	// The same bytes as the live file: unchanged, no nginx -t either.
	changed, err = a.Apply(context.Background(), []byte("# live\n"))
	if changed || err != nil {
		t.Errorf("Apply of the live bytes = %v, %v; want unchanged without nginx -t", changed, err)
	}
}
