package testpeers

import (
	"testing"
	"time"
)

// PollInterval is how often Eventually looks again.
const PollInterval = 20 * time.Millisecond

// Eventually is the test kit's one wait: it calls cond every PollInterval
// until cond returns nil and fails the test with what and cond's last error
// once timeout has passed. Tests wait on conditions, never on sleeps.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		<-tick.C
	}
}

// ErrNotYet is what a condition without more to say returns until it holds.
var ErrNotYet = errNotYet{}

type errNotYet struct{}

func (errNotYet) Error() string { return "not yet" }

// Until is Eventually for a condition that is only true or false.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	Eventually(t, timeout, what, func() error {
		if cond() {
			return nil
		}
		return ErrNotYet
	})
}
