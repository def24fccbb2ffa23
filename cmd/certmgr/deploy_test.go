package main

// The manifests in deploy/ and the Dockerfile, checked against the binary they
// run: every overlay and example is rendered by the real `kubectl kustomize`,
// every object decoded strictly by client-go's scheme (an unknown or
// misspelt field fails), and the objects checked against each other and
// against this package's variable table, subcommands and defaults.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/wire"
	"github.com/midsummer/certmgr/podreload"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

const (
	deployDir   = "../../deploy"
	dockerfile  = "../../Dockerfile"
	makefile    = "../../Makefile"
	gomod       = "../../go.mod"
	envConfig   = "certmgr-env" // the ConfigMap holding certmgr's settings
	serviceAcct = "certmgr"
)

// kubectlPath finds kubectl: fatal in CI, where every tool must be present
// (the convention of internal/testpeers), a skip elsewhere.
func kubectlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kubectl")
	if err != nil {
		msg := "kubectl not found: apt-get install kubectl (scripts/setup-peers.sh installs it)"
		if os.Getenv("CI") != "" {
			t.Fatalf("tool missing in CI: %s", msg)
		}
		t.Skip(msg)
	}
	return p
}

// kustomizations lists every overlay and example directory.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	for _, pattern := range []string{"overlays/*/kustomization.yaml", "examples/*/kustomization.yaml"} {
		m, err := filepath.Glob(filepath.Join(deployDir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m {
			dirs = append(dirs, filepath.Dir(f))
		}
	}
	for _, want := range []string{"overlays/sidecar", "overlays/standalone"} {
		if !slices.Contains(dirs, filepath.Join(deployDir, want)) {
			t.Fatalf("deploy/%s/kustomization.yaml is missing", want)
		}
	}
	return dirs
}

func kustomize(t *testing.T, kubectl, dir string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectl, "kustomize", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v: %s", dir, err, stderr.String())
	}
	return out
}

// strictDecoder decodes YAML into client-go's typed objects and fails on
// unknown and duplicate fields.
var strictDecoder = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// bundle is one rendered kustomization.
type bundle struct {
	dir     string
	objects []runtime.Object
	crs     []map[string]any // custom resources, not in client-go's scheme
}

// decodeAll splits a multi-document YAML stream and decodes each document.
func decodeAll(stream []byte) (typed []runtime.Object, crs []map[string]any, err error) {
	r := kyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return typed, crs, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := strictDecoder.Decode(doc, nil, nil)
		if runtime.IsNotRegisteredError(err) {
			j, err := kyaml.ToJSON(doc)
			if err != nil {
				return nil, nil, fmt.Errorf("document %d: %w", i, err)
			}
			var m map[string]any
			if err := json.Unmarshal(j, &m); err != nil {
				return nil, nil, fmt.Errorf("document %d: %w", i, err)
			}
			crs = append(crs, m)
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", i, err)
		}
		typed = append(typed, obj)
	}
}

func renderAll(t *testing.T) []bundle {
	t.Helper()
	kubectl := kubectlPath(t)
	touchDeployFiles(t)
	var out []bundle
	for _, dir := range kustomizations(t) {
		typed, crs, err := decodeAll(kustomize(t, kubectl, dir))
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		out = append(out, bundle{dir: strings.TrimPrefix(dir, "../../"), objects: typed, crs: crs})
	}
	return out
}

