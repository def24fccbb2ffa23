package podreload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Reloader makes nginx on the Deployment's pods load the current configuration.
type Reloader struct {
	cfg       Config
	client    kubernetes.Interface
	rest      *rest.Config
	namespace string
	log       zerolog.Logger
	now       func() time.Time
}

// New checks cfg and, in exec and rollout modes, builds the Kubernetes client
// (in-cluster, or from cfg.Kubeconfig) and resolves the namespace. It does not
// contact the API server.
func New(cfg Config) (*Reloader, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Mode == ModeLocal {
		return newReloader(cfg, nil, nil, ""), nil
	}
	restCfg, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	ns, err := resolveNamespace(cfg.Namespace, cfg.NamespaceFile)
	if err != nil {
		return nil, err
	}
	return newReloader(cfg, client, restCfg, ns), nil
}

// newReloader takes a filled, valid cfg; tests hand it a fake clientset.
func newReloader(cfg Config, client kubernetes.Interface, restCfg *rest.Config, namespace string) *Reloader {
	return &Reloader{
		cfg:       cfg,
		client:    client,
		rest:      restCfg,
		namespace: namespace,
		log:       cfg.Logger.With().Str("component", "podreload").Logger(),
		now:       time.Now,
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	var (
		c   *rest.Config
		err error
	)
	if kubeconfig != "" {
		c, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
		}
	} else {
		c, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster kubernetes config (set a kubeconfig to run outside a cluster): %w", err)
		}
	}
	c.UserAgent = cmp.Or(c.UserAgent, "certmgr-podreload")
	return c, nil
}

// Mode returns the mode the Reloader runs in.
func (r *Reloader) Mode() Mode { return r.cfg.Mode }

// Namespace returns the namespace the Reloader works in ("" in local mode).
func (r *Reloader) Namespace() string { return r.namespace }

// Reload makes nginx load its configuration according to the mode and returns
// every pod's outcome. The Result is filled even when the error is not nil:
// an *IncompleteError when some pods failed or timed out, a *PermissionError
// (wrapped) when the service account lacks a permission.
func (r *Reloader) Reload(ctx context.Context) (Result, error) {
	switch r.cfg.Mode {
	case ModeExec:
		return r.reloadAll(ctx)
	case ModeRollout:
		return r.restart(ctx)
	default:
		return r.reloadLocal(ctx)
	}
}

func (r *Reloader) reloadLocal(ctx context.Context) (Result, error) {
	start := time.Now()
	err := r.cfg.Local.Reload(ctx)
	p := PodResult{Pod: cmp.Or(r.cfg.PodName, "local"), Outcome: OutcomeReloaded, Attempts: 1, Self: true}
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		p.Outcome, p.Detail = OutcomeTimedOut, truncate(err.Error())
	default:
		p.Outcome, p.Detail = OutcomeFailed, truncate(err.Error())
	}
	p.Duration = time.Since(start)
	res := Result{Mode: ModeLocal, Pods: []PodResult{p}}
	if err != nil {
		return res, fmt.Errorf("reload local nginx: %w", err)
	}
	return res, nil
}
