package podreload

import (
	"encoding/json"
	"time"
)

// Outcome is what happened to one pod.
type Outcome string

const (
	// OutcomeReloaded: `nginx -t` passed and `nginx -s reload` succeeded.
	OutcomeReloaded Outcome = "reloaded"
	// OutcomeFailed: a command failed on every attempt; Detail holds nginx's stderr.
	OutcomeFailed Outcome = "failed"
	// OutcomeTimedOut: the pod did not answer within the per-pod timeout.
	OutcomeTimedOut Outcome = "timed_out"
	// OutcomeSkipped: the pod was not tried (not ready, pending, terminating).
	OutcomeSkipped Outcome = "skipped"
	// OutcomeRestarted: rollout mode patched the Deployment; its pods restart.
	OutcomeRestarted Outcome = "restarted"
)

// PodResult is one pod's outcome. It marshals to the JSON the Celery task
// result carries: {"pod", "outcome", "attempts", "detail", "duration"} with
// duration in seconds.
type PodResult struct {
	// Pod is the pod's name ("deployment/NAME" in rollout mode, this pod's
	// name or "local" in local mode).
	Pod      string
	Outcome  Outcome
	Attempts int
	// Detail is empty on success; otherwise why, for a person.
	Detail   string
	Duration time.Duration
	// Self is true for the pod certmgr runs in.
	Self bool
}

type podResultJSON struct {
	Pod      string  `json:"pod"`
	Outcome  Outcome `json:"outcome"`
	Attempts int     `json:"attempts"`
	Detail   string  `json:"detail"`
	Duration float64 `json:"duration"`
	Self     bool    `json:"self,omitempty"`
}

// MarshalJSON writes the task-result form, duration in seconds.
func (r PodResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(podResultJSON{
		Pod: r.Pod, Outcome: r.Outcome, Attempts: r.Attempts, Detail: r.Detail,
		Duration: r.Duration.Seconds(), Self: r.Self,
	})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *PodResult) UnmarshalJSON(b []byte) error {
	var j podResultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = PodResult{
		Pod: j.Pod, Outcome: j.Outcome, Attempts: j.Attempts, Detail: j.Detail,
		Duration: time.Duration(j.Duration * float64(time.Second)), Self: j.Self,
	}
	return nil
}

// Result lists every pod's outcome, sorted by pod name.
type Result struct {
	Mode Mode        `json:"mode"`
	Pods []PodResult `json:"pods"`
}

// Count returns how many pods had outcome o.
func (r Result) Count(o Outcome) int {
	n := 0
	for _, p := range r.Pods {
		if p.Outcome == o {
			n++
		}
	}
	return n
}

// Pod returns the result for the named pod.
func (r Result) Pod(name string) (PodResult, bool) {
	for _, p := range r.Pods {
		if p.Pod == name {
			return p, true
		}
	}
	return PodResult{}, false
}