// touchDeployFiles reads every file under deploy/. kubectl reads them, not
// this process, and go test caches a result only against the files the test
// itself opened: without this, an edited manifest would replay a cached pass.
func touchDeployFiles(t *testing.T) {
	t.Helper()
	err := filepath.WalkDir(deployDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		_, err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The decoder the consistency test relies on really refuses what the API
// server would drop silently.
func TestDeployStrictDecoderRefusesUnknownFields(t *testing.T) {
	t.Parallel()
	good := `apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
      - name: c
        image: i:1
        volumeMounts: [{name: v, mountPath: /v}]
`
	if _, _, err := decodeAll([]byte(good)); err != nil {
		t.Fatalf("valid Deployment refused: %v", err)
	}
	for _, tc := range []struct{ desc, from, to string }{
		{"misspelt field", "volumeMounts:", "volumeMount:"},
		{"field at the wrong level", "    spec:\n", "    spec:\n      terminationGracePeriod: 75\n"},
		{"duplicate field", "        image: i:1\n", "        image: i:1\n        image: i:2\n"},
	} {
		bad := strings.Replace(good, tc.from, tc.to, 1)
		if _, _, err := decodeAll([]byte(bad)); err == nil {
			t.Errorf("%s: decoded without error:\n%s", tc.desc, bad)
		}
	}
}

func TestDeployManifests(t *testing.T) {
	t.Parallel()
	for _, b := range renderAll(t) {
		t.Run(strings.ReplaceAll(b.dir, "/", "_"), func(t *testing.T) {
			t.Parallel()
			newManifestCheck(t, b).run()
		})
	}
}

// podTemplate is a pod spec found in a workload, with where it came from.
type podTemplate struct {
	owner  string // Kind/name
	kind   string
	name   string
	labels map[string]string
	annot  map[string]string
	spec   *corev1.PodSpec
}

type manifestCheck struct {
	t          *testing.T
	b          bundle
	namespace  string
	config     map[string]string // the certmgr-env ConfigMap
	settings   Configs
	pods       []podTemplate
	pvcs       map[string]*corev1.PersistentVolumeClaim
	services   []*corev1.Service
	configMaps map[string]*corev1.ConfigMap
	binPath    string // where the Dockerfile puts the binary
}

func newManifestCheck(t *testing.T, b bundle) *manifestCheck {
	c := &manifestCheck{t: t, b: b, pvcs: map[string]*corev1.PersistentVolumeClaim{}, configMaps: map[string]*corev1.ConfigMap{}}
	for _, o := range b.objects {
		switch o := o.(type) {
		case *appsv1.Deployment:
			c.pods = append(c.pods, podTemplate{"Deployment/" + o.Name, "Deployment", o.Name, o.Spec.Template.Labels, o.Spec.Template.Annotations, &o.Spec.Template.Spec})
		case *batchv1.CronJob:
			tp := &o.Spec.JobTemplate.Spec.Template
			c.pods = append(c.pods, podTemplate{"CronJob/" + o.Name, "CronJob", o.Name, tp.Labels, tp.Annotations, &tp.Spec})
		case *batchv1.Job:
			c.pods = append(c.pods, podTemplate{"Job/" + o.Name, "Job", o.Name, o.Spec.Template.Labels, o.Spec.Template.Annotations, &o.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			c.pods = append(c.pods, podTemplate{"StatefulSet/" + o.Name, "StatefulSet", o.Name, o.Spec.Template.Labels, o.Spec.Template.Annotations, &o.Spec.Template.Spec})
		case *appsv1.DaemonSet:
			c.pods = append(c.pods, podTemplate{"DaemonSet/" + o.Name, "DaemonSet", o.Name, o.Spec.Template.Labels, o.Spec.Template.Annotations, &o.Spec.Template.Spec})
		case *corev1.Pod:
			c.pods = append(c.pods, podTemplate{"Pod/" + o.Name, "Pod", o.Name, o.Labels, o.Annotations, &o.Spec})
		case *corev1.PersistentVolumeClaim:
			c.pvcs[o.Name] = o
		case *corev1.Service:
			c.services = append(c.services, o)
		case *corev1.ConfigMap:
			c.configMaps[o.Name] = o
		}
	}
	return c
}

func (c *manifestCheck) errorf(format string, args ...any) {
	c.t.Helper()
	c.t.Errorf(format, args...)
}

func (c *manifestCheck) run() {
	t := c.t
	cm, ok := c.configMaps[envConfig]
	if !ok {
		// Only a piece for others to include (the app stand-in): it must
		// still be well formed, and run no certmgr.
		for _, p := range c.pods {
			c.checkVolumes(p)
			for _, ct := range allContainers(p.spec) {
				if _, ok := certmgrArgs(ct); ok {
					t.Errorf("%s runs certmgr without ConfigMap %s", p.owner, envConfig)
				}
			}
		}
		c.checkImages()
		return
	}
	c.config = cm.Data
	c.binPath = dockerfileBinary(t)
	c.loadSettings()
	c.checkNamespace()
	c.checkImages()
	for _, p := range c.pods {
		c.checkVolumes(p)
		c.checkCertmgrContainers(p)
		for i := range p.spec.InitContainers {
			ct := &p.spec.InitContainers[i]
			if _, ok := certmgrArgs(ct); !ok {
				c.checkSecurity(p, ct, p.owner+" init container "+ct.Name)
			}
		}
	}
	c.checkSharedStorage()
	c.checkServices()
	c.checkRBAC()
	c.checkTokens()
	c.checkNetworkPolicies()
	c.checkCustomResources()
}

// saTokenPath is where client-go's in-cluster configuration reads the token.
const saTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// tokenVolumes are the pod's volumes that carry a service account token.
func tokenVolumes(spec *corev1.PodSpec) map[string]bool {
	out := map[string]bool{}
	for _, v := range spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken != nil {
				out[v.Name] = true
			}
		}
	}
	return out
}

// checkTokens: the service account's token (exec into every pod, or restart
// the Deployment) reaches the certmgr worker only. In a pod shared with other
// containers (the sidecar layout) the pod mounts no token and a projected one
// is mounted into the worker alone; in local mode no container gets one.
func (c *manifestCheck) checkTokens() {
	needsAPI := c.settings.Reload.Mode != podreload.ModeLocal
	for _, p := range c.pods {
		tokens := tokenVolumes(p.spec)
		var worker *corev1.Container
		shared := false
		for _, ct := range allContainers(p.spec) {
			args, ok := certmgrArgs(ct)
			if ok && len(args) > 0 && args[0] == "worker" {
				worker = ct
			} else if !ok {
				shared = true
			}
			for _, m := range ct.VolumeMounts {
				if !tokens[m.Name] {
					continue
				}
				switch {
				case !needsAPI:
					c.errorf("%s: reload mode local calls no API, but container %s mounts the token volume %s", p.owner, ct.Name, m.Name)
				case !ok || ct != worker:
					c.errorf("%s: container %s mounts the service account token (volume %s); only the certmgr worker may", p.owner, ct.Name, m.Name)
				}
			}
		}
		if worker == nil || !shared {
			continue
		}
		if p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken {
			c.errorf("%s: certmgr shares the pod with other containers, but the pod mounts the service account token into all of them: set automountServiceAccountToken: false", p.owner)
		}
		if m := mountAt(worker, saTokenPath); needsAPI && (m == nil || !tokens[m.Name] || !m.ReadOnly) {
			c.errorf("%s: reload mode %s calls the API, but the worker has no read-only projected token at %s", p.owner, c.settings.Reload.Mode, saTokenPath)
		}
	}
}

// checkNetworkPolicies: a policy covering certmgr's pods lets only selected
// sources reach the HTTP port (no rule opens it to everyone), keeps nginx's
// Service ports open, and is not an allow-all.
func (c *manifestCheck) checkNetworkPolicies() {
	httpPort := portOf(c.t, c.settings.HTTPAddr)
	for _, o := range c.b.objects {
		np, ok := o.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || sel.Empty() {
			c.errorf("NetworkPolicy %s: selector %v selects every pod of the namespace (%v)", np.Name, np.Spec.PodSelector, err)
			continue
		}
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			c.errorf("NetworkPolicy %s does not restrict ingress", np.Name)
		}
		covered := false
		for _, p := range c.pods {
			if !sel.Matches(labels.Set(p.labels)) {
				continue
			}
			var worker *corev1.Container
			for _, ct := range allContainers(p.spec) {
				if args, ok := certmgrArgs(ct); ok && len(args) > 0 && args[0] == "worker" {
					worker = ct
				}
			}
			if worker == nil {
				continue
			}
			covered = true
			// What each rule admits, resolved against this pod's ports.
			open := map[int]bool{}
			restricted := map[int]bool{}
			for _, r := range np.Spec.Ingress {
				if len(r.Ports) == 0 && len(r.From) == 0 {
					c.errorf("NetworkPolicy %s has an allow-all ingress rule", np.Name)
				}
				for _, pp := range r.Ports {
					if pp.Port == nil {
						c.errorf("NetworkPolicy %s: a rule opens every port", np.Name)
						continue
					}
					for _, ct := range p.spec.Containers {
						if n := resolvePort(&ct, *pp.Port); n != 0 {
							if len(r.From) == 0 {
								open[n] = true
							} else {
								restricted[n] = true
							}
						}
					}
				}
			}
			if open[httpPort] || !restricted[httpPort] {
				c.errorf("NetworkPolicy %s: %s's port %d must be reachable from selected sources only (open %v, restricted %v)", np.Name, p.owner, httpPort, open[httpPort], restricted[httpPort])
			}
			for _, svc := range c.services {
				if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(p.labels)) || svc.Name == "certmgr-metrics" {
					continue
				}
				for _, sp := range svc.Spec.Ports {
					for _, n := range c.targets(svc, sp) {
						if !open[n] {
							c.errorf("NetworkPolicy %s blocks port %d of Service %s on %s", np.Name, n, svc.Name, p.owner)
						}
					}
				}
			}
		}
		if !covered {
			c.errorf("NetworkPolicy %s selects no pod running the certmgr worker", np.Name)
		}
	}
}

// loadSettings reads the ConfigMap the way the binary reads its environment,
// with stand-ins for the variables that come from the Secret.
func (c *manifestCheck) loadSettings() {
	secret := map[string]string{
		EnvDBURL:     "postgres://certmgr@db.example:5432/midsummer",
		EnvBrokerURL: "redis://redis.example:6379/0",
	}
	for k := range secret {
		if _, ok := c.config[k]; ok {
			c.errorf("ConfigMap %s sets %s: it holds a password and belongs in the Secret certmgr-secrets", envConfig, k)
		}
	}
	get := func(name string) string {
		if v, ok := c.config[name]; ok {
			return v
		}
		return secret[name]
	}
	s, err := loadConfigs(get, needs{db: true, target: true})
	if err != nil {
		c.t.Fatalf("ConfigMap %s is not a configuration certmgr accepts: %v", envConfig, err)
	}
	c.settings = s
}

