package acme

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
)

// Let's Encrypt's directories, chosen by ACME_STAGING when ACME_DIRECTORY_URL is empty.
const (
	LetsEncryptStaging    = "https://acme-staging-v02.api.letsencrypt.org/directory"
	LetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
)

// ParseDirectoryURL checks an ACME directory URL (ACME_DIRECTORY_URL): https
// and a host, as RFC 8555 requires and lego enforces.
func ParseDirectoryURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("directory URL %q: want an https URL with a host", s)
	}
	return s, nil
}

// Config configures a Manager. The comment of each field names its environment
// variable and default.
type Config struct {
	// DirectoryURL is the ACME directory (ACME_DIRECTORY_URL). Default: Let's
	// Encrypt staging, or production when Production is set.
	DirectoryURL string
	// Production selects Let's Encrypt production when DirectoryURL is empty
	// (ACME_STAGING=false). Default false: staging, as the contract says.
	Production bool
	// Email is the ACME account contact (ACME_EMAIL). Default: none.
	Email string
	// CABundle is a PEM file of extra roots trusted for the ACME server's own
	// TLS, added to the system roots (ACME_CA_BUNDLE). Default: system roots only.
	CABundle string
	// KeyType of new certificate keys (ACME_KEY_TYPE). Default ec256.
	KeyType KeyType
	// Profile is the ACME profile requested in new orders (ACME_PROFILE), for
	// example classic, tlsserver or shortlived. Default: none (the CA's default).
	Profile string
	// Webroot is the HTTP-01 webroot nginx serves on :8080 (ACME_WEBROOT).
	// Required (certmgr's default, nginxconf.DefaultACMEWebroot, is applied
	// by cmd/certmgr, which hands the same path to nginxconf).
	Webroot string
	// HTTP01, when set, solves HTTP-01 challenges instead of the Webroot
	// (fleet mode: the key authorization goes into the PostgreSQL store, which
	// every pod's agent answers from). Default: the Webroot.
	HTTP01 ChallengeSolver
	// Journal, when set, hears of every certificate Save is about to write
	// (fleet mode: the mirror records that the lineage holds a certificate
	// the PostgreSQL store has not got yet). Default: none.
	Journal SaveJournal
	// Dir is the certbot-layout store (LETSENCRYPT_DIR). Required (default in
	// cmd/certmgr: nginxconf.DefaultLetsEncryptDir, the path nginx reads).
	Dir string
	// Now is the clock the renewal policy reads. Default time.Now.
	Now func() time.Time
	// Logger receives the manager's logs (component=acme). Default: zerolog.Nop.
	Logger zerolog.Logger
	// HTTPTimeout bounds each request to the ACME server. Default 30s.
	HTTPTimeout time.Duration
	// CertificateTimeout bounds the wait for a finalized order's certificate.
	// Default 30s (lego polls every 1/60 of it).
	CertificateTimeout time.Duration
	// UserAgent is sent to the ACME server. Default "certmgr".
	UserAgent string
}

func (c Config) withDefaults() Config {
	dir := LetsEncryptStaging
	if c.Production {
		dir = LetsEncryptProduction
	}
	c.DirectoryURL = cmp.Or(c.DirectoryURL, dir)
	c.KeyType = cmp.Or(c.KeyType, DefaultKeyType)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.HTTPTimeout = cmp.Or(c.HTTPTimeout, 30*time.Second)
	c.CertificateTimeout = cmp.Or(c.CertificateTimeout, 30*time.Second)
	c.UserAgent = cmp.Or(c.UserAgent, "certmgr")
	return c
}

func (c Config) validate() error {
	if _, err := ParseDirectoryURL(c.DirectoryURL); err != nil {
		return fmt.Errorf("acme config: DirectoryURL: %w", err)
	}
	if _, err := ParseKeyType(string(c.KeyType)); err != nil {
		return fmt.Errorf("acme config: KeyType: %w", err)
	}
	if c.Webroot == "" || c.Dir == "" {
		return errors.New("acme config: Webroot and Dir are required")
	}
	if !filepath.IsAbs(c.Webroot) {
		return fmt.Errorf("acme config: Webroot %q is not an absolute path", c.Webroot)
	}
	if !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("acme config: Dir %q is not an absolute path", c.Dir)
	}
	if c.HTTPTimeout < 0 || c.CertificateTimeout < 0 {
		return errors.New("acme config: negative timeout")
	}
	return nil
}
