package fakekube

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	apiproxy "k8s.io/apiserver/pkg/util/proxy"
	crc "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	utilexec "k8s.io/utils/exec"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// ExecFunc is what running cmd in a pod does. A non-nil *ExitError (or an
// *exec.ExitError) becomes the command's exit status; ctx ends when the server
// closes.
type ExecFunc func(ctx context.Context, cmd []string, stdout, stderr io.Writer) error

// ExitError ends a command with Code.
type ExitError struct {
	Code int
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Pod is one pod of the Deployment.
type Pod struct {
	Name        string
	Labels      map[string]string // default: the Deployment's pod template labels
	Phase       corev1.PodPhase   // default Running
	NotReady    bool
	Terminating bool
	// RefuseWebSocket answers a WebSocket exec of this pod with 400 (a
	// non-403 upgrade failure); SPDY still works.
	RefuseWebSocket bool
	Exec            ExecFunc // default: exit 0, no output
}

// Options describe the cluster.
type Options struct {
	Namespace  string             // default "certmgr"
	Deployment *appsv1.Deployment // required: name and spec.selector
	Pods       []Pod
	// OtherPods are in the namespace but not the Deployment's (other labels).
	OtherPods []Pod
	// SPDYOnly refuses WebSocket exec like an API server before 1.30 (or a
	// kubelet reached directly); clients must fall back to SPDY. By default
	// a WebSocket (v5.channel.k8s.io) exec is translated to SPDY towards the
	// "kubelet" by the API server's own StreamTranslatorHandler, as a current
	// API server does.
	SPDYOnly bool
	// NeverAnswer makes the server accept connections and requests (TLS
	// included) and never send a response, like an API server behind a
	// stalled load balancer. Requests end only when the client gives up.
	NeverAnswer bool
}

// ExecRecord is one pods/exec request that reached a pod.
type ExecRecord struct {
	Pod       string
	Container string
	Command   []string
	Protocol  string // how the client reached the API server: "websocket" or "spdy"
}

// PatchRecord is one PATCH of the Deployment as received.
type PatchRecord struct {
	Name         string
	ContentType  string
	FieldManager string
	Body         []byte
}

// Server is a running fake API server.
type Server struct {
	URL        string
	Kubeconfig string // path of a kubeconfig that reaches URL over TLS
	Namespace  string

	ns      string
	pods    map[string]Pod
	ctx     context.Context // ends at Close, ends hanging commands
	spdy    bool            // refuse WebSocket
	kubelet *url.URL        // where translated WebSocket execs go

	mu        sync.Mutex
	dep       *appsv1.Deployment
	podList   []corev1.Pod
	forbidden map[string]bool // "verb resource"
	execs     []ExecRecord
	upgrades  map[string]int // exec requests by method, upgraded or not
	patches   []PatchRecord
	stalled   int // requests left unanswered (NeverAnswer)
}

// Stalled is how many requests the server left unanswered (NeverAnswer).
func (s *Server) Stalled() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stalled
}

var quietKlog sync.Once

// Start runs a fake API server over TLS until the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	ns := opts.Namespace
	if ns == "" {
		ns = "certmgr"
	}
	quietKlog.Do(func() {
		// The streaming code reports a refused WebSocket upgrade (every
		// exec, before the SPDY fallback) through klog; keep test output clean.
		klog.SetLogger(logr.Discard())
	})
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		Namespace: ns, ns: ns, ctx: ctx,
		pods:      map[string]Pod{},
		dep:       opts.Deployment.DeepCopy(),
		forbidden: map[string]bool{},
		upgrades:  map[string]int{},
		spdy:      opts.SPDYOnly,
	}
	s.dep.Namespace = ns
	s.dep.TypeMeta = metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}
	if s.dep.UID == "" {
		s.dep.UID = "0e1f3c1a-5b5c-4c7e-9d0b-000000000001"
	}
	if s.dep.ResourceVersion == "" {
		s.dep.ResourceVersion = "1"
	}
	for _, p := range opts.Pods {
		if p.Labels == nil {
			p.Labels = s.dep.Spec.Template.Labels
		}
		s.addPod(p)
	}
	for _, p := range opts.OtherPods {
		if p.Labels == nil {
			p.Labels = map[string]string{"app": "something-else"}
		}
		s.addPod(p)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /api", s.apiVersions)
	mux.HandleFunc("GET /apis", s.apiGroups)
	mux.HandleFunc("GET /api/v1", s.coreResources)
	mux.HandleFunc("GET /apis/apps/v1", s.appsResources)
	mux.HandleFunc("GET /apis/apps/v1/namespaces/{ns}/deployments/{name}", s.getDeployment)
	mux.HandleFunc("PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}", s.patchDeployment)
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods", s.listPods)
	mux.HandleFunc("/api/v1/namespaces/{ns}/pods/{name}/exec", s.exec)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource: "+r.Method+" "+r.URL.Path)
	})

	// The "kubelet": the API server's translator reaches the pods here over
	// SPDY, with the kubelet's own query parameters.
	kmux := http.NewServeMux()
	kmux.HandleFunc("POST /exec/{ns}/{name}/{uid}/{container}", s.kubeletExec)
	kubelet := httptest.NewServer(kmux)
	s.kubelet, _ = url.Parse(kubelet.URL)

	var handler http.Handler = mux
	if opts.NeverAnswer {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.mu.Lock()
			s.stalled++
			s.mu.Unlock()
			select {
			case <-r.Context().Done():
			case <-ctx.Done():
			}
		})
	}
	srv := httptest.NewUnstartedServer(handler)
	// The test kit's CA and ECDSA key rather than httptest's self-signed RSA
	// key: the server's handshakes then cost little, so benchmarks measure
	// the client.
	tlsCA := testpeers.NewCA(t, "fakekube CA")
	leaf := tlsCA.Issue(t, testpeers.LeafOptions{Names: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}})
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}}
	srv.StartTLS()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		kubelet.Close()
	})
	s.URL = srv.URL
	s.Kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: certmgr
  user:
    token: fake-token