// checkNamespace: one namespace for everything namespaced.
func (c *manifestCheck) checkNamespace() {
	seen := map[string][]string{}
	for _, o := range c.b.objects {
		m, err := metaOf(o)
		if err != nil {
			c.t.Fatal(err)
		}
		kind := o.GetObjectKind().GroupVersionKind().Kind
		if kind == "Namespace" || kind == "ClusterRole" || kind == "ClusterRoleBinding" {
			continue
		}
		seen[m.GetNamespace()] = append(seen[m.GetNamespace()], kind+"/"+m.GetName())
	}
	for _, cr := range c.b.crs {
		md, _ := cr["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		seen[ns] = append(seen[ns], fmt.Sprint(cr["kind"], "/", md["name"]))
	}
	if len(seen) != 1 {
		c.errorf("objects are spread over namespaces: %v", seen)
	}
	for ns := range seen {
		if ns == "" {
			c.errorf("objects without a namespace: %v", seen[ns])
		}
		c.namespace = ns
	}
}

func metaOf(o runtime.Object) (metav1.Object, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no metadata", o)
	}
	return m, nil
}

var tagged = regexp.MustCompile(`^[^@]+:[A-Za-z0-9_][A-Za-z0-9_.-]*$|@sha256:[0-9a-f]{64}$`)

// checkImages: every image, container or volume, names a version.
func (c *manifestCheck) checkImages() {
	check := func(where, ref string) {
		last := ref[strings.LastIndex(ref, "/")+1:]
		if !tagged.MatchString(last) && !strings.Contains(ref, "@sha256:") {
			c.errorf("%s: image %q has no tag or digest", where, ref)
		}
		if strings.HasSuffix(ref, ":latest") {
			c.errorf("%s: image %q uses the latest tag", where, ref)
		}
	}
	for _, p := range c.pods {
		for _, ct := range allContainers(p.spec) {
			check(p.owner+" container "+ct.Name, ct.Image)
		}
		for _, v := range p.spec.Volumes {
			if v.Image != nil {
				check(p.owner+" volume "+v.Name, v.Image.Reference)
			}
		}
	}
}

func allContainers(s *corev1.PodSpec) []*corev1.Container {
	var out []*corev1.Container
	for i := range s.InitContainers {
		out = append(out, &s.InitContainers[i])
	}
	for i := range s.Containers {
		out = append(out, &s.Containers[i])
	}
	return out
}

