package compat_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
)

// A chord completes whichever worker runs its header tasks and its body:
// certmgr and Python Celery join it through the same Redis keys.
func TestChordAcrossPythonAndCertmgr(t *testing.T) {
	t.Parallel()
	r := testpeers.Redis(t)
	testpeers.StartPyWorker(t, testpeers.PyWorkerOptions{
		BrokerURL: r.URL, Queue: "compat-py", Hostname: "py-mixed@test", AppSource: compatApp,
	})
	mux := worker.NewServeMux()
	standIns(mux, r.Pool())
	srv, err := worker.NewServer(worker.Config{
		BrokerURL: r.URL, Queue: "compat", Hostname: "certmgr-mixed@test", PollInterval: 50 * time.Millisecond,
		Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	}, mux)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })

	// Each chord: header parts on both workers, the body on one, then on the other.
	code := fmt.Sprintf(`
import json
from celery import Celery, chord
app = Celery("django_app", broker=%[1]q, backend=%[1]q)
def sig(name, queue, *args):
    return app.signature(name, args=args, queue=queue)
out = []
for body_queue in ("compat", "compat-py"):
    res = chord([sig("compat.add", "compat", 1, 1), sig("compat.add", "compat-py", 2, 2), sig("compat.add", "compat", 3, 3)],
                sig("compat.tsum", body_queue)).apply_async()
    out.append(res.get(timeout=30))
print(json.dumps(out))
`, r.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, testpeers.Python, "-c", code).CombinedOutput()
	if err != nil {
		t.Fatalf("chord producer: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "[12, 12]" {
		t.Fatalf("chord results = %s, want [12, 12] (body on certmgr, then on Python)", got)
	}
	calls := r.Do(t, "LRANGE", "compat:calls", 0, -1).([]any)
	if len(calls) != 8 {
		t.Errorf("%d task runs, want 8 (3 header parts and a body, twice)", len(calls))
	}
}
