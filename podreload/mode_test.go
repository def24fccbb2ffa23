package podreload

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/internal/testpeers"
)

func TestParseMode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Mode
		err  bool
	}{
		{in: "", want: ModeLocal},
		{in: "false", want: ModeLocal},
		{in: "local", want: ModeLocal},
		{in: "True", want: ModeExec},
		{in: "1", want: ModeExec},
		{in: "exec", want: ModeExec},
		{in: " rollout ", want: ModeRollout},
		{in: "restart", want: ModeRollout},
		{in: "sometimes", err: true},
	} {
		got, err := ParseMode(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		cfg  Config
		want string
	}{
		{desc: "local needs a local reloader", cfg: Config{}, want: "Local is required"},
		{desc: "exec needs the deployment", cfg: Config{Mode: ModeExec}, want: "DEPLOYMENT_NAME"},
		{desc: "rollout needs the deployment", cfg: Config{Mode: ModeRollout}, want: "DEPLOYMENT_NAME"},
		{desc: "unknown mode", cfg: Config{Mode: "sometimes"}, want: `Mode "sometimes"`},
		{desc: "unreadable kubeconfig", cfg: Config{Mode: ModeExec, DeploymentName: "web", Kubeconfig: "testdata/no-such-kubeconfig"}, want: "load kubeconfig testdata/no-such-kubeconfig"},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.desc, err, tc.want)
		}
	}
}

type localFunc func(context.Context) error

func (f localFunc) Reload(ctx context.Context) error { return f(ctx) }

func TestLocalModeReportsFailure(t *testing.T) {
	t.Parallel()
	r, err := New(Config{PodName: "web-0", Local: localFunc(func(context.Context) error {
		return errors.New("nginx -t: [emerg] unknown directive")
	})})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Reload(context.Background())
	if err == nil {
		t.Fatal("no error from a failed local reload")
	}
	if len(res.Pods) != 1 || res.Pods[0].Pod != "web-0" || res.Pods[0].Outcome != OutcomeFailed ||
		!strings.Contains(res.Pods[0].Detail, "unknown directive") {
		t.Errorf("result = %+v", res)
	}
}

func TestPodResultJSON(t *testing.T) {
	t.Parallel()
	in := PodResult{Pod: "web-0", Outcome: OutcomeFailed, Attempts: 3, Detail: "nginx -t: exit status 1", Duration: 1500 * time.Millisecond, Self: true}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"pod":"web-0","outcome":"failed","attempts":3,"detail":"nginx -t: exit status 1","duration":1.5,"self":true}`
	if string(b) != want {
		t.Errorf("json = %s\nwant   %s", b, want)
	}
	var out PodResult
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("round trip = %+v, %v", out, err)
	}
}

func TestLocalModeReloadsThisPodsNginx(t *testing.T) {
	t.Parallel()
	n := testpeers.Nginx(t, testpeers.NginxOptions{})
	before := runningWorkers(t, n)
	// testpeers' nginx has the same Reload(ctx) error as nginxconf's reloader.
	r, err := New(Config{Mode: ModeLocal, Local: n})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n.WaitWorkersReplaced(t, before)
	if len(res.Pods) != 1 || res.Pods[0].Pod != "local" || res.Pods[0].Outcome != OutcomeReloaded || !res.Pods[0].Self {
		t.Errorf("result = %+v", res)
	}
}
