package podreload

import (
	"context"
	"errors"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// siblings lists the Deployment's pods through its own spec.selector and
// splits them into pods to reload (running, ready, not terminating) and pods
// reported as skipped. It returns the selector for messages.
func (r *Reloader) siblings(parent context.Context) (targets []string, skipped []PodResult, selector labels.Selector, err error) {
	ctx, cancel := r.apiContext(parent)
	defer cancel()
	defer func() { err = r.apiTimedOut(parent, ctx, err) }()
	dep, err := r.client.AppsV1().Deployments(r.namespace).Get(ctx, r.cfg.DeploymentName, metav1.GetOptions{})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("get deployment %s/%s: %w", r.namespace, r.cfg.DeploymentName,
			forbidden(err, "get", "deployments", r.namespace, ManifestExecRBAC))
	}
	if dep.Spec.Selector == nil {
		return nil, nil, nil, fmt.Errorf("deployment %s/%s has no spec.selector", r.namespace, r.cfg.DeploymentName)
	}
	selector, err = metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("deployment %s/%s selector: %w", r.namespace, r.cfg.DeploymentName, err)
	}
	if selector.Empty() {
		// An empty selector would select every pod in the namespace.
		return nil, nil, nil, fmt.Errorf("deployment %s/%s has an empty selector", r.namespace, r.cfg.DeploymentName)
	}
	list, err := r.client.CoreV1().Pods(r.namespace).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list pods %s in %s: %w", selector, r.namespace,
			forbidden(err, "list", "pods", r.namespace, ManifestExecRBAC))
	}
	targets, skipped = classify(list.Items, r.cfg.PodName)
	return targets, skipped, selector, nil
}

// classify splits pods into those to reload and those skipped, with the reason.
// Both come back sorted by name.
func classify(pods []corev1.Pod, self string) (targets []string, skipped []PodResult) {
	for _, p := range pods {
		reason := skipReason(&p)
		if reason == "" {
			targets = append(targets, p.Name)
			continue
		}
		skipped = append(skipped, PodResult{Pod: p.Name, Outcome: OutcomeSkipped, Detail: reason, Self: p.Name == self})
	}
	sort.Strings(targets)
	sort.Slice(skipped, func(i, j int) bool { return skipped[i].Pod < skipped[j].Pod })
	return targets, skipped
}

// skipReason returns why a pod is not reloaded, or "" when it should be.
func skipReason(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "terminating"
	}
	if p.Status.Phase != corev1.PodRunning {
		return fmt.Sprintf("not running (phase %s)", p.Status.Phase)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status == corev1.ConditionTrue {
				return ""
			}
			break
		}
	}
	return "not ready"
}

// apiContext bounds one API call (or a short sequence of them) by APITimeout.
func (r *Reloader) apiContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.cfg.APITimeout)
}

// apiTimedOut says so when err is ctx's own deadline (not the caller's).
func (r *Reloader) apiTimedOut(parent, ctx context.Context, err error) error {
	if err != nil && parent.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("the Kubernetes API server did not answer within %s: %w", r.cfg.APITimeout, err)
	}
	return err
}
