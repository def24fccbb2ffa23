package domaindb_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// Advisory locks are per database, not per schema: every test locks names that
// contain its own schema, so parallel tests never share a lock.
func lockName(b *bundle, host string) domain.Name {
	n, err := domain.Parse(host + "." + strings.ReplaceAll(b.pg.Schema, "_", "-") + ".example")
	if err != nil {
		panic(err)
	}
	return n
}

func TestTryLockExcludes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	name := lockName(b, "shop")

	unlock, err := b.store.Lock(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.store.TryLock(ctx, string(name)); ok || err != nil {
		t.Fatalf("TryLock of a held lock = %v, %v", ok, err)
	}
	other := lockName(b, "other")
	u2, ok, err := b.store.TryLock(ctx, string(other))
	if !ok || err != nil {
		t.Fatalf("TryLock of another name = %v, %v", ok, err)
	}
	u2()
	unlock()
	unlock() // idempotent
	u3, ok, err := b.store.TryLock(ctx, string(name))
	if !ok || err != nil {
		t.Fatalf("TryLock after unlock = %v, %v", ok, err)
	}
	u3()
}

func TestLockWaitEndsWithContext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	name := lockName(b, "shop")
	unlock, err := b.store.Lock(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if u, err := b.store.Lock(ctx, name); err == nil {
		u()
		t.Fatal("Lock of a held lock returned before its context ended")
	}
	if ctx.Err() == nil {
		t.Fatal("Lock failed before its context ended")
	}
	unlock()
	// The abandoned wait must not have left a lock behind.
	testpeers.Eventually(t, 10*time.Second, "the lock's state", func() error {
		u, ok, err := b.store.TryLock(context.Background(), string(name))
		if err != nil || !ok {
			return fmt.Errorf("TryLock = %v, %v", ok, err)
		}
		u()
		return nil
	})
}

// The lock dies with its holder: a process holding it is killed, and another takes it.
func TestLockReleasedWhenHolderDies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	name := lockName(b, "shop")

	holder, lines := helper(t, "hold", b.pg.URL, "0", string(name))
	waitLine(t, lines, "locked")
	if _, ok, err := b.store.TryLock(context.Background(), string(name)); ok || err != nil {
		t.Fatalf("lock held by another process: TryLock = %v, %v", ok, err)
	}
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = holder.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	unlock, err := b.store.Lock(ctx, name)
	if err != nil {
		t.Fatalf("lock of a dead holder never released: %v", err)
	}
	unlock()
}

// Two processes race to issue the same domain. The one that gets the lock orders
// (and holds on until the other is seen waiting for the lock, so the race is real);
// the other, once it has the lock, re-reads the row, sees the fresh certificate and
// does not order.
func TestRaceOneOrders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	name := lockName(b, "shop")
	id := b.insert(t, string(name), "dns_verified", nil)

	var outs []<-chan string
	var cmds []*exec.Cmd
	for range 2 {
		cmd, lines := helper(t, "issue", b.pg.URL, strconv.FormatInt(id, 10), string(name))
		cmds, outs = append(cmds, cmd), append(outs, lines)
	}
	var results []string
	for _, lines := range outs {
		results = append(results, waitLine(t, lines, "ordered", "skipped"))
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
	}
	ordered := strings.Count(strings.Join(results, " "), "ordered")
	if ordered != 1 {
		t.Errorf("orders placed: %d (%v), want exactly 1", ordered, results)
	}
	d, err := b.store.Get(context.Background(), id)
	if err != nil || d.Status != domaindb.StatusIssued {
		t.Errorf("row after race: %+v, %v", d, err)
	}
}

// helper starts this test binary as another process running TestHelperProcess.
func helper(t *testing.T, mode, url, id, name string) (*exec.Cmd, <-chan string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "DOMAINDB_HELPER="+mode, "DOMAINDB_URL="+url,
		"DOMAINDB_ID="+id, "DOMAINDB_NAME="+name)
	cmd.Stderr = os.Stderr
	if _, err := cmd.StdinPipe(); err != nil { // held open until the test ends
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	return cmd, lines
}

