package podreload

import (
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Manifests in deploy/ that grant what each mode needs. Keep in step with the
// files the deploy manifests ship.
const (
	// ManifestExecRBAC grants exec mode: get deployments, list pods,
	// create pods/exec (get pods/exec is optional: it saves the refused
	// WebSocket upgrade before the SPDY fallback).
	ManifestExecRBAC = "deploy/components/reload-exec/rbac.yaml"
	// ManifestRolloutRBAC grants rollout mode: get and patch deployments.
	ManifestRolloutRBAC = "deploy/components/reload-rollout/rbac.yaml"
)

// PermissionError says which permission the service account lacks, where, and
// which manifest grants it. It wraps the API server's error.
type PermissionError struct {
	Verb      string // "create", "get", "list", "patch"
	Resource  string // "pods/exec", "deployments", "pods"
	Namespace string
	Manifest  string // a path in deploy/
	Err       error  // the API server's answer
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("service account may not %s %s in namespace %q: apply %s (a Role and RoleBinding granting it) or change the reload mode; API server said: %v",
		e.Verb, e.Resource, e.Namespace, e.Manifest, e.Err)
}

func (e *PermissionError) Unwrap() error { return e.Err }

// forbidden turns a 403 from the API server into a *PermissionError and
// returns any other error unchanged.
func forbidden(err error, verb, resource, namespace, manifest string) error {
	if err == nil {
		return nil
	}
	if apierrors.IsForbidden(err) {
		return &PermissionError{Verb: verb, Resource: resource, Namespace: namespace, Manifest: manifest, Err: err}
	}
	return err
}
