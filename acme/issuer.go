package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/acme/api"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/registration"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/domain"
)

// Manager issues and renews certificates and keeps them in a Store. It is safe
// for concurrent use; it talks to the CA only when asked to, connecting and
// registering the account on first use.
type Manager struct {
	cfg   Config
	log   zerolog.Logger
	store *Store
	http  *http.Client

	mu     sync.Mutex
	client *lego.Client
	acct   *account
	dir    directory

	ariMu sync.Mutex
	ari   map[string]ariAnswer // by serial
}

// directory is what certmgr reads from the ACME directory itself.
type directory struct {
	NewOrder    string `json:"newOrder"`
	RenewalInfo string `json:"renewalInfo"`
}

// New checks cfg and returns a Manager. It does not contact the CA.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	hc, err := newHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	store := NewStore(cfg.Dir)
	store.journal = cfg.Journal
	return &Manager{
		cfg:   cfg,
		log:   cfg.Logger.With().Str("component", "acme").Logger(),
		store: store,
		http:  hc,
	}, nil
}

// Store is the manager's certificate store.
func (m *Manager) Store() *Store { return m.store }

// DirectoryURL is the ACME directory in use.
func (m *Manager) DirectoryURL() string { return m.cfg.DirectoryURL }

func newHTTPClient(cfg Config) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if cfg.CABundle != "" {
		b, err := os.ReadFile(cfg.CABundle)
		if err != nil {
			return nil, fmt.Errorf("acme config: CABundle: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("acme config: CABundle %s holds no PEM certificate", cfg.CABundle)
		}
	}
	return &http.Client{
		Timeout: cfg.HTTPTimeout,
		Transport: challengePollHint{rt: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: cfg.HTTPTimeout,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		}},
	}, nil
}

// challengePollHint adds "Retry-After: 1" to a challenge response that has
// none. lego polls a started challenge after the response's Retry-After, and
// after 5 s (growing) when there is none; Let's Encrypt and Pebble send none
// there, while validation usually takes about a second. Other responses pass
// unchanged.
type challengePollHint struct{ rt http.RoundTripper }

func (c challengePollHint) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(req)
	if err != nil || req.Method != http.MethodPost || resp.StatusCode != http.StatusOK || resp.Header.Get("Retry-After") != "" {
		return resp, err
	}
	// A challenge object links up to its authorization (RFC 8555 §7.5.1).
	for _, link := range resp.Header.Values("Link") {
		if strings.Contains(link, `rel="up"`) && strings.Contains(resp.Header.Get("Content-Type"), "json") {
			resp.Header.Set("Retry-After", "1")
			break
		}
	}
	return resp, err
}

