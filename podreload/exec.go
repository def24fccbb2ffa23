package podreload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/streaming/pkg/httpstream"
)

// maxDetail caps how much of nginx's output goes into a result.
const maxDetail = 2048

// reloadAll reloads every ready sibling in parallel.
func (r *Reloader) reloadAll(ctx context.Context) (Result, error) {
	res := Result{Mode: ModeExec}
	targets, skipped, selector, err := r.siblings(ctx)
	if err != nil {
		return res, fmt.Errorf("find sibling pods: %w", err)
	}
	if len(targets) == 0 && len(skipped) == 0 {
		return res, fmt.Errorf("find sibling pods: no pod in namespace %s matches deployment %s's selector %s",
			r.namespace, r.cfg.DeploymentName, selector)
	}

	results := make([]PodResult, len(targets))
	errs := make([]error, len(targets))
	sem := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, pod := range targets {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = PodResult{Pod: pod, Outcome: OutcomeTimedOut, Detail: "not tried: " + ctx.Err().Error(), Self: pod == r.cfg.PodName}
				return
			}
			defer func() { <-sem }()
			results[i], errs[i] = r.reloadPod(ctx, pod)
		})
	}
	wg.Wait()

	res.Pods = mergeSorted(results, skipped)
	// The outcomes travel in the result (and the error); log them only for debugging.
	for _, p := range res.Pods {
		r.log.Debug().Str("pod", p.Pod).Str("outcome", string(p.Outcome)).Int("attempts", p.Attempts).
			Dur("duration", p.Duration).Str("detail", p.Detail).Msg("pod reload")
	}
	for _, err := range errs {
		var pe *PermissionError
		if errors.As(err, &pe) {
			return res, fmt.Errorf("reload pods: %w", pe)
		}
	}
	if bad := res.Count(OutcomeFailed) + res.Count(OutcomeTimedOut); bad > 0 {
		return res, &IncompleteError{Result: res}
	}
	return res, nil
}

// IncompleteError is returned when some pods failed or timed out; every pod's
// outcome is in Result.
type IncompleteError struct {
	Result Result
}

func (e *IncompleteError) Error() string {
	var b strings.Builder
	bad := e.Result.Count(OutcomeFailed) + e.Result.Count(OutcomeTimedOut)
	tried := len(e.Result.Pods) - e.Result.Count(OutcomeSkipped)
	fmt.Fprintf(&b, "nginx not reloaded on %d of %d pods:", bad, tried)
	for _, p := range e.Result.Pods {
		if p.Outcome == OutcomeFailed || p.Outcome == OutcomeTimedOut {
			fmt.Fprintf(&b, " %s %s (%s);", p.Pod, p.Outcome, firstLine(p.Detail))
		}
	}
	return strings.TrimSuffix(b.String(), ";")
}

func mergeSorted(a, b []PodResult) []PodResult {
	out := make([]PodResult, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		if j == len(b) || (i < len(a) && a[i].Pod < b[j].Pod) {
			out = append(out, a[i])
			i++
		} else {
			out = append(out, b[j])
			j++
		}
	}
	return out
}

// reloadPod runs the test and reload commands in one pod, retrying transient
// failures, all within PodTimeout. A deterministic failure (nginx -t refusing
// the configuration, a pod or container the API server does not know, a
// missing permission) is not retried: the next attempt would fail the same
// way. The error is the last attempt's, for callers that look for a
// *PermissionError.
func (r *Reloader) reloadPod(ctx context.Context, pod string) (PodResult, error) {
	// What this pod's execs learn (a refused WebSocket upgrade) stays with
	// this pod: one bad pod must not change how the others are reached.
	f := &fanout{}
	start := time.Now()
	res := PodResult{Pod: pod, Self: pod == r.cfg.PodName}
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PodTimeout)
	defer cancel()

	delay := r.cfg.RetryDelay
	var lastErr error
	for attempt := 1; ; attempt++ {
		res.Attempts = attempt
		err := r.reloadOnce(pctx, f, pod)
		if err == nil {
			res.Outcome, res.Detail, lastErr = OutcomeReloaded, "", nil
			break
		}
		if pctx.Err() != nil {
			res.Outcome = OutcomeTimedOut
			res.Detail = timeoutDetail(ctx, r.cfg.PodTimeout, err, lastErr)
			lastErr = err
			break
		}
		res.Outcome, res.Detail, lastErr = OutcomeFailed, truncate(err.Error()), err
		var pe *PermissionError
		if errors.As(err, &pe) || deterministic(err) || attempt > r.cfg.Retries {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-pctx.Done():
			t.Stop()
		}
		if pctx.Err() != nil {
			break // keep the failure: it says more than the timeout
		}
		delay *= 2
	}
	res.Duration = time.Since(start)
	return res, lastErr
}

func timeoutDetail(parent context.Context, timeout time.Duration, err, earlier error) string {
	d := fmt.Sprintf("no answer within the per-pod timeout of %s", timeout)
	if parent.Err() != nil {
		d = "stopped: " + context.Cause(parent).Error()
	}
	// err names the command that was running: "nginx -t: context deadline exceeded".
	if cmd, _, ok := strings.Cut(err.Error(), ": "); ok {
		d += " (running " + cmd + ")"
	}
	if earlier != nil {
		d += "; earlier attempt: " + firstLine(earlier.Error())
	}
	return truncate(d)
}

