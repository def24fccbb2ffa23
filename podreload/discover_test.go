package podreload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

type podOpt func(*corev1.Pod)

func pod(namespace, name string, lbls map[string]string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: lbls},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func phase(ph corev1.PodPhase) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Phase = ph
		p.Status.Conditions[0].Status = corev1.ConditionFalse
	}
}

func notReady(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse }

func terminating(p *corev1.Pod) {
	now := metav1.NewTime(time.Now())
	p.DeletionTimestamp = &now
	p.Finalizers = []string{"example.com/keep"} // the tracker wants one on a deleting object
}

func fakeReloader(t *testing.T, client *fake.Clientset, cfg Config) *Reloader {
	t.Helper()
	cfg.Mode = cmpMode(cfg.Mode, ModeExec)
	cfg.DeploymentName = "web"
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	return newReloader(cfg, client, nil, "shop")
}

func cmpMode(m, def Mode) Mode {
	if m == "" {
		return def
	}
	return m
}

func TestSiblingsFollowDeploymentSelector(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(
		newDeployment("shop", "web"),
		pod("shop", "web-b", webLabels),
		pod("shop", "web-a", webLabels),
		// Shares app=midsummer but not component=web: the worker, not a sibling.
		pod("shop", "worker-1", map[string]string{"app": "midsummer", "component": "worker"}),
		// Same labels, other namespace.
		pod("staging", "web-x", webLabels),
	)
	r := fakeReloader(t, client, Config{PodName: "web-a"})

	targets, skipped, sel, err := r.siblings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"web-a", "web-b"}; !slices.Equal(targets, want) {
		t.Errorf("targets = %v, want %v", targets, want)
	}
	if len(skipped) != 0 {
		t.Errorf("skipped = %v, want none", skipped)
	}
	if got, want := sel.String(), "app=midsummer,component in (web)"; got != want {
		t.Errorf("selector = %q, want %q", got, want)
	}
	// The list went to the API with the Deployment's selector, in its namespace.
	var listed bool
	for _, a := range client.Actions() {
		if la, ok := a.(k8stesting.ListAction); ok && a.GetResource().Resource == "pods" {
			listed = true
			if a.GetNamespace() != "shop" || la.GetListRestrictions().Labels.String() != "app=midsummer,component in (web)" {
				t.Errorf("list pods in %q with %q", a.GetNamespace(), la.GetListRestrictions().Labels)
			}
		}
	}
	if !listed {
		t.Error("pods were not listed")
	}
}

func TestSiblingsSkipPendingTerminatingAndNotReady(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(
		newDeployment("shop", "web"),
		pod("shop", "web-ready", webLabels),
		pod("shop", "web-pending", webLabels, phase(corev1.PodPending)),
		pod("shop", "web-terminating", webLabels, terminating),
		pod("shop", "web-notready", webLabels, notReady),
		pod("shop", "web-evicted", webLabels, phase(corev1.PodFailed)),
	)
	r := fakeReloader(t, client, Config{PodName: "web-notready"})
	targets, skipped, _, err := r.siblings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"web-ready"}; !slices.Equal(targets, want) {
		t.Errorf("targets = %v, want %v", targets, want)
	}
	want := []PodResult{
		{Pod: "web-evicted", Outcome: OutcomeSkipped, Detail: "not running (phase Failed)"},
		{Pod: "web-notready", Outcome: OutcomeSkipped, Detail: "not ready", Self: true},
		{Pod: "web-pending", Outcome: OutcomeSkipped, Detail: "not running (phase Pending)"},
		{Pod: "web-terminating", Outcome: OutcomeSkipped, Detail: "terminating"},
	}
	if !slices.Equal(skipped, want) {
		t.Errorf("skipped =\n%v\nwant\n%v", skipped, want)
	}
}

func TestReloadErrorsWhenSelectorMatchesNothing(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(newDeployment("shop", "web"), pod("shop", "other", map[string]string{"app": "x"}))
	r := fakeReloader(t, client, Config{})
	_, err := r.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no pod in namespace shop matches deployment web's selector") {
		t.Fatalf("err = %v, want no-pod error", err)
	}
}

func TestDiscoveryPermissionErrorsNameVerbResourceAndManifest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc             string
		verb, resource   string
		reactOn          string
		mode             Mode
		wantManifest     string
		wantMessageParts []string
	}{
		{desc: "get deployment", verb: "get", resource: "deployments", reactOn: "deployments", mode: ModeExec,
			wantManifest: ManifestExecRBAC, wantMessageParts: []string{"may not get deployments", `namespace "shop"`, "deploy/components/reload-exec/rbac.yaml"}},
		{desc: "list pods", verb: "list", resource: "pods", reactOn: "pods", mode: ModeExec,
			wantManifest: ManifestExecRBAC, wantMessageParts: []string{"may not list pods", `namespace "shop"`, "deploy/components/reload-exec/rbac.yaml"}},
		{desc: "patch deployment", verb: "patch", resource: "deployments", reactOn: "deployments", mode: ModeRollout,
			wantManifest: ManifestRolloutRBAC, wantMessageParts: []string{"may not patch deployments", `namespace "shop"`, "deploy/components/reload-rollout/rbac.yaml"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			client := fake.NewClientset(newDeployment("shop", "web"), pod("shop", "web-a", webLabels))
			client.PrependReactor(tc.verb, tc.reactOn, func(a k8stesting.Action) (bool, runtime.Object, error) {
				gr := schema.GroupResource{Group: a.GetResource().Group, Resource: a.GetResource().Resource}
				return true, nil, apierrors.NewForbidden(gr, "", errors.New("RBAC: access denied"))
			})
			r := fakeReloader(t, client, Config{Mode: tc.mode})
			_, err := r.Reload(context.Background())
			var pe *PermissionError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *PermissionError", err)
			}
			if pe.Verb != tc.verb || pe.Resource != tc.resource || pe.Namespace != "shop" || pe.Manifest != tc.wantManifest {
				t.Errorf("PermissionError = %+v", pe)
			}
			if !apierrors.IsForbidden(err) {
				t.Error("the API server's 403 is not wrapped")
			}
			for _, part := range tc.wantMessageParts {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("message %q lacks %q", err, part)
				}
			}
		})
	}
}

func TestResolveNamespace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	saFile := filepath.Join(dir, "namespace")
	if err := os.WriteFile(saFile, []byte("from-sa\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc     string
		explicit string
		file     string
		want     string
		wantErr  string
	}{
		{desc: "explicit wins", explicit: "cfg", file: saFile, want: "cfg"},
		{desc: "service account file", file: saFile, want: "from-sa"},
		{desc: "nothing", file: filepath.Join(dir, "missing"), wantErr: "Namespace is empty"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got, err := resolveNamespace(tc.explicit, tc.file)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.file) {
					t.Fatalf("err = %v, want one naming %q and the file", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