// checkVolumes: every mount names a declared volume, every volume is
// mounted, every claim and ConfigMap exists, mount paths do not collide.
func (c *manifestCheck) checkVolumes(p podTemplate) {
	declared := map[string]corev1.Volume{}
	for _, v := range p.spec.Volumes {
		if _, dup := declared[v.Name]; dup {
			c.errorf("%s: volume %s declared twice", p.owner, v.Name)
		}
		declared[v.Name] = v
		if v.PersistentVolumeClaim != nil {
			if _, ok := c.pvcs[v.PersistentVolumeClaim.ClaimName]; !ok {
				c.errorf("%s: volume %s claims %s, which is not in the manifests", p.owner, v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	used := map[string]bool{}
	for _, ct := range allContainers(p.spec) {
		paths := map[string]bool{}
		for _, m := range ct.VolumeMounts {
			if _, ok := declared[m.Name]; !ok {
				c.errorf("%s container %s: mount %s names no declared volume (declared: %v)", p.owner, ct.Name, m.Name, slices.Sorted(maps.Keys(declared)))
			}
			if paths[m.MountPath] {
				c.errorf("%s container %s: two mounts at %s", p.owner, ct.Name, m.MountPath)
			}
			paths[m.MountPath] = true
			used[m.Name] = true
		}
		for _, ef := range ct.EnvFrom {
			if ef.ConfigMapRef != nil {
				if _, ok := c.configMaps[ef.ConfigMapRef.Name]; !ok {
					c.errorf("%s container %s: envFrom ConfigMap %s is not in the manifests", p.owner, ct.Name, ef.ConfigMapRef.Name)
				}
			}
		}
	}
	for name := range declared {
		if !used[name] {
			c.errorf("%s: volume %s is declared but never mounted", p.owner, name)
		}
	}
}

// certmgrArgs returns the certmgr command line a container runs, without the
// program name, or false when the container does not run certmgr.
func certmgrArgs(ct *corev1.Container) ([]string, bool) {
	argv := append(slices.Clone(ct.Command), ct.Args...)
	if len(ct.Command) == 0 && strings.Contains(ct.Image, "/certmgr") {
		argv = append([]string{"certmgr"}, ct.Args...) // the image's ENTRYPOINT
		if len(ct.Args) == 0 {
			argv = append(argv, "worker") // the image's CMD
		}
	}
	if len(argv) == 0 || path.Base(argv[0]) != "certmgr" {
		return nil, false
	}
	return argv[1:], true
}

// parseCommandLine checks args the way certmgr's main would, without running.
func parseCommandLine(args []string) (*command, error) {
	if len(args) == 0 {
		return nil, errors.New("no subcommand")
	}
	cmd := find(args[0])
	if cmd == nil {
		return nil, fmt.Errorf("unknown subcommand %q", args[0])
	}
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addLogFlags(fs, func(string) string { return "" })
	cmd.flags(fs, &app{getenv: func(string) string { return "" }})
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return cmd, nil
}

func known(name string) bool {
	return slices.ContainsFunc(Variables, func(v Variable) bool { return v.Name == name })
}

func (c *manifestCheck) checkCertmgrContainers(p podTemplate) {
	httpPort := portOf(c.t, c.settings.HTTPAddr)
	grace := c.settings.Worker.ShutdownGrace
	for _, ct := range allContainers(p.spec) {
		args, ok := certmgrArgs(ct)
		if !ok {
			continue
		}
		where := p.owner + " container " + ct.Name
		cmd, err := parseCommandLine(args)
		if err != nil {
			c.errorf("%s: certmgr %s: %v", where, strings.Join(args, " "), err)
			continue
		}
		c.checkBinaryPath(p, ct)

		// Environment: only variables certmgr reads, and the Downward API
		// for the pod's identity.
		set := map[string]corev1.EnvVar{}
		for _, e := range ct.Env {
			set[e.Name] = e
			if !known(e.Name) {
				c.errorf("%s: sets %s, which certmgr does not read (cmd/certmgr/env.go)", where, e.Name)
			}
		}
		for _, ef := range ct.EnvFrom {
			if ef.Prefix != "" {
				c.errorf("%s: envFrom with prefix %q renames certmgr's variables", where, ef.Prefix)
			}
			if ef.ConfigMapRef != nil {
				if cm, ok := c.configMaps[ef.ConfigMapRef.Name]; ok {
					for k := range cm.Data {
						if !known(k) {
							c.errorf("%s: ConfigMap %s sets %s, which certmgr does not read (cmd/certmgr/env.go)", where, cm.Name, k)
						}
					}
				}
			}
		}
		if !slices.ContainsFunc(ct.EnvFrom, func(ef corev1.EnvFromSource) bool {
			return ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == envConfig
		}) {
			c.errorf("%s: does not read ConfigMap %s", where, envConfig)
		}
		for name, field := range map[string]string{EnvPodName: "metadata.name", EnvPodNamespace: "metadata.namespace"} {
			e, ok := set[name]
			if !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
				c.errorf("%s: %s must come from the Downward API (fieldRef %s)", where, name, field)
			}
		}

		c.checkSecurity(p, ct, where)
		if ct.Resources.Requests.Memory().IsZero() || ct.Resources.Requests.Cpu().IsZero() || ct.Resources.Limits.Memory().IsZero() {
			c.errorf("%s: needs cpu and memory requests and a memory limit", where)
		}
		c.checkMounts(p, ct, cmd.name, where)

		if cmd.name == "worker" || cmd.name == "renew" || cmd.name == "issue" {
			tg := p.spec.TerminationGracePeriodSeconds
			if tg == nil || time.Duration(*tg)*time.Second <= grace {
				c.errorf("%s: terminationGracePeriodSeconds %v must exceed %s=%s, or in-flight tasks are killed before their grace ends",
					p.owner, deref(tg), EnvShutdownGrace, grace)
			}
		}
		if cmd.name != "worker" && cmd.name != "agent" {
			continue
		}
		if p.kind != "Deployment" && p.kind != "StatefulSet" {
			c.errorf("%s: the %s runs in a %s", where, cmd.name, p.kind)
		}
		var metrics *corev1.ContainerPort
		for i, cp := range ct.Ports {
			if int(cp.ContainerPort) == httpPort {
				metrics = &ct.Ports[i]
			}
		}
		if metrics == nil {
			c.errorf("%s: no containerPort %d (%s=%s)", where, httpPort, EnvHTTPAddr, c.settings.HTTPAddr)
		}
		for _, pr := range []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{{"liveness", ct.LivenessProbe, pathHealthz}, {"readiness", ct.ReadinessProbe, pathReadyz}} {
			if pr.probe == nil || pr.probe.HTTPGet == nil {
				c.errorf("%s: no HTTP %s probe", where, pr.name)
				continue
			}
			if pr.probe.HTTPGet.Path != pr.path {
				c.errorf("%s: %s probe path %q, want %q", where, pr.name, pr.probe.HTTPGet.Path, pr.path)
			}
			if got := resolvePort(ct, pr.probe.HTTPGet.Port); got != httpPort {
				c.errorf("%s: %s probe port %s resolves to %d, want %d", where, pr.name, pr.probe.HTTPGet.Port.String(), got, httpPort)
			}
		}
		if p.annot["prometheus.io/scrape"] != "true" || p.annot["prometheus.io/path"] != pathMetrics ||
			p.annot["prometheus.io/port"] != strconv.Itoa(httpPort) {
			c.errorf("%s: pod annotations must scrape %s on %d: %v", p.owner, pathMetrics, httpPort, p.annot)
		}
	}
}

func deref(p *int64) any {
	if p == nil {
		return "unset"
	}
	return *p
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s=%q: %v", EnvHTTPAddr, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s=%q: %v", EnvHTTPAddr, addr, err)
	}
	return n
}

func resolvePort(ct *corev1.Container, p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range ct.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return 0
}

// checkBinaryPath: a container that runs certmgr from another image does so
// through an image volume of certmgr's image, at the Dockerfile's path.
func (c *manifestCheck) checkBinaryPath(p podTemplate, ct *corev1.Container) {
	if len(ct.Command) == 0 {
		return // certmgr's own image and entrypoint
	}
	bin := ct.Command[0]
	if bin == c.binPath && strings.Contains(ct.Image, "/certmgr") {
		return
	}
	for _, m := range ct.VolumeMounts {
		rel, ok := strings.CutPrefix(bin, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range p.spec.Volumes {
			if v.Name == m.Name && v.Image != nil && strings.Contains(v.Image.Reference, "/certmgr") && "/"+rel == c.binPath {
				return
			}
		}
	}
	c.errorf("%s container %s: runs %s, which is neither certmgr's image's %s nor that path inside an image volume of certmgr's image",
		p.owner, ct.Name, bin, c.binPath)
}

func (c *manifestCheck) checkSecurity(p podTemplate, ct *corev1.Container, where string) {
	sc := ct.SecurityContext
	pod := p.spec.SecurityContext
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	if sc == nil {
		c.errorf("%s: no securityContext", where)
		return
	}
	nonRoot := sc.RunAsNonRoot != nil && *sc.RunAsNonRoot || sc.RunAsNonRoot == nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
	if !nonRoot {
		c.errorf("%s: runAsNonRoot is not true", where)
	}
	uid := sc.RunAsUser
	if uid == nil {
		uid = pod.RunAsUser
	}
	if uid != nil && *uid == 0 {
		c.errorf("%s: runs as uid 0", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		c.errorf("%s: readOnlyRootFilesystem is not true", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		c.errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		c.errorf("%s: privileged", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		c.errorf("%s: capabilities must drop ALL and add none", where)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		c.errorf("%s: seccompProfile is not RuntimeDefault", where)
	}
}

// mountAt returns the mount that holds path in ct, the deepest one.
func mountAt(ct *corev1.Container, p string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i, m := range ct.VolumeMounts {
		mp := strings.TrimSuffix(m.MountPath, "/")
		if p == mp || strings.HasPrefix(p, mp+"/") {
			if best == nil || len(mp) > len(best.MountPath) {
				best = &ct.VolumeMounts[i]
			}
		}
	}
	return best
}

// checkMounts: the directories certmgr reads and writes are volumes, writable
// where the subcommand writes.
func (c *manifestCheck) checkMounts(p podTemplate, ct *corev1.Container, sub, where string) {
	s := c.settings
	type need = struct {
		env, dir string
		write    bool
	}
	var needs []need
	fleet := s.StoreKind == wire.StorePostgres
	switch {
	case fleet && (sub == "worker" || sub == "issue" || sub == "renew"):
		// Fleet workers write acme's working copy only; no nginx.
		c.checkMountsNeeded(ct, sub, where, []struct {
			env, dir string
			write    bool
		}{{EnvLetsEncryptDir, s.ACME.Dir, true}})
		return
	case sub == "agent":
		needs = []need{
			{EnvLetsEncryptDir, s.ACME.Dir, true},
			{EnvNginxConfPath, filepath.Dir(s.Nginx.ConfPath), true},
		}
	}
	switch sub {
	case "worker", "issue", "renew":
		needs = []need{
			{EnvLetsEncryptDir, s.ACME.Dir, true},
			{EnvACMEWebroot, s.ACME.Webroot, true},
			{EnvNginxConfPath, filepath.Dir(s.Nginx.ConfPath), true},
		}
	case "regen-nginx":
		needs = []need{
			{EnvLetsEncryptDir, s.ACME.Dir, false},
			{EnvNginxConfPath, filepath.Dir(s.Nginx.ConfPath), true},
		}
	case "certificates":
		needs = []need{{EnvLetsEncryptDir, s.ACME.Dir, false}}
	}
	if sub != "certificates" && sub != "verify-dns" {
		// nginx -t reads a copy of the main file written beside it, and
		// the default server's certificate, as certmgr's own user.
		if s.Nginx.MainConf != "" {
			needs = append(needs, need{EnvNginxMainConf, filepath.Dir(s.Nginx.MainConf), true})
		}
		needs = append(needs, need{EnvNginxDefaultCert, s.Nginx.DefaultCert, false}, need{EnvNginxDefaultKey, s.Nginx.DefaultKey, false})
	}
	c.checkMountsNeeded(ct, sub, where, needs)
}

func (c *manifestCheck) checkMountsNeeded(ct *corev1.Container, sub, where string, needs []struct {
	env, dir string
	write    bool
}) {
	for _, n := range needs {
		m := mountAt(ct, n.dir)
		if m == nil {
			c.errorf("%s: %s (%s) is not on a volume", where, n.dir, n.env)
			continue
		}
		if n.write && m.ReadOnly {
			c.errorf("%s: %s (%s) is mounted read-only, certmgr %s writes there", where, n.dir, n.env, sub)
		}
	}
}

// storage names what a mount is backed by: the same claim is the same
// storage across pods, anything else only within its pod.
func storage(p podTemplate, ct *corev1.Container, dir string) string {
	m := mountAt(ct, dir)
	if m == nil {
		return ""
	}
	sub := strings.TrimPrefix(strings.TrimPrefix(dir, strings.TrimSuffix(m.MountPath, "/")), "/")
	for _, v := range p.spec.Volumes {
		if v.Name != m.Name {
			continue
		}
		where := "pod " + p.owner + " volume " + v.Name
		switch {
		case v.PersistentVolumeClaim != nil:
			where = "claim " + v.PersistentVolumeClaim.ClaimName
		case v.Secret != nil:
			where = "secret " + v.Secret.SecretName
		case v.ConfigMap != nil:
			where = "configmap " + v.ConfigMap.Name
		}
		return path.Join(where, m.SubPath, sub)
	}
	return ""
}

// checkSharedStorage: nginx in DEPLOYMENT_NAME's proxy container serves the
// very files certmgr writes (certificates, challenges, the generated file),
// and more than one replica means the storage must be ReadWriteMany.
func (c *manifestCheck) checkSharedStorage() {
	s := c.settings
	if s.StoreKind == wire.StorePostgres {
		c.checkFleet()
		return
	}
	var proxy *corev1.Container
	var app podTemplate
	for _, p := range c.pods {
		if p.kind == "Deployment" && p.name == s.Reload.DeploymentName {
			app = p
			for i := range p.spec.Containers {
				if p.spec.Containers[i].Name == s.Reload.Container {
					proxy = &p.spec.Containers[i]
				}
			}
		}
	}
	if proxy == nil {
		c.errorf("no Deployment %s (%s) with a container %s (%s)", s.Reload.DeploymentName, EnvDeploymentName, s.Reload.Container, EnvNginxContainer)
		return
	}
	var replicas int32 = 1
	for _, o := range c.b.objects {
		if d, ok := o.(*appsv1.Deployment); ok && d.Name == s.Reload.DeploymentName && d.Spec.Replicas != nil {
			replicas = *d.Spec.Replicas
		}
	}
	dirs := map[string]string{
		EnvLetsEncryptDir:   s.ACME.Dir,
		EnvACMEWebroot:      s.ACME.Webroot,
		EnvNginxConfPath:    filepath.Dir(s.Nginx.ConfPath),
		EnvNginxDefaultCert: s.Nginx.DefaultCert,
		EnvNginxDefaultKey:  s.Nginx.DefaultKey,
	}
	for env, dir := range dirs {
		want := storage(app, proxy, dir)
		if want == "" {
			c.errorf("%s container %s: %s (%s) is not on a volume", app.owner, proxy.Name, dir, env)
			continue
		}
		if (replicas > 1 || c.workerOutside(app)) && !strings.HasPrefix(want, "secret ") && !strings.HasPrefix(want, "configmap ") {
			if claim, ok := strings.CutPrefix(want, "claim "); ok {
				name, _, _ := strings.Cut(claim, "/")
				if pvc := c.pvcs[name]; pvc != nil && !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteMany) {
					c.errorf("claim %s (%s) is shared by several pods but not ReadWriteMany", name, dir)
				}
			} else {
				c.errorf("%s container %s: %s (%s) is pod-local (%s) but several pods must share it", app.owner, proxy.Name, dir, env, want)
			}
		}
		for _, p := range c.pods {
			for _, ct := range allContainers(p.spec) {
				args, ok := certmgrArgs(ct)
				if !ok || len(args) == 0 || (args[0] == "regen-nginx" && env == EnvACMEWebroot) ||
					args[0] == "certificates" || args[0] == "verify-dns" {
					continue
				}
				if got := storage(p, ct, dir); got != want {
					c.errorf("%s container %s: %s (%s) is %q, but nginx in %s reads %q", p.owner, ct.Name, dir, env, got, app.owner, want)
				}
			}
		}
	}
}

// checkFleet: in fleet mode nothing is shared through volumes and nothing
// calls the Kubernetes API. No claim exists; no container gets a service
// account token; every certmgr process gets CERTMGR_STORE_KEY from a Secret;
// every pod with the nginx container runs an agent whose directories are the
// very (pod-local) ones that nginx reads; workers run apart from nginx, at
// least two.
func (c *manifestCheck) checkFleet() {
	s := c.settings
	if len(c.pvcs) > 0 {
		c.errorf("fleet mode shares nothing through volumes, but the manifests claim %v", slices.Sorted(maps.Keys(c.pvcs)))
	}
	secrets := map[string]*corev1.Secret{}
	for _, o := range c.b.objects {
		if sec, ok := o.(*corev1.Secret); ok {
			secrets[sec.Name] = sec
		}
	}
	workers := 0
	apps := 0
	for _, p := range c.pods {
		if p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken {
			c.errorf("%s: fleet mode calls no API, but the pod mounts the service account token", p.owner)
		}
		if len(tokenVolumes(p.spec)) > 0 {
			c.errorf("%s: fleet mode calls no API, but the pod has a token volume", p.owner)
		}
		var proxy, agent *corev1.Container
		for _, ct := range allContainers(p.spec) {
			if ct.Name == s.Reload.Container {
				proxy = ct
			}
			args, ok := certmgrArgs(ct)
			if !ok || len(args) == 0 {
				continue
			}
			keyed := slices.ContainsFunc(ct.EnvFrom, func(ef corev1.EnvFromSource) bool {
				if ef.SecretRef == nil {
					return false
				}
				sec := secrets[ef.SecretRef.Name]
				if sec == nil {
					return false
				}
				_, has := sec.StringData[EnvStoreKey]
				_, hasData := sec.Data[EnvStoreKey]
				return has || hasData
			})
			if !keyed {
				c.errorf("%s container %s: no Secret in the manifests gives it %s", p.owner, ct.Name, EnvStoreKey)
			}
			switch args[0] {
			case "agent":
				agent = ct
			case "worker":
				workers++
				if slices.ContainsFunc(p.spec.Containers, func(x corev1.Container) bool { return x.Name == s.Reload.Container }) {
					c.errorf("%s: a fleet worker runs beside nginx; it belongs in a Deployment of its own", p.owner)
				}
				if d := c.deployment(p.name); d == nil || d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
					c.errorf("%s: fleet workers should run at least two replicas", p.owner)
				}
			}
		}
		if proxy == nil {
			continue
		}
		apps++
		if agent == nil {
			c.errorf("%s: nginx container %s has no certmgr agent beside it", p.owner, proxy.Name)
			continue
		}
		for env, dir := range map[string]string{
			EnvLetsEncryptDir: s.ACME.Dir, EnvNginxConfPath: filepath.Dir(s.Nginx.ConfPath),
			EnvNginxDefaultCert: s.Nginx.DefaultCert, EnvNginxDefaultKey: s.Nginx.DefaultKey,
		} {
			want := storage(p, proxy, dir)
			if want == "" {
				c.errorf("%s container %s: %s (%s) is not on a volume", p.owner, proxy.Name, dir, env)
			} else if got := storage(p, agent, dir); got != want {
				c.errorf("%s: the agent's %s (%s) is %q, but nginx reads %q", p.owner, dir, env, got, want)
			}
		}
	}
	if apps == 0 || workers == 0 {
		c.errorf("fleet mode needs the app's pods with agents (%d) and a worker Deployment (%d)", apps, workers)
	}
}

func (c *manifestCheck) deployment(name string) *appsv1.Deployment {
	for _, o := range c.b.objects {
		if d, ok := o.(*appsv1.Deployment); ok && d.Name == name {
			return d
		}
	}
	return nil
}

// workerOutside reports whether some certmgr container runs outside app's pods.
func (c *manifestCheck) workerOutside(app podTemplate) bool {
	for _, p := range c.pods {
		if p.owner == app.owner {
			continue
		}
		for _, ct := range allContainers(p.spec) {
			if _, ok := certmgrArgs(ct); ok {
				return true
			}
		}
	}
	return false
}

// selects returns the pod templates a Service or ServiceMonitor selector picks.
func (c *manifestCheck) selects(sel map[string]string) []podTemplate {
	var out []podTemplate
	if len(sel) == 0 {
		return nil
	}
	for _, p := range c.pods {
		if labels.SelectorFromSet(sel).Matches(labels.Set(p.labels)) {
			out = append(out, p)
		}
	}
	return out
}

// targets resolves a Service port to the container ports it reaches.
func (c *manifestCheck) targets(svc *corev1.Service, sp corev1.ServicePort) []int {
	tp := sp.TargetPort
	if tp.Type == intstr.Int && tp.IntValue() == 0 {
		tp = intstr.FromInt32(sp.Port)
	}
	var out []int
	for _, p := range c.selects(svc.Spec.Selector) {
		for _, ct := range p.spec.Containers {
			if n := resolvePort(&ct, tp); n != 0 && slices.ContainsFunc(ct.Ports, func(cp corev1.ContainerPort) bool { return int(cp.ContainerPort) == n }) {
				out = append(out, n)
			}
		}
	}
	return out
}

// checkServices: every Service port reaches a declared container port; the
// custom domains' ports are exposed; a load balancer passes 443 and 80 through
// to nginx and checks /ping/.
func (c *manifestCheck) checkServices() {
	s := c.settings
	exposed := map[int]bool{}
	for _, svc := range c.services {
		if len(c.selects(svc.Spec.Selector)) == 0 {
			c.errorf("Service %s selects no pod of the manifests (selector %v)", svc.Name, svc.Spec.Selector)
			continue
		}
		byPort := map[int32][]int{}
		for _, sp := range svc.Spec.Ports {
			got := c.targets(svc, sp)
			if len(got) == 0 {
				c.errorf("Service %s port %s (%d → %s) reaches no declared container port", svc.Name, sp.Name, sp.Port, sp.TargetPort.String())
			}
			for _, n := range got {
				exposed[n] = true
			}
			byPort[sp.Port] = got
		}
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		if !slices.Contains(byPort[443], s.Nginx.HTTPSPort) || !slices.Contains(byPort[80], s.Nginx.HTTPPort) {
			c.errorf("LoadBalancer %s must forward 443 → %d and 80 → %d, has %v", svc.Name, s.Nginx.HTTPSPort, s.Nginx.HTTPPort, byPort)
		}
		a := svc.Annotations
		if strings.Contains(strings.Join(slices.Collect(maps.Keys(a)), " "), "do-loadbalancer") {
			const p = "service.beta.kubernetes.io/do-loadbalancer-"
			if a[p+"protocol"] != "tcp" || a[p+"certificate-id"] != "" || a[p+"tls-passthrough"] == "false" {
				c.errorf("LoadBalancer %s must pass TLS through (protocol tcp, no certificate): %v", svc.Name, a)
			}
			hp, _ := strconv.Atoi(a[p+"healthcheck-port"])
			if a[p+"healthcheck-protocol"] != "http" || a[p+"healthcheck-path"] != "/ping/" ||
				!slices.Contains(byPort[int32(hp)], s.Nginx.HTTPPort) {
				c.errorf("LoadBalancer %s must health-check http /ping/ on the port reaching %d: %v", svc.Name, s.Nginx.HTTPPort, a)
			}
		}
	}
	for _, port := range []int{s.Nginx.HTTPSPort, s.Nginx.HTTPPort} {
		if !exposed[port] {
			c.errorf("no Service exposes nginx's port %d", port)
		}
	}
}

// rule is one permission: verb on group/resource.
type rule struct{ group, resource, verb string }

// rbacFor is what each reload mode needs, no more: local calls no API; exec
// reads the Deployment's selector, lists its pods and execs (a WebSocket
// exec is a GET, checked for create as well); rollout patches the Deployment.
var rbacFor = map[string][]rule{
	"local":   nil,
	"exec":    {{"apps", "deployments", "get"}, {"", "pods", "list"}, {"", "pods/exec", "get"}, {"", "pods/exec", "create"}},
	"rollout": {{"apps", "deployments", "get"}, {"apps", "deployments", "patch"}},
}

// checkRBAC: the service account certmgr runs as is granted exactly what the
// configured reload mode needs, in its own namespace, and the Deployment it
// names is the one the rules allow.
func (c *manifestCheck) checkRBAC() {
	s := c.settings
	roles := map[string]*rbacv1.Role{}
	var bindings []*rbacv1.RoleBinding
	var sa *corev1.ServiceAccount
	for _, o := range c.b.objects {
		switch o := o.(type) {
		case *rbacv1.Role:
			roles[o.Name] = o
		case *rbacv1.RoleBinding:
			bindings = append(bindings, o)
		case *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
			c.errorf("%T: certmgr needs nothing cluster-wide", o)
		case *corev1.ServiceAccount:
			if o.Name == serviceAcct {
				sa = o
			}
		}
	}
	if sa == nil {
		c.errorf("no ServiceAccount %s", serviceAcct)
		return
	}
	for _, p := range c.pods {
		for _, ct := range allContainers(p.spec) {
			if _, ok := certmgrArgs(ct); ok && p.spec.ServiceAccountName != serviceAcct {
				c.errorf("%s runs certmgr as service account %q, not %s", p.owner, p.spec.ServiceAccountName, serviceAcct)
			}
		}
	}

	granted := map[rule]bool{}
	for _, b := range bindings {
		bound := slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Name == serviceAcct && s.Namespace == c.namespace
		})
		if !bound {
			c.errorf("RoleBinding %s binds %v, not ServiceAccount %s/%s", b.Name, b.Subjects, c.namespace, serviceAcct)
			continue
		}
		if b.RoleRef.Kind != "Role" {
			c.errorf("RoleBinding %s refers to a %s; certmgr needs only a Role", b.Name, b.RoleRef.Kind)
			continue
		}
		r, ok := roles[b.RoleRef.Name]
		if !ok {
			c.errorf("RoleBinding %s refers to Role %s, which is not in the manifests", b.Name, b.RoleRef.Name)
			continue
		}
		for _, pr := range r.Rules {
			if len(pr.NonResourceURLs) > 0 {
				c.errorf("Role %s grants non-resource URLs %v", r.Name, pr.NonResourceURLs)
			}
			for _, g := range pr.APIGroups {
				for _, res := range pr.Resources {
					for _, v := range pr.Verbs {
						if g == "*" || res == "*" || v == "*" {
							c.errorf("Role %s grants a wildcard: %v", r.Name, pr)
						}
						granted[rule{g, res, v}] = true
						if len(pr.ResourceNames) > 0 && res == "deployments" && !slices.Contains(pr.ResourceNames, s.Reload.DeploymentName) {
							c.errorf("Role %s limits deployments to %v, but %s=%s", r.Name, pr.ResourceNames, EnvDeploymentName, s.Reload.DeploymentName)
						}
					}
				}
			}
		}
	}
	for name := range roles {
		if !slices.ContainsFunc(bindings, func(b *rbacv1.RoleBinding) bool { return b.RoleRef.Name == name }) {
			c.errorf("Role %s is bound to nothing", name)
		}
	}

	want, ok := rbacFor[string(s.Reload.Mode)]
	if !ok {
		c.t.Fatalf("reload mode %q has no entry in rbacFor", s.Reload.Mode)
	}
	for _, r := range want {
		if !granted[r] {
			c.errorf("reload mode %s needs %s on %s (group %q), not granted", s.Reload.Mode, r.verb, r.resource, r.group)
		}
		delete(granted, r)
	}
	for r := range granted {
		c.errorf("reload mode %s does not need %s on %s (group %q), granted anyway", s.Reload.Mode, r.verb, r.resource, r.group)
	}
	if s.Reload.Mode == podreload.ModeLocal {
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			c.errorf("reload mode local calls no API: ServiceAccount %s should not mount a token", serviceAcct)
		}
		if !c.localReloadReachesNginx() {
			c.errorf("reload mode local: the certmgr worker must share a pod with %s, with shareProcessNamespace", s.Reload.Container)
		}
	}
}