// reloadOnce runs `nginx -t` then `nginx -s reload` in the pod. nginx -t
// exiting non-zero is deterministic (the configuration on disk is refused);
// the reload's own failure may be a race with a restarting master.
func (r *Reloader) reloadOnce(ctx context.Context, f *fanout, pod string) error {
	if err := r.exec(ctx, f, pod, r.cfg.TestCommand); err != nil {
		var exit *commandExitError
		if errors.As(err, &exit) {
			return &deterministicError{err: err}
		}
		return err
	}
	return r.exec(ctx, f, pod, r.cfg.ReloadCommand)
}

// deterministicError is a failure that retrying cannot change.
type deterministicError struct{ err error }

func (e *deterministicError) Error() string { return e.err.Error() }
func (e *deterministicError) Unwrap() error { return e.err }

// deterministic reports a failure not worth retrying: one marked so, or an
// API server answer about the request itself (400 bad request such as an
// unknown container, 404 no such pod, 422), as opposed to overload (429) or
// server errors (5xx).
func deterministic(err error) bool {
	if errors.As(err, new(*deterministicError)) {
		return true
	}
	var se *apierrors.StatusError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Status().Code {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusMethodNotAllowed:
		return true
	}
	return false
}

// commandExitError is a command that ran in the pod and exited non-zero.
type commandExitError struct {
	cmd    string
	status int
	output string
}

func (e *commandExitError) Error() string {
	return fmt.Sprintf("%s: exit status %d: %s", e.cmd, e.status, e.output)
}

// fanout is what one pod's reload learns as it goes.
type fanout struct {
	// wsRefused is set once the API server refused a WebSocket upgrade for
	// a reason other than permission (an older server or kubelet): the
	// pod's remaining execs go straight to SPDY instead of paying a refused
	// handshake each.
	wsRefused atomic.Bool
}

// exec runs cmd in the pod's nginx container through pods/exec, WebSocket
// first and SPDY when the WebSocket upgrade fails, as kubectl does. A failure
// carries the command's stderr.
func (r *Reloader) exec(ctx context.Context, f *fanout, pod string, cmd []string) error {
	name := strings.Join(cmd, " ")
	u := r.client.CoreV1().RESTClient().Post().
		Namespace(r.namespace).Resource("pods").Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: r.cfg.Container,
			Command:   cmd,
			Stdout:    true,
			Stderr:    true,
		}, scheme.ParameterCodec).URL()

	spdy, err := remotecommand.NewSPDYExecutor(r.rest, http.MethodPost, u)
	if err != nil {
		return fmt.Errorf("%s: spdy executor: %w", name, err)
	}
	var (
		exe   remotecommand.Executor = spdy
		wsErr error
	)
	if !f.wsRefused.Load() {
		ws, err := remotecommand.NewWebSocketExecutor(r.rest, http.MethodGet, u.String())
		if err != nil {
			return fmt.Errorf("%s: websocket executor: %w", name, err)
		}
		exe, err = remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
			wsErr = err
			fallback := httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
			if fallback && forbiddenUpgrade(err) == nil {
				f.wsRefused.Store(true)
			}
			return fallback
		})
		if err != nil {
			return fmt.Errorf("%s: fallback executor: %w", name, err)
		}
	}

	var stdout, stderr limitedBuffer
	err = exe.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	if err == nil {
		return nil
	}
	if se := forbiddenUpgrade(wsErr); se != nil {
		// The SPDY fallback only says "unable to upgrade connection"; the
		// WebSocket attempt kept the API server's Status.
		return fmt.Errorf("%s: %w", name, &PermissionError{
			Verb: "create", Resource: "pods/exec", Namespace: r.namespace, Manifest: ManifestExecRBAC, Err: se,
		})
	}
	var exitErr utilexec.ExitError
	if errors.As(err, &exitErr) {
		return &commandExitError{cmd: name, status: exitErr.ExitStatus(), output: outputDetail(&stderr, &stdout)}
	}
	if se := statusOf(wsErr); se != nil && deterministic(se) {
		// SPDY's error only says "unable to upgrade connection"; the
		// WebSocket attempt kept the API server's Status (unknown container,
		// no such pod).
		return fmt.Errorf("%s: %w", name, se)
	}
	if out := outputDetail(&stderr, &stdout); out != "" {
		return fmt.Errorf("%s: %w: %s", name, err, out)
	}
	return fmt.Errorf("%s: %w", name, err)
}

// statusOf returns the API server's Status from a failed WebSocket upgrade.
func statusOf(err error) *apierrors.StatusError {
	var up *httpstream.UpgradeFailureError
	if !errors.As(err, &up) {
		return nil
	}
	var se *apierrors.StatusError
	if errors.As(up.Cause, &se) {
		return se
	}
	return nil
}

// forbiddenUpgrade returns the API server's 403 Status from a failed
// WebSocket upgrade, if that is what it was.
func forbiddenUpgrade(err error) *apierrors.StatusError {
	var up *httpstream.UpgradeFailureError
	if !errors.As(err, &up) {
		return nil
	}
	var se *apierrors.StatusError
	if errors.As(up.Cause, &se) && apierrors.IsForbidden(se) {
		return se
	}
	return nil
}

func outputDetail(stderr, stdout *limitedBuffer) string {
	out := strings.TrimSpace(stderr.String())
	if out == "" {
		out = strings.TrimSpace(stdout.String())
	}
	return out
}

func truncate(s string) string {
	if len(s) <= maxDetail {
		return s
	}
	return s[:maxDetail] + "…"
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// limitedBuffer keeps the first maxDetail bytes written and discards the rest,
// so a chatty command cannot grow memory.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := maxDetail - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
