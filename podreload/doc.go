// Package podreload makes a changed nginx configuration live on every replica
// of the certmgr Deployment, and says which replicas took it.
//
// A new certificate is useless until nginx on every pod has reloaded. The old
// setup ran `kubectl exec` in a loop and never knew which pods failed. This
// package finds the sibling pods through the Deployment's own selector, execs
// `nginx -t` then `nginx -s reload` in each pod's nginx container through the
// pods/exec subresource (WebSocket with SPDY fallback, as kubectl does), in
// parallel with a per-pod timeout, and reports one [PodResult] per pod.
//
// Three modes ([Mode]): local (reload this pod's nginx only, through a
// [LocalReloader]), exec (every pod), and rollout (patch the Deployment's pod
// template like `kubectl rollout restart`, for clusters that forbid exec).
//
// Permission errors from the API server are turned into a [PermissionError]
// that names the verb, resource and namespace the service account lacks and the
// manifest in deploy/ that grants it.
package podreload