contexts:
- name: fake
  context:
    cluster: fake
    user: certmgr
    namespace: %s
current-context: fake
`, srv.URL, base64.StdEncoding.EncodeToString(tlsCA.PEM), ns)
	if err := os.WriteFile(s.Kubeconfig, []byte(kc), 0o600); err != nil {
		t.Fatalf("write kubeconfig: %v", err)
	}
	return s
}

func (s *Server) addPod(p Pod) {
	if p.Phase == "" {
		p.Phase = corev1.PodRunning
	}
	s.pods[p.Name] = p
	ready := corev1.ConditionTrue
	if p.NotReady || p.Phase != corev1.PodRunning {
		ready = corev1.ConditionFalse
	}
	obj := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: s.ns, Labels: p.Labels,
			UID:             types.UID("pod-uid-" + apiTypesUID(p.Name)),
			ResourceVersion: "1",
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "proxy", Image: "nginx"}, {Name: "certmgr", Image: "certmgr"}}},
		Status: corev1.PodStatus{
			Phase:      p.Phase,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}},
		},
	}
	if p.Terminating {
		now := metav1.NewTime(time.Now())
		obj.DeletionTimestamp = &now
	}
	s.podList = append(s.podList, obj)
}

func apiTypesUID(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

// Forbid makes the server answer 403 to verb on resource, like RBAC would,
// e.g. Forbid("create", "pods/exec").
func (s *Server) Forbid(verb, resource string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forbidden[verb+" "+resource] = true
}

// Execs returns the exec requests that reached a pod, in order.
func (s *Server) Execs() []ExecRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.execs)
}

// ExecRequests counts pods/exec requests by method (GET: WebSocket, POST:
// SPDY), including refused upgrades.
func (s *Server) ExecRequests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.upgrades)
}

// Patches returns the Deployment PATCH requests, in order.
func (s *Server) Patches() []PatchRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.patches)
}

// Deployment returns the Deployment as it is now (after patches).
func (s *Server) Deployment() *appsv1.Deployment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dep.DeepCopy()
}

// deny writes a 403 like the API server's RBAC authorizer and reports whether
// it did.
func (s *Server) deny(w http.ResponseWriter, verb, resource, group, name string) bool {
	s.mu.Lock()
	denied := s.forbidden[verb+" "+resource]
	s.mu.Unlock()
	if !denied {
		return false
	}
	subject := resource
	if name != "" {
		subject = fmt.Sprintf("%s %q", baseResource(resource), name)
	}
	msg := fmt.Sprintf(`%s is forbidden: User "system:serviceaccount:%s:certmgr" cannot %s resource %q in API group %q in the namespace %q`,
		subject, s.ns, verb, resource, group, s.ns)
	writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, msg)
	return true
}

func baseResource(r string) string {
	for i := range r {
		if r[i] == '/' {
			return r[:i]
		}
	}
	return r
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	writeJSON(w, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  msg,
		Reason:   reason,
		Code:     int32(code),
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func (s *Server) wrongNamespace(w http.ResponseWriter, r *http.Request) bool {
	if r.PathValue("ns") == s.ns {
		return false
	}
	writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("namespaces %q not found", r.PathValue("ns")))
	return true
}

func (s *Server) apiVersions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, &metav1.APIVersions{
		TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
		Versions: []string{"v1"},
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{
			{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host},
		},
	})
}

func (s *Server) apiGroups(w http.ResponseWriter, _ *http.Request) {
	apps := metav1.GroupVersionForDiscovery{GroupVersion: "apps/v1", Version: "v1"}
	writeJSON(w, http.StatusOK, &metav1.APIGroupList{
		TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"},
		Groups:   []metav1.APIGroup{{Name: "apps", Versions: []metav1.GroupVersionForDiscovery{apps}, PreferredVersion: apps}},
	})
}

func (s *Server) coreResources(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, &metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: "v1",
		APIResources: []metav1.APIResource{
			{Name: "pods", SingularName: "pod", Namespaced: true, Kind: "Pod", ShortNames: []string{"po"},
				Verbs: metav1.Verbs{"get", "list"}},
			{Name: "pods/exec", Namespaced: true, Kind: "PodExecOptions", Verbs: metav1.Verbs{"create", "get"}},
		},
	})
}

func (s *Server) appsResources(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, &metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: "apps/v1",
		APIResources: []metav1.APIResource{
			{Name: "deployments", SingularName: "deployment", Namespaced: true, Kind: "Deployment",
				ShortNames: []string{"deploy"}, Verbs: metav1.Verbs{"get", "list", "patch"}},
		},
	})
}

func (s *Server) getDeployment(w http.ResponseWriter, r *http.Request) {
	if s.wrongNamespace(w, r) || s.deny(w, "get", "deployments", "apps", r.PathValue("name")) {
		return
	}
	dep := s.Deployment()
	if r.PathValue("name") != dep.Name {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("deployments.apps %q not found", r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, dep)
}

func (s *Server) patchDeployment(w http.ResponseWriter, r *http.Request) {
	if s.wrongNamespace(w, r) || s.deny(w, "patch", "deployments", "apps", r.PathValue("name")) {
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.patches = append(s.patches, PatchRecord{
		Name: r.PathValue("name"), ContentType: r.Header.Get("Content-Type"),
		FieldManager: r.URL.Query().Get("fieldManager"), Body: body,
	})
	if r.PathValue("name") != s.dep.Name {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("deployments.apps %q not found", r.PathValue("name")))
		return
	}
	if r.Header.Get("Content-Type") != "application/strategic-merge-patch+json" {
		writeStatus(w, http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType, "this fake only applies strategic merge patches")
		return
	}
	orig, err := json.Marshal(s.dep)
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, err.Error())
		return
	}
	patched, err := strategicpatch.StrategicMergePatch(orig, body, &appsv1.Deployment{})
	if err != nil {
		writeStatus(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, err.Error())
		return
	}
	var dep appsv1.Deployment
	if err := json.Unmarshal(patched, &dep); err != nil {
		writeStatus(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, err.Error())
		return
	}
	dep.Generation++
	s.dep = &dep
	writeJSON(w, http.StatusOK, s.dep)
}

func (s *Server) listPods(w http.ResponseWriter, r *http.Request) {
	if s.wrongNamespace(w, r) || s.deny(w, "list", "pods", "", "") {
		return
	}
	sel, err := labels.Parse(r.URL.Query().Get("labelSelector"))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	list := corev1.PodList{
		TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"},
		ListMeta: metav1.ListMeta{ResourceVersion: "1"},
	}
	s.mu.Lock()
	for _, p := range s.podList {
		if sel.Matches(labels.Set(p.Labels)) {
			list.Items = append(list.Items, p)
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, &list)
}

// exec serves pods/exec: WebSocket requests through the API server's stream
// translator (unless SPDYOnly), SPDY ones with the kubelet's streaming code.
func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, r.Method)
		return
	}
	name := r.PathValue("name")
	s.mu.Lock()
	s.upgrades[r.Method]++
	s.mu.Unlock()
	if s.wrongNamespace(w, r) {
		return
	}
	// A WebSocket exec is a GET: RBAC checks "get pods/exec" for it, and
	// since Kubernetes 1.35 "create pods/exec" as well
	// (AuthorizePodWebsocketUpgradeCreatePermission); an SPDY exec is a
	// POST and needs create only.
	if r.Method == http.MethodGet && s.deny(w, "get", "pods/exec", "", name) || s.deny(w, "create", "pods/exec", "", name) {
		return
	}
	pod, ok := s.pods[name]
	if !ok {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("pods %q not found", name))
		return
	}
	if pod.RefuseWebSocket && wsstream.IsWebSocketRequest(r) {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest,
			fmt.Sprintf("pod %s: the kubelet does not support WebSocket exec", name))
		return
	}
	q := r.URL.Query()
	container := q.Get("container")
	if container != "proxy" && container != "certmgr" {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest,
			fmt.Sprintf("container %s is not valid for pod %s", container, name))
		return
	}
	cmd := q["command"]
	if wsstream.IsWebSocketRequest(r) && !s.spdy {
		// What kube-apiserver does for a v5 WebSocket client: translate to
		// SPDY towards the kubelet, with the kubelet's parameter names.
		kq := url.Values{"command": cmd}
		for client, kubelet := range map[string]string{"stdin": crc.ExecStdinParam, "stdout": crc.ExecStdoutParam, "stderr": crc.ExecStderrParam, "tty": crc.ExecTTYParam} {
			if q.Get(client) == "true" {
				kq.Set(kubelet, "1")
			}
		}
		kq.Set("via", "websocket")
		loc := s.kubelet.JoinPath("exec", s.ns, name, "uid", container)
		loc.RawQuery = kq.Encode()
		opts := apiproxy.Options{
			Stdin: q.Get("stdin") == "true", Stdout: q.Get("stdout") == "true",
			Stderr: q.Get("stderr") == "true", Tty: q.Get("tty") == "true",
		}
		apiproxy.NewStreamTranslatorHandler(loc, &http.Transport{}, 0, opts).ServeHTTP(w, r)
		return
	}
	// client-go sends stdout=true; the kubelet-side names differ, so build the
	// options here as the API server's proxy would.
	opts := &crc.Options{
		Stdin:  q.Get("stdin") == "true",
		Stdout: q.Get("stdout") == "true",
		Stderr: q.Get("stderr") == "true",
		TTY:    q.Get("tty") == "true",
	}
	crc.ServeExec(w, r, &executor{s: s, pod: pod, protocol: "spdy"}, name, "", container, cmd, opts,
		5*time.Minute, 30*time.Second, crc.SupportedStreamingProtocols)
}

// kubeletExec is the kubelet's exec endpoint, reached by the translator.
func (s *Server) kubeletExec(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	pod, ok := s.pods[name]
	if !ok {
		http.Error(w, "pod not found", http.StatusNotFound)
		return
	}
	opts, err := crc.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	protocol := r.URL.Query().Get("via")
	crc.ServeExec(w, r, &executor{s: s, pod: pod, protocol: protocol}, name, "", r.PathValue("container"),
		r.URL.Query()["command"], opts, 5*time.Minute, 30*time.Second, crc.SupportedStreamingProtocols)
}

type executor struct {
	s        *Server
	pod      Pod
	protocol string
}

func (e *executor) ExecInContainer(_ context.Context, name, _ string, container string, cmd []string, _ io.Reader, out, errw io.WriteCloser, _ bool, _ <-chan crc.TerminalSize, _ time.Duration) error {
	e.s.mu.Lock()
	e.s.execs = append(e.s.execs, ExecRecord{Pod: name, Container: container, Command: slices.Clone(cmd), Protocol: e.protocol})
	e.s.mu.Unlock()
	if e.pod.Exec == nil {
		return nil
	}
	if out == nil {
		out = nopCloser{io.Discard}
	}
	if errw == nil {
		errw = nopCloser{io.Discard}
	}
	// The request's context does not end when a hijacked stream closes: the
	// server's does, so hanging commands end with the test.
	err := e.pod.Exec(e.s.ctx, cmd, out, errw)
	var fe *ExitError
	var oe *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return utilexec.CodeExitError{Err: err, Code: fe.Code}
	case errors.As(err, &oe):
		return utilexec.CodeExitError{Err: err, Code: oe.ExitCode()}
	default:
		return err
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// Command returns an ExecFunc that runs a "nginx ..." command as binary with
// args inserted after the name (e.g. -p PREFIX -c CONF), so a pod's
// `nginx -s reload` reaches a test's own nginx. Other commands exit 127.
func Command(binary string, args ...string) ExecFunc {
	return func(ctx context.Context, cmd []string, stdout, stderr io.Writer) error {
		if len(cmd) == 0 || cmd[0] != "nginx" {
			fmt.Fprintf(stderr, "exec: %q: executable file not found in $PATH\n", cmd)
			return &ExitError{Code: 127}
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c := exec.CommandContext(ctx, binary, append(slices.Clone(args), cmd[1:]...)...)
		c.Stdout, c.Stderr = stdout, stderr
		return c.Run()
	}
}