// connect returns the lego client, creating it (account key, directory) on
// first use and registering the account when register is set and it is not
// registered yet. A failure is not cached: the next call tries again.
func (m *Manager) connect(ctx context.Context, register bool) (*lego.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.client == nil {
		acct, err := loadAccount(m.cfg.Dir, m.cfg.DirectoryURL, m.cfg.Email)
		if err != nil {
			return nil, fmt.Errorf("acme account: %w", err)
		}
		dir, err := m.fetchDirectory(ctx)
		if err != nil {
			return nil, classify("get ACME directory "+m.cfg.DirectoryURL, err)
		}
		client, err := lego.NewClient(&lego.Config{
			CADirURL:    m.cfg.DirectoryURL,
			User:        acct,
			UserAgent:   m.cfg.UserAgent,
			HTTPClient:  m.http,
			Certificate: lego.CertificateConfig{Timeout: m.cfg.CertificateTimeout},
		})
		if err != nil {
			return nil, classify("connect to "+m.cfg.DirectoryURL, err)
		}
		var solver challenge.Provider = webroot{root: m.cfg.Webroot}
		if m.cfg.HTTP01 != nil {
			solver = m.cfg.HTTP01
		}
		if err := client.Challenge.SetHTTP01Provider(solver); err != nil {
			return nil, fmt.Errorf("set http-01 provider: %w", err)
		}
		m.client, m.acct, m.dir = client, acct, dir
	}
	if register && m.acct.reg == nil {
		reg, err := m.client.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
		if err != nil {
			return nil, classify("register ACME account", err)
		}
		// The key may belong to an account registered with another contact
		// (ACME_EMAIL changed): the CA then returns that account as it is.
		m.acct.reg = reg
		if want := contactFor(m.cfg.Email); !slices.Equal(reg.Contact, want) && reg.Location != "" {
			updated, err := m.client.Registration.UpdateRegistration(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
			if err != nil {
				m.acct.reg = nil // try again on the next order
				return nil, classify("update ACME account contact", err)
			}
			reg = updated
		}
		if err := m.acct.saveRegistration(m.cfg.DirectoryURL, reg); err != nil {
			return nil, err
		}
		m.log.Info().Str("account", reg.Location).Str("directory", m.cfg.DirectoryURL).Msg("ACME account registered")
	}
	return m.client, nil
}

func contactFor(email string) []string {
	if email == "" {
		return nil
	}
	return []string{"mailto:" + email}
}

// CheckDirectory proves the ACME directory answers over TLS with the
// configured trust (system roots plus ACME_CA_BUNDLE) and is an ACME
// directory. It registers nothing.
func (m *Manager) CheckDirectory(ctx context.Context) error {
	if _, err := m.fetchDirectory(ctx); err != nil {
		return fmt.Errorf("get ACME directory %s: %w", m.cfg.DirectoryURL, err)
	}
	return nil
}

func (m *Manager) fetchDirectory(ctx context.Context) (directory, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.cfg.DirectoryURL, nil)
	if err != nil {
		return directory{}, err
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return directory{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return directory{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return directory{}, &legoacme.ProblemDetails{HTTPStatus: resp.StatusCode, Detail: "directory answered " + resp.Status}
	}
	var d directory
	if err := json.Unmarshal(body, &d); err != nil || d.NewOrder == "" {
		return directory{}, &legoacme.ProblemDetails{HTTPStatus: resp.StatusCode, Type: "certmgr:badDirectory",
			Detail: fmt.Sprintf("%s is not an ACME directory", m.cfg.DirectoryURL)}
	}
	return d, nil
}

// Issue orders a certificate for d and stores it as the next version of the
// lineage that serves d, with every name of that lineage, its key type and
// its preferred chain: a lineage is never split. When no lineage serves d it
// creates one for d alone (named d, or d-NNNN when d is taken by a lineage for
// other names) with the configured key type. It does not check whether the
// current certificate is still good: that is the caller's decision (force).
func (m *Manager) Issue(ctx context.Context, d domain.Name) (Lineage, error) {
	current, ok, err := m.store.Find(d)
	if err != nil {
		return Lineage{}, err
	}
	if ok {
		return m.renewLineage(ctx, current)
	}
	name, err := m.store.NameForNew(d)
	if err != nil {
		return Lineage{}, err
	}
	return m.issueInto(ctx, name, []string{string(d)}, nil, orderOptions{keyType: m.cfg.KeyType})
}

// Renew orders a new certificate for the names of lineage n and stores it as
// its next version, with the lineage's own key type (its renewal
// configuration's, else its certificate's; ACME_KEY_TYPE only for new
// lineages). The new order names the current certificate in `replaces` (RFC
// 9773) when the CA offers ARI.
func (m *Manager) Renew(ctx context.Context, n LineageName) (Lineage, error) {
	l, err := m.store.Load(n)
	if err != nil {
		return Lineage{}, err
	}
	return m.renewLineage(ctx, l)
}

// RenewFor renews lineage n for names only, a subset of its names: those
// still served by this platform (a certbot lineage may name a domain that
// has since left). The new version and its renewal configuration name only
// these; the order does not claim to replace the current certificate (ARI's
// replaces is for the same names).
func (m *Manager) RenewFor(ctx context.Context, n LineageName, names []domain.Name) (Lineage, error) {
	l, err := m.store.Load(n)
	if err != nil {
		return Lineage{}, err
	}
	if len(names) == 0 {
		return Lineage{}, &RejectedError{Type: "certmgr:unsupportedName",
			Detail: fmt.Sprintf("lineage %s: no name to renew", n), Err: fmt.Errorf("renew %s: no domain", n)}
	}
	have := l.names()
	raw := make([]string, 0, len(names))
	for _, d := range names {
		if !slices.Contains(have, d) {
			return Lineage{}, fmt.Errorf("renew %s for %s: not one of its names %v", n, d, have)
		}
		raw = append(raw, string(d))
	}
	var replacing *x509.Certificate
	if len(names) == len(have) {
		replacing = l.leaf
	}
	return m.issueInto(ctx, l.Name, raw, replacing, m.renewalOptions(l))
}

func (m *Manager) renewLineage(ctx context.Context, l Lineage) (Lineage, error) {
	var names []string
	if l.Err == nil {
		names = l.Domains
	} else {
		// A broken lineage is repaired with a certificate for the names it
		// stands for: the domain it is named after, its webroot map's.
		for _, d := range l.names() {
			names = append(names, string(d))
		}
	}
	if len(names) == 0 {
		return Lineage{}, &RejectedError{Type: "certmgr:unsupportedName",
			Detail: fmt.Sprintf("lineage %s names no domain certmgr can renew", l.Name),
			Err:    fmt.Errorf("renew %s: no domain", l.Name)}
	}
	for _, raw := range names {
		if _, err := domain.Parse(raw); err != nil {
			return Lineage{}, &RejectedError{Type: "certmgr:unsupportedName", Detail: err.Error(),
				Err: fmt.Errorf("renew %s: %w", l.Name, err)}
		}
	}
	return m.issueInto(ctx, l.Name, names, l.leaf, m.renewalOptions(l))
}

// orderOptions are the per-lineage settings of an order.
type orderOptions struct {
	keyType        KeyType
	preferredChain string
}

// RenewalKeyType is the key type lineage l is renewed with: its renewal
// configuration's (key_type, rsa_key_size, elliptic_curve), else the key type
// of its certificate, else ACME_KEY_TYPE.
func (m *Manager) RenewalKeyType(l Lineage) KeyType {
	switch {
	case l.Settings.KeyType != "":
		return l.Settings.KeyType
	case l.KeyType != "":
		return l.KeyType
	}
	return m.cfg.KeyType
}

func (m *Manager) renewalOptions(l Lineage) orderOptions {
	return orderOptions{keyType: m.RenewalKeyType(l), preferredChain: l.Settings.PreferredChain}
}

// Notes are the settings of l's renewal configuration that certmgr reads but
// does not follow, one line each, for the listing and the dry run.
// key_type/rsa_key_size/elliptic_curve and preferred_chain are followed.
func (m *Manager) Notes(l Lineage) []string {
	var out []string
	rs := l.Settings
	if rs.KeyTypeErr != nil {
		out = append(out, fmt.Sprintf("%s in %s is ignored; renews with a %s key", rs.KeyTypeErr, l.RenewalConf, m.RenewalKeyType(l)))
	}
	if rs.Server != "" && strings.TrimRight(rs.Server, "/") != strings.TrimRight(m.cfg.DirectoryURL, "/") {
		out = append(out, fmt.Sprintf("server = %s is ignored; renews at %s (ACME_DIRECTORY_URL)", rs.Server, m.cfg.DirectoryURL))
	}
	if rs.Authenticator != "" && rs.Authenticator != "webroot" {
		out = append(out, fmt.Sprintf("authenticator = %s is ignored; certmgr answers HTTP-01 from %s (ACME_WEBROOT)", rs.Authenticator, m.cfg.Webroot))
	}
	var others []string
	for d, root := range rs.WebrootMap {
		if filepath.Clean(root) != filepath.Clean(m.cfg.Webroot) {
			others = append(others, d+" = "+root)
		}
	}
	if rs.WebrootPath != "" && filepath.Clean(rs.WebrootPath) != filepath.Clean(m.cfg.Webroot) && len(rs.WebrootMap) == 0 {
		others = append(others, "webroot_path = "+rs.WebrootPath)
	}
	if len(others) > 0 {
		slices.Sort(others)
		out = append(out, fmt.Sprintf("webroot %s is ignored; certmgr answers HTTP-01 from %s (ACME_WEBROOT)", strings.Join(others, ", "), m.cfg.Webroot))
	}
	return out
}

// issueInto orders a certificate for names and saves it into lineage n.
func (m *Manager) issueInto(ctx context.Context, n LineageName, names []string, replacing *x509.Certificate, o orderOptions) (Lineage, error) {
	op := "issue certificate for " + string(n)
	if err := m.checkBackoff(n); err != nil {
		return Lineage{}, err
	}
	client, err := m.connect(ctx, true)
	if err != nil {
		return Lineage{}, fmt.Errorf("%s: %w", op, err)
	}
	replaces := ""
	if replacing != nil && m.dir.RenewalInfo != "" {
		if id, err := api.MakeARICertID(replacing); err == nil {
			replaces = id
		}
	}
	start := time.Now()
	res, err := m.obtain(ctx, client, names, replaces, o)
	if err != nil {
		err = classify(op, err)
		var ve *ValidationError
		if errors.As(err, &ve) {
			if rerr := m.store.recordFailure(n, m.cfg.Now(), ve); rerr != nil {
				return Lineage{}, errors.Join(err, rerr)
			}
		}
		return Lineage{}, err
	}
	m.store.clearFailures(n)
	l, err := m.store.Save(n, Issued{Cert: res.Certificate, Chain: res.IssuerCertificate, Key: res.PrivateKey},
		RenewalParams{Server: m.cfg.DirectoryURL, Account: m.acct.ID(), Webroot: m.cfg.Webroot, KeyType: o.keyType, Domains: names})
	if err != nil {
		return Lineage{}, err
	}
	m.log.Info().Str("lineage", string(n)).Strs("domains", names).Int("version", l.Version).
		Str("key_type", string(o.keyType)).Time("not_after", l.NotAfter).Bool("replaces", replaces != "").
		Dur("took", time.Since(start)).Msg("certificate issued")
	return l, nil
}

// obtain runs one order. When the CA refuses the order because of `replaces`
// (the old certificate is from another account or CA, or already replaced), it
// orders again without it; when the saved account no longer exists at the CA,
// it registers again and retries once.
func (m *Manager) obtain(ctx context.Context, client *lego.Client, names []string, replaces string, o orderOptions) (*certificate.Resource, error) {
	req := certificate.ObtainRequest{
		Domains:        names,
		KeyType:        cmpKeyType(o.keyType).lego(),
		PreferredChain: o.preferredChain,
		Bundle:         false,
		Profile:        m.cfg.Profile,
		ReplacesCertID: replaces,
	}
	res, err := client.Certificate.Obtain(ctx, req)
	if err == nil {
		return res, nil
	}
	var pd *legoacme.ProblemDetails
	var rl *legoacme.RateLimitedError
	if !errors.As(err, &pd) || errors.As(err, &rl) {
		return nil, err
	}
	switch {
	case replaces != "" && pd.URL == m.dir.NewOrder:
		m.log.Info().Str("problem", pd.Type).Str("detail", pd.Detail).Msg("order with replaces refused, ordering without")
		req.ReplacesCertID = ""
		return client.Certificate.Obtain(ctx, req)
	case pd.Type == legoacme.AccountDoesNotExistErrorType:
		m.mu.Lock()
		m.acct.reg = nil
		m.mu.Unlock()
		if _, err := m.connect(ctx, true); err != nil {
			return nil, err
		}
		return client.Certificate.Obtain(ctx, req)
	}
	return nil, err
}
