package podreload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// LocalReloader reloads this pod's own nginx. nginxconf's local reloader
// satisfies it.
type LocalReloader interface {
	Reload(ctx context.Context) error
}

// DefaultNamespaceFile is where Kubernetes mounts the service account's namespace.
const DefaultNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// DefaultContainer is the container of a sibling pod that runs nginx.
const DefaultContainer = "proxy"

// Config configures a Reloader. Zero values take the defaults in the comments.
type Config struct {
	// Mode: local (default), exec or rollout. See ParseMode for RELOAD_ALL_PODS.
	Mode Mode
	// Local reloads this pod's nginx in local mode. Required in local mode.
	Local LocalReloader
	// DeploymentName is the Deployment whose pods are siblings (DEPLOYMENT_NAME).
	// Required in exec and rollout modes.
	DeploymentName string
	// Namespace of the Deployment (POD_NAMESPACE, else CATTLE_K8S_NAMESPACE).
	// Default: the contents of NamespaceFile.
	Namespace string
	// NamespaceFile is read when no namespace is set. Default DefaultNamespaceFile.
	NamespaceFile string
	// PodName is this pod (POD_NAME, from the Downward API); its result is
	// marked self. Optional.
	PodName string
	// Container to exec into (NGINX_CONTAINER). Default DefaultContainer.
	Container string
	// Kubeconfig is a kubeconfig path for running outside the cluster.
	// Default: the in-cluster configuration.
	Kubeconfig string
	// Concurrency bounds how many pods are reloaded at once. Default 50: a
	// reload is a short exec that costs the API server little, and with 50
	// at once a 50-pod Deployment reloads in one wave (bench/podreload).
	Concurrency int
	// PodTimeout bounds one pod's reload, all attempts included. Default 20s.
	PodTimeout time.Duration
	// APITimeout bounds every other Kubernetes API call (get the Deployment,
	// list its pods, patch it), so that an API server that accepts connections
	// and never answers cannot hang a reload. Default 10s.
	APITimeout time.Duration
	// Retries is how many more times a failed pod is tried. Default 2;
	// negative means no retry. Timed-out pods are not retried.
	Retries int
	// RetryDelay is the pause before the first retry, doubled each time.
	// Default 250ms.
	RetryDelay time.Duration
	// TestCommand checks the configuration in the pod. Default ["nginx", "-t"].
	TestCommand []string
	// ReloadCommand reloads nginx in the pod. Default ["nginx", "-s", "reload"].
	ReloadCommand []string
	// FieldManager names certmgr in the Deployment's managed fields in
	// rollout mode. Default "certmgr".
	FieldManager string
	// Logger receives one line per pod outcome. Default: disabled.
	Logger zerolog.Logger
}

func (c Config) withDefaults() Config {
	c.Mode = cmp.Or(c.Mode, ModeLocal)
	c.NamespaceFile = cmp.Or(c.NamespaceFile, DefaultNamespaceFile)
	c.Container = cmp.Or(c.Container, DefaultContainer)
	c.Concurrency = cmp.Or(c.Concurrency, 50)
	c.PodTimeout = cmp.Or(c.PodTimeout, 20*time.Second)
	c.APITimeout = cmp.Or(c.APITimeout, 10*time.Second)
	c.Retries = cmp.Or(c.Retries, 2)
	if c.Retries < 0 {
		c.Retries = 0
	}
	c.RetryDelay = cmp.Or(c.RetryDelay, 250*time.Millisecond)
	if len(c.TestCommand) == 0 {
		c.TestCommand = []string{"nginx", "-t"}
	}
	if len(c.ReloadCommand) == 0 {
		c.ReloadCommand = []string{"nginx", "-s", "reload"}
	}
	c.FieldManager = cmp.Or(c.FieldManager, "certmgr")
	return c
}

func (c Config) validate() error {
	switch c.Mode {
	case ModeLocal:
		if c.Local == nil {
			return errors.New("podreload: Local is required in local mode")
		}
		return nil
	case ModeExec, ModeRollout:
	default:
		return fmt.Errorf("podreload: Mode %q is not local, exec or rollout", c.Mode)
	}
	if c.DeploymentName == "" {
		return fmt.Errorf("podreload: DeploymentName (DEPLOYMENT_NAME) is required in %s mode", c.Mode)
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("podreload: Concurrency %d must be at least 1", c.Concurrency)
	}
	if c.PodTimeout < 0 || c.APITimeout < 0 {
		return fmt.Errorf("podreload: PodTimeout %s and APITimeout %s must be positive", c.PodTimeout, c.APITimeout)
	}
	return nil
}

// resolveNamespace is the explicit namespace, else the service account's
// namespace file. (The environment's fallbacks, POD_NAMESPACE then
// CATTLE_K8S_NAMESPACE, are applied by cmd/certmgr's table into Namespace.)
func resolveNamespace(explicit string, file string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("find namespace: Namespace is empty and %w", err)
	}
	ns := strings.TrimSpace(string(b))
	if ns == "" {
		return "", fmt.Errorf("find namespace: Namespace is empty and %s is empty", file)
	}
	return ns, nil
}