// localReloadReachesNginx: in local mode every worker sits in a pod whose
// process namespace it shares with the nginx container.
func (c *manifestCheck) localReloadReachesNginx() bool {
	for _, p := range c.pods {
		for _, ct := range allContainers(p.spec) {
			reloader := "worker"
			if c.settings.StoreKind == wire.StorePostgres {
				reloader = "agent" // fleet workers reload nothing
			}
			if args, ok := certmgrArgs(ct); ok && len(args) > 0 && args[0] == reloader {
				hasProxy := slices.ContainsFunc(p.spec.Containers, func(x corev1.Container) bool { return x.Name == c.settings.Reload.Container })
				if !hasProxy || p.spec.ShareProcessNamespace == nil || !*p.spec.ShareProcessNamespace {
					return false
				}
			}
		}
	}
	return true
}

// checkCustomResources: only ServiceMonitor, checked by hand since client-go
// does not know it: known fields only, and it scrapes the worker's /metrics.
func (c *manifestCheck) checkCustomResources() {
	httpPort := portOf(c.t, c.settings.HTTPAddr)
	for _, cr := range c.b.crs {
		if cr["apiVersion"] != "monitoring.coreos.com/v1" || cr["kind"] != "ServiceMonitor" {
			c.errorf("unknown custom resource %v %v", cr["apiVersion"], cr["kind"])
			continue
		}
		onlyKeys(c, "ServiceMonitor", cr, "apiVersion", "kind", "metadata", "spec")
		spec, _ := cr["spec"].(map[string]any)
		onlyKeys(c, "ServiceMonitor spec", spec, "selector", "endpoints", "namespaceSelector", "jobLabel")
		sel, _ := spec["selector"].(map[string]any)
		onlyKeys(c, "ServiceMonitor selector", sel, "matchLabels")
		match := map[string]string{}
		ml, _ := sel["matchLabels"].(map[string]any)
		for k, v := range ml {
			match[k], _ = v.(string)
		}
		var svcs []*corev1.Service
		for _, svc := range c.services {
			if len(match) > 0 && labels.SelectorFromSet(match).Matches(labels.Set(svc.Labels)) {
				svcs = append(svcs, svc)
			}
		}
		if len(svcs) == 0 {
			c.errorf("ServiceMonitor selects no Service (matchLabels %v)", match)
		}
		eps, _ := spec["endpoints"].([]any)
		if len(eps) == 0 {
			c.errorf("ServiceMonitor has no endpoints")
		}
		for _, e := range eps {
			ep, _ := e.(map[string]any)
			onlyKeys(c, "ServiceMonitor endpoint", ep, "port", "path", "interval", "scrapeTimeout", "scheme")
			if ep["path"] != pathMetrics {
				c.errorf("ServiceMonitor endpoint path %v, want %s", ep["path"], pathMetrics)
			}
			for _, svc := range svcs {
				i := slices.IndexFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == ep["port"] })
				if i < 0 || !slices.Contains(c.targets(svc, svc.Spec.Ports[i]), httpPort) {
					c.errorf("ServiceMonitor endpoint port %v does not reach the worker's %d through Service %s", ep["port"], httpPort, svc.Name)
				}
			}
		}
	}
}

