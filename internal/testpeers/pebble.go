package testpeers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// PebbleOptions shape a Pebble instance.
type PebbleOptions struct {
	// HTTPPort is where Pebble connects to validate HTTP-01 challenges: the
	// port of the nginx that serves the webroot. Required for issuance.
	HTTPPort int
	// NonceRejectPercent is PEBBLE_WFE_NONCEREJECT; 0 (the default here)
	// turns Pebble's random badNonce answers off.
	NonceRejectPercent int
	// DNS is the resolver Pebble validates with; nil starts a
	// pebble-challtestsrv of the test's own (PebblePeer.DNS).
	DNS *ChallTestSrvPeer
	// Profiles maps profile name to certificate lifetime. Default: "classic"
	// 90 days, the only profile, so orders without a profile are deterministic.
	Profiles map[string]time.Duration
	// Env adds environment variables (for example PEBBLE_CHAIN_LENGTH).
	Env []string
}

// PebblePeer is a running Pebble ACME server.
type PebblePeer struct {
	DirectoryURL  string // https://127.0.0.1:port/dir
	CABundle      string // PEM file trusting Pebble's own TLS certificate
	ManagementURL string // https://127.0.0.1:port (roots, set-renewal-info)
	DNS           *ChallTestSrvPeer
	// Client trusts CABundle; use it for the management API.
	Client *http.Client
	proc   *Process
}

// Pebble starts Pebble on free loopback ports with PEBBLE_VA_NOSLEEP=1, its
// own TLS certificate (trusted by CABundle) and a short retryAfter, so an
// issuance takes about a second.
func Pebble(t testing.TB, opts PebbleOptions) *PebblePeer {
	t.Helper()
	bin := lookBinary(t, "pebble")
	if opts.DNS == nil {
		opts.DNS = ChallTestSrv(t)
	}
	if opts.HTTPPort == 0 {
		opts.HTTPPort = FreePort(t)
	}
	if len(opts.Profiles) == 0 {
		opts.Profiles = map[string]time.Duration{"classic": 90 * 24 * time.Hour}
	}
	dir := t.TempDir()
	caFile, certFile, keyFile := writeLoopbackTLS(t, dir)

	port, mgmt, tlsPort := FreePort(t), FreePort(t), FreePort(t)
	profiles := map[string]any{}
	for name, d := range opts.Profiles {
		profiles[name] = map[string]any{"description": name, "validityPeriod": int64(d / time.Second)}
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", port),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmt),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       opts.HTTPPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles":                       profiles,
	}}
	cfgFile := filepath.Join(dir, "pebble-config.json")
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatalf("write pebble config: %v", err)
	}
	env := append([]string{
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_WFE_NONCEREJECT=" + strconv.Itoa(opts.NonceRejectPercent),
	}, opts.Env...)
	p := &PebblePeer{
		DirectoryURL:  fmt.Sprintf("https://127.0.0.1:%d/dir", port),
		ManagementURL: fmt.Sprintf("https://127.0.0.1:%d", mgmt),
		CABundle:      caFile,
		DNS:           opts.DNS,
		Client:        httpClientTrusting(t, caFile),
	}
	p.proc = startProcess(t, filepath.Join(dir, "pebble.log"), env, bin,
		"-config", cfgFile, "-dnsserver", opts.DNS.DNSAddr)
	err := waitFor(20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequest(http.MethodGet, p.DirectoryURL, nil)
		return httpDo(ctx, p.Client, req)
	})
	if err != nil {
		t.Fatalf("pebble directory %s: %v", p.DirectoryURL, err)
	}
	return p
}

// Kill stops Pebble at once, as a CA outage would look to a client.
func (p *PebblePeer) Kill() { p.proc.Kill() }

// RootPEM returns the root certificate Pebble signs chains with (it changes
// every start), for verifying issued certificates.
func (p *PebblePeer) RootPEM(t testing.TB) []byte {
	t.Helper()
	resp, err := p.Client.Get(p.ManagementURL + "/roots/0")
	if err != nil {
		t.Fatalf("pebble root: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble root: %s %v", resp.Status, err)
	}
	return b
}

func httpClientTrusting(t testing.TB, caFile string) *http.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatalf("read %s: %v", caFile, err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
}

// writeLoopbackTLS makes a throwaway CA and a certificate for localhost and
// 127.0.0.1 signed by it, and returns the CA, certificate and key paths.
func writeLoopbackTLS(t testing.TB, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	ca := NewCA(t, "certmgr test CA")
	leaf := ca.Issue(t, LeafOptions{Names: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}})
	caFile = filepath.Join(dir, "ca.pem")
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	ca.WriteFile(t, caFile)
	leaf.WriteFiles(t, certFile, keyFile)
	return caFile, certFile, keyFile
}
