package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PIDFiler is a LocalReloader that can say where the nginx master's pid file is
// (*nginxconf.LocalReloader). With it the agent confirms a reload: the
// heartbeat says "serves version N" only once every worker that accepts
// connections is of the new generation. nginx answers `nginx -s reload`
// at once and starts new workers afterwards; until the old ones stop
// accepting, a client can still get the old configuration.
type PIDFiler interface {
	PIDFile(ctx context.Context) (string, error)
}

// workers lists the master's worker processes that accept connections
// (not "shutting down"). It needs to see nginx's processes: the same
// container, or a pod with shareProcessNamespace.
func workers(pidFile string) ([]int, error) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return nil, err
	}
	master, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("pid file %s: %w", pidFile, err)
	}
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", master, master))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(kids)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmd, []byte("worker process")) && !bytes.Contains(cmd, []byte("shutting down")) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// waitReplaced waits until nginx has accepting workers and none of them is
// one of before, or timeout passes.
func waitReplaced(ctx context.Context, pidFile string, before []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		now, err := workers(pidFile)
		if err == nil && len(now) > 0 && !slices.ContainsFunc(now, func(p int) bool { return slices.Contains(before, p) }) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nginx workers %v still serve the previous configuration after %s", before, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