func onlyKeys(c *manifestCheck, what string, m map[string]any, allowed ...string) {
	for k := range m {
		if !slices.Contains(allowed, k) {
			c.errorf("%s: unknown field %q", what, k)
		}
	}
}

// --- Dockerfile ---

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case
	args string
}

func parseDockerfile(t *testing.T) [][]instruction {
	t.Helper()
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	var stages [][]instruction
	var cur *instruction
	for i, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(raw)
		if cur == nil && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur != nil && strings.HasPrefix(line, "#") {
			continue // comment inside a continued instruction
		}
		more := strings.HasSuffix(line, "\\")
		line = strings.TrimSuffix(line, "\\")
		if cur == nil {
			cmd, args, _ := strings.Cut(line, " ")
			cur = &instruction{line: i + 1, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		} else {
			cur.args += " " + strings.TrimSpace(line)
		}
		if more {
			continue
		}
		cur.args = strings.Join(strings.Fields(cur.args), " ")
		if cur.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if cur.cmd != "ARG" {
				t.Fatalf("Dockerfile line %d: %s before the first FROM", cur.line, cur.cmd)
			}
		} else {
			stages[len(stages)-1] = append(stages[len(stages)-1], *cur)
		}
		cur = nil
	}
	if cur != nil {
		t.Fatalf("Dockerfile line %d: continuation at end of file", cur.line)
	}
	return stages
}

