package compat_test

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
)

var (
	update = flag.Bool("update", false, "rewrite docs/celery-compat.md from this run's results")
	only   = flag.String("scenarios", "", "run only these scenarios (comma-separated); the doc is not checked")
)

//go:embed testdata/compat_app.py
var compatApp []byte

const docPath = "../../../docs/celery-compat.md"

// observations maps a scenario name to what its producer observed.
type observations map[string]json.RawMessage

// TestCeleryCompat runs every scenario of testdata/scenarios.py against a
// Python Celery worker and against certmgr, compares what the producer
// observed, and checks docs/celery-compat.md says exactly that.
func TestCeleryCompat(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	sides := map[string]observations{}
	t.Run("run", func(t *testing.T) {
		for _, side := range []string{"python", "certmgr"} {
			t.Run(side, func(t *testing.T) {
				t.Parallel()
				obs := runSide(t, side)
				mu.Lock()
				sides[side] = obs
				mu.Unlock()
			})
		}
	})
	if t.Failed() {
		return
	}
	descriptions := describe(t)
	rows := compare(sides["python"], sides["certmgr"], descriptions)
	for _, r := range rows {
		switch {
		case !r.same && r.reason == "":
			t.Errorf("scenario %s: certmgr differs from Python Celery and no reason is listed in knownDifferences:\n python:  %s\n certmgr: %s",
				r.name, r.python, r.certmgr)
		case r.same && r.reason != "":
			t.Errorf("scenario %s: no longer differs; remove it from knownDifferences", r.name)
		}
	}
	if *only != "" {
		return
	}
	for name := range knownDifferences {
		if _, ok := sides["python"][name]; !ok {
			t.Errorf("knownDifferences names scenario %s, which does not exist", name)
		}
	}
	doc := render(rows)
	if *update {
		if err := os.WriteFile(docPath, doc, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile(docPath)
	if err != nil || !bytes.Equal(have, doc) {
		t.Errorf("docs/celery-compat.md is not what this run found; rerun with: go test ./worker/internal/compat -run TestCeleryCompat -update")
	}
}

// runSide starts one kind of worker on a fresh Redis database and runs every
// scenario against it.
func runSide(t *testing.T, side string) observations {
	r := testpeers.Redis(t)
	var hostname string
	switch side {
	case "python":
		hostname = "py-compat@test"
		// prefork: the solo pool cannot enforce time limits or terminate.
		testpeers.StartPyWorker(t, testpeers.PyWorkerOptions{
			BrokerURL: r.URL, Queue: "compat", Pool: "prefork", Concurrency: 2,
			Hostname: hostname, AppSource: compatApp, Args: []string{"-E"},
		})
	case "certmgr":
		hostname = "certmgr-compat@test"
		mux := worker.NewServeMux()
		worker.RegisterBuiltins(mux)
		standIns(mux, r.Pool())
		srv, err := worker.NewServer(worker.Config{
			BrokerURL:      r.URL,
			Queue:          "compat",
			Concurrency:    2,
			Hostname:       hostname,
			TrackStarted:   true,
			ResultExtended: true,
			SendTaskEvents: true,
			PollInterval:   50 * time.Millisecond,
			ShutdownGrace:  time.Second,
			Logger:         zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		}, mux)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	}
	out := python(t, 10*time.Minute, "--broker", r.URL, "--hostname", hostname, "--only", *only)
	var obs observations
	if err := json.Unmarshal(out, &obs); err != nil {
		t.Fatalf("scenarios printed %q: %v", out, err)
	}
	return obs
}

func describe(t *testing.T) map[string]string {
	var d map[string]string
	if err := json.Unmarshal(python(t, time.Minute, "--describe"), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func python(t *testing.T, timeout time.Duration, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testpeers.Python, append([]string{filepath.Join("testdata", "scenarios.py")}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if stderr.Len() > 0 {
		t.Logf("scenarios.py %s:\n%s", strings.Join(args, " "), stderr.String())
	}
	if err != nil {
		t.Fatalf("scenarios.py: %v", err)
	}
	return out
}

type row struct {
	name, description string
	python, certmgr   string
	same              bool
	reason            string
}

func compare(py, gm observations, descriptions map[string]string) []row {
	names := make([]string, 0, len(py))
	for name := range py {
		names = append(names, name)
	}
	sort.Strings(names)
	var rows []row
	for _, name := range names {
		var a, b any
		_ = json.Unmarshal(py[name], &a)
		_ = json.Unmarshal(gm[name], &b)
		rows = append(rows, row{
			name: name, description: descriptions[name],
			python: string(py[name]), certmgr: string(gm[name]),
			same: reflect.DeepEqual(a, b), reason: knownDifferences[name],
		})
	}
	return rows
}

func render(rows []row) []byte {
	var b bytes.Buffer
	b.WriteString("# Celery compatibility\n\n")
	b.WriteString("<!-- Generated by `go test ./worker/internal/compat -run TestCeleryCompat -update`; do not edit. -->\n\n")
	b.WriteString("certmgr's worker is checked against Python Celery itself (Debian's celery 5.2.6): every scenario\n")
	b.WriteString("of `worker/internal/compat/testdata/scenarios.py` is run by a Python Celery producer twice, once against a\n")
	b.WriteString("Python Celery worker running stand-in tasks (`testdata/compat_app.py`) and once against certmgr with Go\n")
	b.WriteString("stand-ins of the same names and behaviour, and what the producer observes is compared: final states,\n")
	b.WriteString("results, exception classes and messages, the tasks that ran and their arguments, events, remote-control\n")
	b.WriteString("replies. This page is written from the last run; `make test` fails when it no longer says what the run found.\n\n")
	b.WriteString("## Scenarios\n\n| scenario | what the producer does | certmgr |\n| --- | --- | --- |\n")
	for _, r := range rows {
		verdict := "same as Python Celery"
		if !r.same {
			verdict = "differs (below)"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", r.name, r.description, verdict)
	}
	b.WriteString("\n## Differences\n\n")
	n := 0
	for _, r := range rows {
		if r.same {
			continue
		}
		n++
		reason := r.reason
		if reason == "" {
			reason = "**unexplained** (the suite fails until this is fixed or explained)"
		}
		fmt.Fprintf(&b, "### `%s`\n\n%s\n\n- Python Celery: `%s`\n- certmgr: `%s`\n\n", r.name, reason, r.python, r.certmgr)
	}
	if n == 0 {
		b.WriteString("None: in every scenario the producer cannot tell certmgr from Python Celery.\n\n")
	}
	b.WriteString("## Celery 5 worker features\n\n| feature | certmgr | how we know / why not |\n| --- | --- | --- |\n")
	same := map[string]bool{}
	for _, r := range rows {
		same[r.name] = r.same
	}
	for _, f := range features {
		status, why := f.status, f.why
		if len(f.scenarios) > 0 {
			status = "supported"
			var differ []string
			for _, s := range f.scenarios {
				if !same[s] {
					differ = append(differ, "`"+s+"`")
				}
			}
			if len(differ) > 0 {
				status = "partly"
				why = "differs in " + strings.Join(differ, ", ") + " (see Differences)"
				if f.why != "" {
					why += "; " + f.why
				}
			} else {
				var names []string
				for _, s := range f.scenarios {
					names = append(names, "`"+s+"`")
				}
				why = "scenario " + strings.Join(names, ", ")
				if f.why != "" {
					why += "; " + f.why
				}
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", f.name, status, why)
	}
	return b.Bytes()
}
