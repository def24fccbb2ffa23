// Package fakekube plays the Kubernetes API server for podreload's tests and
// benchmarks: the few endpoints podreload and `kubectl rollout restart` call,
// answered with real API JSON, and pods/exec served by the kubelet's own
// streaming code (k8s.io/cri-streaming ServeExec) over SPDY, so client-go's
// remotecommand runs unchanged against it. What a command does in a "pod" is a
// Go function; podreload's tests make it run a real nginx.
//
// A real kube-apiserver can be built here (see DEPENDENCIES.md) but takes
// minutes to build and seconds to start; this server starts in milliseconds and
// lets a test make one pod slow, failing or hanging.
package fakekube