// dockerfileBinary returns where the final image holds the binary.
func dockerfileBinary(t *testing.T) string {
	t.Helper()
	stages := parseDockerfile(t)
	if len(stages) == 0 {
		t.Fatal("Dockerfile has no FROM")
	}
	for _, in := range stages[len(stages)-1] {
		if in.cmd == "ENTRYPOINT" {
			var argv []string
			if err := json.Unmarshal([]byte(in.args), &argv); err != nil || len(argv) == 0 {
				t.Fatalf("Dockerfile line %d: ENTRYPOINT must be an exec-form JSON array: %q", in.line, in.args)
			}
			return argv[0]
		}
	}
	t.Fatal("Dockerfile's final stage has no ENTRYPOINT")
	return ""
}

// makeRecipe returns the recipe lines of a Makefile target.
func makeRecipe(t *testing.T, target string) []string {
	t.Helper()
	b, err := os.ReadFile(makefile)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "\t") {
			if in {
				out = append(out, strings.TrimSpace(line))
			}
			continue
		}
		name, _, ok := strings.Cut(line, ":")
		in = ok && strings.TrimSpace(name) == target && !strings.Contains(line, "=")
	}
	if len(out) == 0 {
		t.Fatalf("Makefile has no recipe for %s", target)
	}
	return out
}

