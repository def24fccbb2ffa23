package faults

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// sendHuge sends count tenant.tasks.issue_custom_domain_task messages, each
// with one argument of size bytes, from real Python Celery (the argument is
// made in Python: it would not fit on a command line).
const sendHuge = `
import sys
from celery import Celery
app = Celery("django_app", broker=sys.argv[1], backend=sys.argv[1])
blob = "x" * int(sys.argv[2])
with app.producer_or_acquire() as p:
    for _ in range(int(sys.argv[3])):
        print(app.send_task("tenant.tasks.issue_custom_domain_task", args=[1, blob], queue="certmgr", producer=p).id)
`

// Five 20 MB task messages (what a runaway producer might send) leave the
// certmgr binary under 100 MB of resident memory at its peak: each is moved
// to the dead list inside Redis and only its headers are read; each task gets
// a FAILURE naming the limit; the worker goes on.
func TestHugeMessagesKeepWorkerSmall(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	w := s.startWorker("worker")
	pingAlive(t, s, w) // running and consuming before the flood

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, testpeers.Python, "-c", sendHuge, s.redisURL, strconv.Itoa(20_000_000), "5").Output()
	if err != nil {
		t.Fatalf("python send: %v", err)
	}
	ids := strings.Fields(string(out))
	if len(ids) != 5 {
		t.Fatalf("sent %v", ids)
	}
	for _, id := range ids {
		testpeers.Until(t, 2*time.Minute, "FAILURE of "+id, func() bool {
			m, ok := s.meta(id)
			return ok && m.Status == "FAILURE"
		})
		_, cerr := s.celery.Get(t, id, 10*time.Second)
		if cerr == nil || cerr.ExcType != "LimitExceeded" || !strings.Contains(cerr.Message, "CERTMGR_MAX_MESSAGE_BYTES") {
			t.Errorf("task %s: %v", id, cerr)
		}
	}
	peak, rss := procKB(t, w.cmd.Process.Pid, "VmHWM:"), procKB(t, w.cmd.Process.Pid, "VmRSS:")
	t.Logf("certmgr worker after five 20 MB messages: peak RSS %d kB, RSS %d kB", peak, rss)
	if peak >= 100*1024 {
		t.Errorf("peak RSS %d kB: over 100 MB", peak)
	}
	if n := s.llen("certmgr.dead"); n != 5 {
		t.Errorf("dead list holds %d, want the 5 messages", n)
	}
	pingAlive(t, s, w)
}

// procKB reads a "Name:   123 kB" line of /proc/<pid>/status.
func procKB(t *testing.T, pid int, field string) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("%s %q: %v", field, rest, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
