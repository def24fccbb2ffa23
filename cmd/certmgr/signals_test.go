package main

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// The first SIGTERM starts the graceful stop; the second one ends it at
// once. The signals go to this test process, which handles them itself
// while notifyTwice's handler is installed.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	t.Parallel()
	seconds := make(chan os.Signal, 1)
	ctx, stop := notifyTwice(func(sig os.Signal) { seconds <- sig })
	defer stop()

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the first SIGTERM did not cancel the context")
	}
	select {
	case sig := <-seconds:
		t.Fatalf("the first signal already counted as the second: %s", sig)
	default:
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case sig := <-seconds:
		if sig != syscall.SIGINT {
			t.Errorf("second signal %s, want SIGINT", sig)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second signal did not end the stop")
	}
}
