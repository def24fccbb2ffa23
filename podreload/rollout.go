package podreload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// RestartedAtAnnotation is the pod template annotation `kubectl rollout
// restart` sets; changing it makes the Deployment replace its pods.
const RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// restart patches the Deployment's pod template the way `kubectl rollout
// restart deployment/NAME` does: the same annotation, an RFC 3339 local time,
// a strategic merge patch computed from the object read back.
func (r *Reloader) restart(ctx context.Context) (Result, error) {
	start := time.Now()
	res := Result{Mode: ModeRollout}
	deps := r.client.AppsV1().Deployments(r.namespace)
	parent := ctx
	ctx, cancel := r.apiContext(ctx)
	defer cancel()
	dep, err := deps.Get(ctx, r.cfg.DeploymentName, metav1.GetOptions{})
	err = r.apiTimedOut(parent, ctx, err)
	if err != nil {
		return res, fmt.Errorf("get deployment %s/%s: %w", r.namespace, r.cfg.DeploymentName,
			forbidden(err, "get", "deployments", r.namespace, ManifestRolloutRBAC))
	}
	patch, at, err := restartPatch(dep, r.now())
	if err != nil {
		return res, fmt.Errorf("restart deployment %s/%s: %w", r.namespace, r.cfg.DeploymentName, err)
	}
	_, err = deps.Patch(ctx, r.cfg.DeploymentName, types.StrategicMergePatchType, patch,
		metav1.PatchOptions{FieldManager: r.cfg.FieldManager})
	err = r.apiTimedOut(parent, ctx, err)
	if err != nil {
		return res, fmt.Errorf("patch deployment %s/%s: %w", r.namespace, r.cfg.DeploymentName,
			forbidden(err, "patch", "deployments", r.namespace, ManifestRolloutRBAC))
	}
	res.Pods = []PodResult{{
		Pod:      "deployment/" + r.cfg.DeploymentName,
		Outcome:  OutcomeRestarted,
		Attempts: 1,
		Detail:   RestartedAtAnnotation + "=" + at,
		Duration: time.Since(start),
	}}
	r.log.Debug().Str("deployment", r.cfg.DeploymentName).Str("restarted_at", at).Msg("rollout restart requested")
	return res, nil
}

// restartPatch returns the strategic merge patch kubectl's object restarter
// produces for dep at time now, and the annotation value.
func restartPatch(dep *appsv1.Deployment, now time.Time) (patch []byte, at string, err error) {
	if dep.Spec.Paused {
		return nil, "", errors.New("can't restart paused deployment (run rollout resume first)")
	}
	original, err := json.Marshal(dep)
	if err != nil {
		return nil, "", fmt.Errorf("encode deployment: %w", err)
	}
	mod := dep.DeepCopy()
	if mod.Spec.Template.Annotations == nil {
		mod.Spec.Template.Annotations = map[string]string{}
	}
	at = now.Format(time.RFC3339)
	mod.Spec.Template.Annotations[RestartedAtAnnotation] = at
	modified, err := json.Marshal(mod)
	if err != nil {
		return nil, "", fmt.Errorf("encode deployment: %w", err)
	}
	patch, err = strategicpatch.CreateTwoWayMergePatch(original, modified, &appsv1.Deployment{})
	if err != nil {
		return nil, "", fmt.Errorf("compute patch: %w", err)
	}
	return patch, at, nil
}
