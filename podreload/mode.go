package podreload

import (
	"fmt"
	"strings"
)

// Mode says how a reload reaches the replicas.
type Mode string

const (
	// ModeLocal reloads only this pod's nginx (RELOAD_ALL_PODS=false).
	ModeLocal Mode = "local"
	// ModeExec execs `nginx -t` and `nginx -s reload` in every sibling pod
	// (RELOAD_ALL_PODS=true).
	ModeExec Mode = "exec"
	// ModeRollout restarts the Deployment's pods the way `kubectl rollout
	// restart` does, for clusters whose policy forbids pods/exec.
	ModeRollout Mode = "rollout"
)

// ParseMode reads a mode from its name or from a RELOAD_ALL_PODS value:
// "false", "0", "no", "off" and "" mean local; "true", "1", "yes", "on" mean
// exec; "rollout" (also "restart") means rollout. Case does not matter.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "local", "false", "0", "no", "off":
		return ModeLocal, nil
	case "exec", "true", "1", "yes", "on":
		return ModeExec, nil
	case "rollout", "restart", "rollout-restart":
		return ModeRollout, nil
	}
	return "", fmt.Errorf("unknown reload mode %q: want local, exec or rollout (or true/false)", s)
}

// String returns the mode's name.
func (m Mode) String() string { return string(m) }
