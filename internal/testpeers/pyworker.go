package testpeers

import (
	"cmp"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

//go:embed pyworker_app.py
var pyWorkerAppPy []byte

// PyWorkerAppSource is the Python app a PyWorker runs (tasks certmgr.ping and
// test.record), for benchmarks that start Python workers themselves.
func PyWorkerAppSource() []byte { return pyWorkerAppPy }

// PyWorkerOptions configure a real Python Celery worker.
type PyWorkerOptions struct {
	BrokerURL         string  // required; results go to the same database
	Queue             string  // default certmgr
	Pool              string  // solo (default) or prefork
	Concurrency       int     // default 1
	VisibilityTimeout float64 // seconds; default 3600
	Hostname          string  // default pyworker-<pid>@test
	// AppSource replaces pyworker_app.py: a Celery app module whose
	// environment is the same (PYWORKER_BROKER, PYWORKER_VT).
	AppSource []byte
	// Args are added to the `celery worker` command line (-E, ...).
	Args []string
}

// PyWorker is a running `celery worker` (Debian's python3-celery) whose app
// registers certmgr.ping and test.record(key, sleep=0) (see pyworker_app.py).
type PyWorker struct {
	*Process
	Hostname string
	LogPath  string
}

// StartPyWorker starts a Python Celery worker consuming opts.Queue and waits
// until it is ready. It is killed when the test ends.
func StartPyWorker(t testing.TB, opts PyWorkerOptions) *PyWorker {
	t.Helper()
	requirePythonCelery(t)
	dir := t.TempDir()
	app := pyWorkerAppPy
	if opts.AppSource != nil {
		app = opts.AppSource
	}
	if err := os.WriteFile(filepath.Join(dir, "pyworker_app.py"), app, 0o644); err != nil {
		t.Fatalf("write pyworker app: %v", err)
	}
	hostname := cmp.Or(opts.Hostname, fmt.Sprintf("pyworker-%d@test", os.Getpid()))
	vt := opts.VisibilityTimeout
	if vt == 0 {
		vt = 3600
	}
	logPath := filepath.Join(dir, "worker.log")
	env := []string{
		"PYWORKER_BROKER=" + opts.BrokerURL,
		"PYWORKER_VT=" + strconv.FormatFloat(vt, 'f', -1, 64),
		"PYTHONPATH=" + dir,
	}
	args := []string{"-m", "celery", "-A", "pyworker_app", "worker",
		"-Q", cmp.Or(opts.Queue, "certmgr"), "-P", cmp.Or(opts.Pool, "solo"),
		"-c", strconv.Itoa(max(opts.Concurrency, 1)), "-n", hostname,
		"--without-mingle", "--without-gossip", "-l", "info"}
	p := startProcess(t, logPath, env, Python, append(args, opts.Args...)...)
	err := waitFor(60*time.Second, func() error {
		select {
		case <-p.Exited():
			return fmt.Errorf("exited")
		default:
		}
		b, _ := os.ReadFile(logPath)
		if !strings.Contains(string(b), " ready.") {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	if err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("python celery worker: %v\n%s", err, tail(b, 4000))
	}
	return &PyWorker{Process: p, Hostname: hostname, LogPath: logPath}
}
