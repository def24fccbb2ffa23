// Package fakekube plays the Kubernetes API server for podreload's tests and
// benchmarks: the few endpoints podreload and `kubectl rollout restart` call,
// answered with real API JSON. pods/exec is served with Kubernetes' own
// streaming code: a WebSocket (v5.channel.k8s.io) exec goes through the API
// server's StreamTranslatorHandler (k8s.io/apiserver) to a "kubelet" running
// the kubelet's ServeExec (k8s.io/cri-streaming) over SPDY, as in a current
// cluster; an SPDY exec reaches ServeExec directly; with SPDYOnly the WebSocket
// upgrade is refused, as by an older API server. client-go's remotecommand
// runs unchanged against it. What a command does in a "pod" is a Go function;
// podreload's tests make it run a real nginx.
//
// A real kube-apiserver can be built here (see DEPENDENCIES.md) but takes
// minutes to build and seconds to start; this server starts in milliseconds and
// lets a test make one pod slow, failing or hanging.
package fakekube