// The Dockerfile, linted by hand (hadolint is not installable here): a
// multi-stage build whose binary is built by the Makefile's own build target,
// static, in a pinned non-root final image that runs the worker.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages := parseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s), want a build stage and a final stage", len(stages))
	}
	names := map[string]int{}
	for i, st := range stages {
		from := strings.Fields(st[0].args)
		img := from[0]
		if strings.HasPrefix(img, "--platform") {
			img = from[1]
		}
		if len(from) >= 3 && strings.EqualFold(from[len(from)-2], "AS") {
			names[from[len(from)-1]] = i
		}
		last := img[strings.LastIndex(img, "/")+1:]
		if img != "scratch" && !strings.Contains(last, ":") && !strings.Contains(img, "@sha256:") {
			t.Errorf("Dockerfile line %d: FROM %s has no tag", st[0].line, img)
		}
		if strings.HasSuffix(img, ":latest") {
			t.Errorf("Dockerfile line %d: FROM %s uses latest", st[0].line, img)
		}
		for _, in := range st {
			if in.cmd == "ADD" {
				t.Errorf("Dockerfile line %d: use COPY, not ADD", in.line)
			}
			if in.cmd == "RUN" && regexp.MustCompile(`\bcd\b`).MatchString(in.args) {
				t.Errorf("Dockerfile line %d: use WORKDIR, not cd", in.line)
			}
		}
	}

	// The build stage runs the Makefile's build target, and that target
	// builds a static, reproducible binary of ./cmd/certmgr.
	recipe := strings.Join(makeRecipe(t, "build"), " ")
	for _, want := range []string{"CGO_ENABLED=0", " build ", "-trimpath", "-o $(BIN)", "./cmd/certmgr"} {
		if !strings.Contains(recipe, want) {
			t.Errorf("Makefile build recipe %q lacks %q", recipe, want)
		}
	}
	buildOut := ""
	buildStage := -1
	for i, st := range stages[:len(stages)-1] {
		for _, in := range st {
			if in.cmd != "RUN" {
				continue
			}
			if m := regexp.MustCompile(`\bmake build BIN=(\S+)`).FindStringSubmatch(in.args); m != nil {
				buildOut, buildStage = m[1], i
			} else if strings.Contains(in.args, "go build") {
				t.Errorf("Dockerfile line %d: builds with its own go build; run `make build` so the image and the Makefile build alike", in.line)
			}
		}
	}
	if buildOut == "" {
		t.Fatal("no build stage runs `make build BIN=...`")
	}
	if from := strings.Fields(stages[buildStage][0].args)[0]; !strings.HasPrefix(path.Base(from), "golang:") {
		t.Errorf("build stage FROM %s is not a golang image", from)
	} else {
		// golang:1.26-bookworm or golang:1.26.8-bookworm for go.mod's go 1.26.x.
		modGo := goDirective(t)
		version, _, _ := strings.Cut(strings.TrimPrefix(path.Base(from), "golang:"), "-")
		if version != modGo && !strings.HasPrefix(version, modGo+".") {
			t.Errorf("build stage Go %s is not go.mod's go %s", version, modGo)
		}
	}

	final := stages[len(stages)-1]
	var user, entry string
	copied := map[string]string{}
	var expose []string
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entry = in.args
		case "COPY":
			f := strings.Fields(in.args)
			from := ""
			var rest []string
			for _, a := range f {
				if v, ok := strings.CutPrefix(a, "--from="); ok {
					from = v
				} else if !strings.HasPrefix(a, "--") {
					rest = append(rest, a)
				}
			}
			if len(rest) == 2 {
				copied[rest[1]] = from + ":" + rest[0]
			}
		case "EXPOSE":
			expose = append(expose, strings.Fields(in.args)...)
		case "RUN":
			t.Errorf("Dockerfile line %d: the final image is distroless, RUN has no shell there", in.line)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("final stage USER %q: want a numeric non-root uid, so that runAsNonRoot can verify it", user)
	}
	bin := dockerfileBinary(t)
	src, ok := copied[bin]
	stageName := ""
	for n, i := range names {
		if i == buildStage {
			stageName = n
		}
	}
	if !ok || (src != stageName+":"+buildOut && src != strconv.Itoa(buildStage)+":"+buildOut) {
		t.Errorf("final stage ENTRYPOINT %s is not the build stage's %s (copies: %v)", bin, buildOut, copied)
	}
	if !strings.Contains(entry, bin) {
		t.Errorf("ENTRYPOINT %s", entry)
	}
	defPort := strconv.Itoa(portOf(t, defaultOf(EnvHTTPAddr)))
	if !slices.Contains(expose, defPort) {
		t.Errorf("EXPOSE %v lacks %s, the default of %s", expose, defPort, EnvHTTPAddr)
	}
}

// defaultOf is a variable's documented default.
func defaultOf(name string) string {
	for _, v := range Variables {
		if v.Name == name {
			return v.Default
		}
	}
	panic("undocumented environment variable " + name)
}

func goDirective(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(gomod)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

// The Makefile's image target builds this Dockerfile, and its manifests target
// renders every overlay there is.
func TestMakefileDeployTargets(t *testing.T) {
	t.Parallel()
	image := strings.Join(makeRecipe(t, "image"), " ")
	if !strings.Contains(image, "docker build") {
		t.Errorf("make image runs %q, not docker build", image)
	}
	manifests := strings.Join(makeRecipe(t, "manifests"), " ")
	m, err := filepath.Glob(filepath.Join(deployDir, "overlays/*/kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m {
		dir := strings.TrimPrefix(filepath.Dir(f), "../../")
		if !strings.Contains(manifests, "kubectl kustomize "+dir) {
			t.Errorf("make manifests does not render %s", dir)
		}
	}
}

// The manifests podreload names in its permission errors exist, so an
// operator told to apply one finds it.
func TestPermissionErrorsNameExistingManifests(t *testing.T) {
	t.Parallel()
	for _, m := range []string{podreload.ManifestExecRBAC, podreload.ManifestRolloutRBAC} {
		if _, err := os.Stat(filepath.Join("..", "..", m)); err != nil {
			t.Errorf("podreload names %s, which does not exist: %v", m, err)
		}
	}
}
