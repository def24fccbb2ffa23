package podreload

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/podreload/internal/fakekube"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestRolloutPatchesRestartedAtLikeKubectl(t *testing.T) {
	t.Parallel()
	dep := newDeployment("shop", "web")
	dep.Spec.Template.Annotations = map[string]string{"prometheus.io/scrape": "true"}
	client := fake.NewClientset(dep)
	r := fakeReloader(t, client, Config{Mode: ModeRollout})
	now := time.Date(2026, 11, 28, 7, 30, 5, 123, time.UTC)
	r.now = func() time.Time { return now }

	res, err := r.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var patch k8stesting.PatchAction
	for _, a := range client.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok {
			patch = p
		}
	}
	if patch == nil {
		t.Fatal("no patch sent")
	}
	if patch.GetPatchType() != types.StrategicMergePatchType || patch.GetName() != "web" || patch.GetNamespace() != "shop" {
		t.Errorf("patch %s %s/%s, want a strategic merge patch of shop/web", patch.GetPatchType(), patch.GetNamespace(), patch.GetName())
	}
	// Only the annotation changes; the others stay (strategic merge of a map).
	want := `{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-11-28T07:30:05Z"}}}}}`
	if string(patch.GetPatch()) != want {
		t.Errorf("patch body\n%s\nwant\n%s", patch.GetPatch(), want)
	}
	got, err := client.AppsV1().Deployments("shop").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a := got.Spec.Template.Annotations; a[RestartedAtAnnotation] != "2026-11-28T07:30:05Z" || a["prometheus.io/scrape"] != "true" {
		t.Errorf("template annotations after patch = %v", a)
	}
	if len(res.Pods) != 1 || res.Pods[0].Pod != "deployment/web" || res.Pods[0].Outcome != OutcomeRestarted {
		t.Errorf("result = %+v", res)
	}
}

func TestRolloutRefusesPausedDeployment(t *testing.T) {
	t.Parallel()
	dep := newDeployment("shop", "web")
	dep.Spec.Paused = true
	client := fake.NewClientset(dep)
	_, err := fakeReloader(t, client, Config{Mode: ModeRollout}).Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "can't restart paused deployment (run rollout resume first)") {
		t.Fatalf("err = %v, want kubectl's paused message", err)
	}
}

// TestRolloutSendsTheSamePatchAsKubectl runs the real `kubectl rollout
// restart` and certmgr against the same fake API server and compares what
// each sent.
func TestRolloutSendsTheSamePatchAsKubectl(t *testing.T) {
	t.Parallel()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kubectl missing in CI: apt-get install kubectl")
		}
		t.Skip("kubectl not installed (apt-get install kubectl)")
	}
	dep := newDeployment("shop", "web")
	dep.Spec.Template.Annotations = map[string]string{"prometheus.io/scrape": "true"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	kubectlSrv := fakekube.Start(t, fakekube.Options{Namespace: "shop", Deployment: dep})
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubectlSrv.Kubeconfig, "--cache-dir", t.TempDir(),
		"--namespace", "shop", "rollout", "restart", "deployment/web")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl rollout restart: %v\n%s", err, out)
	}
	ourSrv := fakekube.Start(t, fakekube.Options{Namespace: "shop", Deployment: dep})
	r, err := New(Config{Mode: ModeRollout, DeploymentName: "web", Kubeconfig: ourSrv.Kubeconfig, Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}

	theirs, ours := kubectlSrv.Patches(), ourSrv.Patches()
	if len(theirs) != 1 || len(ours) != 1 {
		t.Fatalf("kubectl sent %d patches, certmgr %d; want 1 each", len(theirs), len(ours))
	}
	if theirs[0].ContentType != ours[0].ContentType || theirs[0].Name != ours[0].Name {
		t.Errorf("kubectl: %s to %s; certmgr: %s to %s", theirs[0].ContentType, theirs[0].Name, ours[0].ContentType, ours[0].Name)
	}
	// Same body except the time itself, which both write as RFC 3339.
	tk, tv := stripRestartedAt(t, theirs[0].Body)
	ok, ov := stripRestartedAt(t, ours[0].Body)
	if !reflect.DeepEqual(tk, ok) {
		t.Errorf("patch bodies differ:\nkubectl %s\ncertmgr %s", theirs[0].Body, ours[0].Body)
	}
	for who, v := range map[string]string{"kubectl": tv, "certmgr": ov} {
		at, err := time.Parse(time.RFC3339, v)
		if err != nil || time.Since(at) > time.Minute || time.Until(at) > time.Second {
			t.Errorf("%s restartedAt %q: %v", who, v, err)
		}
	}
	t.Logf("kubectl: %s %s; certmgr: %s %s", theirs[0].ContentType, theirs[0].Body, ours[0].ContentType, ours[0].Body)
}

func stripRestartedAt(t *testing.T, body []byte) (map[string]any, string) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("patch %s: %v", body, err)
	}
	ann, _ := dig(m, "spec", "template", "metadata", "annotations").(map[string]any)
	v, _ := ann[RestartedAtAnnotation].(string)
	if v == "" {
		t.Fatalf("patch %s has no %s", body, RestartedAtAnnotation)
	}
	ann[RestartedAtAnnotation] = "<time>"
	return m, v
}

func dig(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}
