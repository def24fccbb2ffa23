package tasks_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/tasks"
)

// documentedShape is one task's result as a task table documents it: its
// top-level keys, and which of them are lists.
type documentedShape struct {
	keys  []string
	lists []string
}

var (
	taskRowRE = regexp.MustCompile("(?m)^\\| `(tenant\\.tasks\\.[a-z_]+)` \\|.*\\| `(\\{.*\\})` \\|$")
	nestedRE  = regexp.MustCompile(`\[[^\]]*\]`)
	keyRE     = regexp.MustCompile(`"([a-z_]+)"(: \[)?`)
)

// taskTable reads the task table of a Markdown file.
func taskTable(t *testing.T, path string) map[string]documentedShape {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]documentedShape{}
	for _, m := range taskRowRE.FindAllStringSubmatch(string(b), -1) {
		// Keys inside a list's description ([{"name", "error"}]) are not
		// top-level keys; the list marker stays.
		shape := nestedRE.ReplaceAllString(m[2], "[")
		var s documentedShape
		for _, k := range keyRE.FindAllStringSubmatch(shape, -1) {
			s.keys = append(s.keys, k[1])
			if k[2] != "" {
				s.lists = append(s.lists, k[1])
			}
		}
		slices.Sort(s.keys)
		out[m[1]] = s
	}
	return out
}

// The README and docs/django.md document the same result shapes, and real
// results, taken through Python Celery, have exactly those keys, with lists
// where a list is documented (never null).
func TestDocumentedResultShapesMatchRealResults(t *testing.T) {
	t.Parallel()
	readme, django := taskTable(t, "../README.md"), taskTable(t, "../docs/django.md")
	if len(readme) != 5 {
		t.Fatalf("README documents %d task results, want 5: %v", len(readme), readme)
	}
	for task, s := range readme {
		if d, ok := django[task]; !ok || !slices.Equal(d.keys, s.keys) || !slices.Equal(d.lists, s.lists) {
			t.Errorf("%s: README documents %v (lists %v), docs/django.md %v (lists %v)", task, s.keys, s.lists, d.keys, d.lists)
		}
	}

	b := setup(t)
	d := b.domain("shape")
	id := b.pg.InsertDomain(t, string(d))
	b.startWorker("shapes")
	run := func(o testpeers.SendOptions) map[string]json.RawMessage {
		t.Helper()
		raw, cerr := b.celery.Get(t, b.celery.Send(t, o), 90*time.Second)
		if cerr != nil {
			t.Fatalf("%s: %v", o.Task, cerr)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%s result %s: %v", o.Task, raw, err)
		}
		return m
	}
	results := map[string]map[string]json.RawMessage{
		tasks.VerifyTask: run(testpeers.SendOptions{Task: tasks.VerifyTask, Args: []any{id}}),
		tasks.IssueTask:  run(testpeers.SendOptions{Task: tasks.IssueTask, Args: []any{id}}),
		tasks.RegenTask:  run(testpeers.SendOptions{Task: tasks.RegenTask}),
		tasks.RenewTask:  run(testpeers.SendOptions{Task: tasks.RenewTask, Kwargs: map[string]any{"dry_run": true}}),
	}
	b.pg.Exec(t, `DELETE FROM tenant_customdomain WHERE id = $1`, id)
	results[tasks.RemoveTask] = run(testpeers.SendOptions{Task: tasks.RemoveTask, Args: []any{string(d)}})
	for task, got := range results {
		want := readme[task]
		var keys []string
		for k := range got {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, want.keys) {
			t.Errorf("%s: real result has keys %v, the docs %v", task, keys, want.keys)
		}
		for _, k := range want.lists {
			if v := strings.TrimSpace(string(got[k])); !strings.HasPrefix(v, "[") {
				t.Errorf("%s: %q is %s, documented as a list", task, k, v)
			}
		}
	}
}