// waitLine returns the first line from a helper that is one of want.
func waitLine(t *testing.T, lines <-chan string, want ...string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("helper exited without printing any of %v", want)
			}
			for _, w := range want {
				if l == w {
					return l
				}
			}
		case <-timeout:
			t.Fatalf("no %v from helper", want)
		}
	}
}

// TestHelperProcess is not a test: it is the other process of the lock tests
// (not parallel: in a helper process it is the only thing running).
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("DOMAINDB_HELPER")
	if mode == "" {
		t.Skip("helper process for the lock tests")
	}
	if err := runHelper(mode); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runHelper(mode string) error {
	ctx := context.Background()
	url := os.Getenv("DOMAINDB_URL")
	name, err := domain.Parse(os.Getenv("DOMAINDB_NAME"))
	if err != nil {
		return err
	}
	s, err := domaindb.New(ctx, domaindb.Config{URL: url})
	if err != nil {
		return err
	}
	defer s.Close()
	unlock, err := s.Lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()

	switch mode {
	case "hold":
		fmt.Println("locked")
		_, _ = io.Copy(io.Discard, os.Stdin) // until killed (the parent keeps stdin open)
		return errors.New("stdin closed while holding the lock")
	case "issue":
		id, err := strconv.ParseInt(os.Getenv("DOMAINDB_ID"), 10, 64)
		if err != nil {
			return err
		}
		// After taking the lock, look again: another process may just have issued.
		d, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		if d.CertLive(time.Now().Add(30 * 24 * time.Hour)) {
			fmt.Println("skipped")
			return nil
		}
		// "Order" the certificate: hold the lock until the other process waits on it.
		if err := waitForWaiter(ctx, url, domaindb.LockKey(string(name))); err != nil {
			return err
		}
		now := time.Now()
		if err := s.MarkIssued(ctx, id, now, now.Add(90*24*time.Hour)); err != nil {
			return err
		}
		fmt.Println("ordered")
		return nil
	}
	return errors.New("unknown helper mode " + mode)
}

// waitForWaiter polls pg_locks until some session waits for the advisory lock key.
func waitForWaiter(ctx context.Context, url string, key int64) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND objsubid = 1 AND NOT granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND classid::bigint = $1 AND objid::bigint = $2`,
			int64(uint64(key)>>32), int64(uint32(key))).Scan(&n)
		if err != nil {
			return fmt.Errorf("watch pg_locks: %w", err)
		}
		if n > 0 {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("nobody waited for the lock: %w", ctx.Err())
		}
	}
}

// A lock another holder keeps is waited for at most Config.LockWait: then Lock
// fails with a *LockBusyError that IsTransient reports, so the task is retried
// instead of holding a worker until its time limit.
func TestLockWaitIsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s, err := domaindb.New(context.Background(), domaindb.Config{URL: b.pg.URL, LockWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	name := lockName(b, "busy")
	unlock, err := b.store.Lock(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	u, err := s.Lock(context.Background(), name)
	took := time.Since(start)
	var busy *domaindb.LockBusyError
	if err == nil {
		u()
		t.Fatal("Lock of a held lock succeeded")
	}
	if !errors.As(err, &busy) || !domaindb.IsTransient(err) {
		t.Fatalf("Lock of a held lock = %v; want a transient *LockBusyError", err)
	}
	if took < 300*time.Millisecond || took > 5*time.Second {
		t.Errorf("Lock gave up after %s; want about 300ms", took)
	}
	unlock()
	// The abandoned wait left no lock behind.
	testpeers.Eventually(t, 10*time.Second, "the lock's state", func() error {
		u, ok, err := s.TryLock(context.Background(), string(name))
		if err != nil || !ok {
			return fmt.Errorf("TryLock = %v, %v", ok, err)
		}
		u()
		return nil
	})
}
