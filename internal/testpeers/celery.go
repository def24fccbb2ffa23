package testpeers

import (
	"bytes"
	"cmp"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Python is Debian's interpreter, the one python3-celery is installed for
// (python3 on PATH may be a pyenv build without Celery).
const Python = "/usr/bin/python3"

//go:embed celery_client.py
var celeryClientPy []byte

// CeleryClient sends tasks and reads results with real Python Celery, the way
// the Django app does.
type CeleryClient struct {
	BrokerURL  string
	BackendURL string // defaults to the broker URL
	Script     string // path of celery_client.py
}

// SendOptions are the arguments of app.send_task.
type SendOptions struct {
	Task      string
	Queue     string // default certmgr
	Args      []any
	Kwargs    map[string]any
	Countdown float64 // seconds; 0 = none
	Priority  *int
	Expires   float64 // seconds; 0 = none
	Protocol  int     // 1 or 2 (default 2)
	Count     int     // send this many identical tasks (default 1)
}

// CeleryError is a FAILURE (or timeout) as Python Celery sees it.
type CeleryError struct {
	State     string // FAILURE, REVOKED, TIMEOUT...
	ExcType   string // exc_type as stored by the worker
	Raised    string // class name Celery rebuilt and raised
	Message   string
	Traceback string
}

func (e *CeleryError) Error() string {
	return fmt.Sprintf("celery %s %s: %s", e.State, e.ExcType, e.Message)
}

// Celery checks that Debian's Python Celery is installed and returns a
// client for the broker (results in the same Redis database).
func Celery(t testing.TB, brokerURL string) *CeleryClient {
	t.Helper()
	requirePythonCelery(t)
	script := filepath.Join(t.TempDir(), "celery_client.py")
	if err := os.WriteFile(script, celeryClientPy, 0o644); err != nil {
		t.Fatalf("write celery client: %v", err)
	}
	return &CeleryClient{BrokerURL: brokerURL, BackendURL: brokerURL, Script: script}
}

// Send enqueues a task and returns its id (the first one when Count > 1).
func (c *CeleryClient) Send(t testing.TB, o SendOptions) string {
	t.Helper()
	return c.SendMany(t, o)[0]
}

// SendMany enqueues o.Count tasks in one Python process and returns their ids.
func (c *CeleryClient) SendMany(t testing.TB, o SendOptions) []string {
	t.Helper()
	args, _ := json.Marshal(orEmpty(o.Args))
	kwargs, _ := json.Marshal(orEmptyMap(o.Kwargs))
	cmdArgs := []string{c.Script, "send", "--broker", c.BrokerURL, "--backend", c.BackendURL,
		"--task", o.Task, "--queue", cmp.Or(o.Queue, "certmgr"),
		"--args", string(args), "--kwargs", string(kwargs),
		"--protocol", strconv.Itoa(cmp.Or(o.Protocol, 2)),
		"--count", strconv.Itoa(max(o.Count, 1))}
	if o.Countdown != 0 {
		cmdArgs = append(cmdArgs, "--countdown", strconv.FormatFloat(o.Countdown, 'f', -1, 64))
	}
	if o.Priority != nil {
		cmdArgs = append(cmdArgs, "--priority", strconv.Itoa(*o.Priority))
	}
	if o.Expires != 0 {
		cmdArgs = append(cmdArgs, "--expires", strconv.FormatFloat(o.Expires, 'f', -1, 64))
	}
	out, err := c.python(cmdArgs, 120*time.Second)
	if err != nil {
		t.Fatalf("celery send_task %s: %v", o.Task, err)
	}
	ids := strings.Fields(out)
	if len(ids) == 0 {
		t.Fatalf("celery send_task %s printed no id", o.Task)
	}
	return ids
}

// Get waits for a task's result with AsyncResult(id).get(). It returns the
// result as JSON, or the failure as Python Celery reports it.
func (c *CeleryClient) Get(t testing.TB, id string, timeout time.Duration) (json.RawMessage, *CeleryError) {
	t.Helper()
	out, err := c.python([]string{c.Script, "get", "--broker", c.BrokerURL, "--backend", c.BackendURL,
		"--id", id, "--timeout", strconv.FormatFloat(timeout.Seconds(), 'f', -1, 64)}, timeout+60*time.Second)
	if err != nil {
		t.Fatalf("celery AsyncResult(%s).get(): %v", id, err)
	}
	var r struct {
		State     string          `json:"state"`
		Result    json.RawMessage `json:"result"`
		ExcType   string          `json:"exc_type"`
		Raised    string          `json:"raised_type"`
		Message   string          `json:"message"`
		Traceback string          `json:"traceback"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("decode celery client output %q: %v", out, err)
	}
	if r.State == "SUCCESS" {
		return r.Result, nil
	}
	return nil, &CeleryError{State: r.State, ExcType: r.ExcType, Raised: r.Raised, Message: r.Message, Traceback: r.Traceback}
}

// requirePythonCelery reports Debian's python3 with python3-celery and
// python3-redis missing.
func requirePythonCelery(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(Python); err != nil {
		missing(t, "%s not found (Debian python3)", Python)
	}
	if out, err := exec.Command(Python, "-c", "import celery, redis").CombinedOutput(); err != nil {
		missing(t, "python3-celery/python3-redis not importable by %s: %s", Python, out)
	}
}

func (c *CeleryClient) python(args []string, timeout time.Duration) (string, error) {
	cmd := exec.Command(Python, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return "", fmt.Errorf("%w: %s", err, stderr.String())
		}
		return stdout.String(), nil
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		return "", fmt.Errorf("timed out after %s: %s", timeout, stderr.String())
	}
}

func orEmpty(a []any) []any {
	if a == nil {
		return []any{}
	}
	return a
}

func orEmptyMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}
