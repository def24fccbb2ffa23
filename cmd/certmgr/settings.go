package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/midsummer/certmgr/worker"
)

// Letsencrypt's directories, chosen by ACME_STAGING.
const (
	letsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
	letsEncryptStaging    = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// Settings is the whole environment read and checked once; each subcommand
// turns the part it needs into its components' Config structs.
type Settings struct {
	BrokerURL         string
	ResultBackendURL  string
	BrokerOptions     string // JSON
	BackendOptions    string // JSON
	MaxMessageBytes   int    // 0: no limit
	Queue             string
	VisibilityTimeout time.Duration
	ResultExpires     time.Duration
	Concurrency       int
	ShutdownGrace     time.Duration
	RetryBase         time.Duration
	TaskTimeLimit     time.Duration
	Ownership         string
	VerifySecret      string
	TXTLabel          string
	DNSTimeout        time.Duration
	RetryMax          time.Duration

	DBURL       string
	CNAMETarget string
	DNSServers  []string

	ReservedZones        []string
	AllowPrivateSuffixes []string

	ACMEDirectoryURL string
	ACMEEmail        string
	ACMECABundle     string
	ACMEKeyType      string
	ACMEProfile      string
	ACMEWebroot      string
	LetsEncryptDir   string

	NginxConfPath    string
	NginxBinary      string
	NginxMainConf    string
	NginxPrefix      string
	NginxUpstream    string
	NginxHTTPSPort   int
	NginxHTTPPort    int
	NginxCertMode    string
	NginxDefaultCert string
	NginxDefaultKey  string
	NginxNamesHash   string
	NginxReload      string
	NginxTimeout     time.Duration

	ReloadMode     string // local, exec or rollout
	DeploymentName string
	PodNamespace   string // "" = CATTLE_K8S_NAMESPACE, then the service account's
	PodName        string
	NginxContainer string
	Kubeconfig     string

	HTTPAddr string

	Store       string // files or postgres
	StoreKey    string
	AgentResync time.Duration
	AgentWait   time.Duration
}

// needs says which settings a subcommand cannot run without.
type needs struct {
	db     bool // MIDSUMMER_DB_URL
	target bool // CUSTOM_DOMAIN_CNAME_TARGET
}

// loadSettings reads every variable; the error joins one ConfigError per bad
// or missing variable.
func loadSettings(get func(string) string, n needs) (Settings, error) {
	e := &env{get: get}
	var s Settings
	s.BrokerURL = e.brokerURL(EnvBrokerURL)
	s.ResultBackendURL = s.BrokerURL
	if get(EnvResultBackend) != "" {
		s.ResultBackendURL = e.str(EnvResultBackend)
		if err := worker.CheckResultBackend(s.ResultBackendURL); err != nil {
			e.fail(&ConfigError{Name: EnvResultBackend, Value: redactURL(s.ResultBackendURL), Expect: err.Error()})
		}
	}
	s.BrokerOptions = e.str(EnvBrokerOptions)
	if err := worker.CheckTransportOptions(EnvBrokerOptions, s.BrokerOptions); err != nil {
		e.fail(err)
	}
	s.BackendOptions = e.str(EnvBackendOptions)
	if err := worker.CheckBackendTransportOptions(EnvBackendOptions, s.BackendOptions); err != nil {
		e.fail(err)
	}
	s.MaxMessageBytes = e.int(EnvMaxMessageBytes, 0, 1<<30)
	s.Queue = e.str(EnvQueue)
	s.VisibilityTimeout = e.seconds(EnvVisibilityTimeout)
	s.ResultExpires = e.seconds(EnvResultExpires)
	s.Concurrency = e.int(EnvConcurrency, 1, 1024)
	s.ShutdownGrace = e.seconds(EnvShutdownGrace)
	s.RetryBase = e.seconds(EnvRetryBase)
	s.TaskTimeLimit = e.seconds(EnvTaskTimeLimit)
	s.DNSTimeout = e.seconds(EnvDNSTimeout)
	s.Ownership = e.oneOf(EnvOwnership, "cname", "txt")
	s.VerifySecret = e.get(EnvVerifySecret)
	if s.Ownership == "txt" && len(s.VerifySecret) < 16 {
		// Never echo the value: it is a secret.
		e.fail(&ConfigError{Name: EnvVerifySecret, Expect: "at least 16 random bytes when CUSTOM_DOMAIN_OWNERSHIP=txt"})
	}
	s.TXTLabel = e.str(EnvTXTLabel)
	s.RetryMax = e.seconds(EnvRetryMax)
	if s.RetryMax > 0 && s.RetryMax < s.RetryBase {
		e.fail(&ConfigError{Name: EnvRetryMax, Value: e.str(EnvRetryMax), Expect: "at least " + EnvRetryBase})
	}

	if n.db {
		s.DBURL = e.required(EnvDBURL, "a PostgreSQL URL such as postgres://user:pass@host:5432/db")
	} else {
		s.DBURL = e.str(EnvDBURL)
	}
	if s.DBURL != "" {
		e.url(EnvDBURL, "postgres", "postgresql")
	}
	if n.target {
		s.CNAMETarget = e.required(EnvCNAMETarget, "the hostname tenants CNAME to, e.g. custom.midsummer.cloud")
	} else {
		s.CNAMETarget = e.str(EnvCNAMETarget)
	}
	s.DNSServers = e.list(EnvDNSServers)
	s.ReservedZones = e.list(EnvReservedZones)
	s.AllowPrivateSuffixes = e.list(EnvAllowPrivateSuffixes)

	staging := e.bool(EnvACMEStaging)
	s.ACMEDirectoryURL = e.url(EnvACMEDirectoryURL, "https", "http")
	if s.ACMEDirectoryURL == "" {
		s.ACMEDirectoryURL = letsEncryptProduction
		if staging {
			s.ACMEDirectoryURL = letsEncryptStaging
		}
	}
	s.ACMEEmail = e.str(EnvACMEEmail)
	s.ACMECABundle = e.str(EnvACMECABundle)
	s.ACMEKeyType = e.oneOf(EnvACMEKeyType, "ec256", "ec384", "rsa2048", "rsa3072", "rsa4096")
	s.ACMEProfile = e.str(EnvACMEProfile)
	s.ACMEWebroot = e.str(EnvACMEWebroot)
	s.LetsEncryptDir = e.str(EnvLetsEncryptDir)

	s.NginxConfPath = e.str(EnvNginxConfPath)
	s.NginxBinary = e.str(EnvNginxBinary)
	s.NginxMainConf = e.str(EnvNginxMainConf)
	s.NginxPrefix = e.str(EnvNginxPrefix)
	s.NginxUpstream = e.hostPort(EnvNginxUpstream)
	s.NginxHTTPSPort = e.int(EnvNginxHTTPSPort, 1, 65535)
	s.NginxHTTPPort = e.int(EnvNginxHTTPPort, 1, 65535)
	s.NginxCertMode = e.oneOf(EnvNginxCertMode, "auto", "per-server", "variable")
	s.NginxDefaultCert = e.str(EnvNginxDefaultCert)
	s.NginxDefaultKey = e.str(EnvNginxDefaultKey)
	s.NginxNamesHash = e.oneOf(EnvNginxNamesHash, "auto", "off")
	s.NginxReload = e.oneOf(EnvNginxReloadMethod, "auto", "command", "signal")
	s.NginxTimeout = e.seconds(EnvNginxTimeout)

	s.ReloadMode = "local"
	if e.bool(EnvReloadAllPods) {
		s.ReloadMode = "exec"
		if get(EnvReloadMode) != "" {
			s.ReloadMode = e.oneOf(EnvReloadMode, "exec", "rollout")
		}
		if e.str(EnvDeploymentName) == "" {
			e.fail(&ConfigError{Name: EnvDeploymentName, Expect: "the Deployment whose pods reload nginx, when RELOAD_ALL_PODS=true"})
		}
	}
	s.DeploymentName = e.str(EnvDeploymentName)
	s.PodNamespace = e.str(EnvPodNamespace)
	if s.PodNamespace == "" {
		s.PodNamespace = e.str(EnvCattleNamespace)
	}
	s.PodName = e.str(EnvPodName)
	s.NginxContainer = e.str(EnvNginxContainer)
	s.Kubeconfig = e.str(EnvKubeconfig)
	s.HTTPAddr = e.str(EnvHTTPAddr)

	s.Store = e.oneOf(EnvStore, "files", "postgres")
	s.StoreKey = e.get(EnvStoreKey)
	s.AgentResync = e.seconds(EnvAgentResync)
	s.AgentWait = e.seconds(EnvAgentWait)
	if s.Store == "postgres" && s.ReloadMode != "local" {
		e.fail(&ConfigError{Name: EnvReloadAllPods, Value: "true", Expect: "false with CERTMGR_STORE=postgres: in fleet mode no worker reloads nginx; " +
			"the certmgr agent beside each nginx reloads its own when the store changes, so no pods/exec permission is needed"})
	}

	if len(e.errs) > 0 {
		return s, fmt.Errorf("configuration: %w", errors.Join(e.errs...))
	}
	return s, nil
}
