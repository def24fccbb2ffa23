package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/registration"
)

// account is the ACME account of one directory URL. Its key is created once,
// kept under <Dir>/accounts/certmgr/<host>/<id>/private_key.pem (0600) and
// shared by every replica mounting the store: the first one to link its key
// into place wins, the others read that key. Registering the same key again
// returns the same account, so a race between replicas costs one request.
type account struct {
	dir   string // the account's directory
	email string
	key   crypto.Signer
	reg   *legoacme.ExtendedAccount
}

// accountFile is account.json, written once the CA has registered the key.
type accountFile struct {
	Directory string `json:"directory"`
	URI       string `json:"uri"`
	Email     string `json:"email"`
}

var _ registration.User = (*account)(nil)

func (a *account) GetEmail() string                           { return a.email }
func (a *account) GetRegistration() *legoacme.ExtendedAccount { return a.reg }
func (a *account) GetPrivateKey() crypto.Signer               { return a.key }

// ID identifies the account in renewal configurations, like certbot's account
// ids: a hash of the public key.
func (a *account) ID() string {
	der, err := x509.MarshalPKIXPublicKey(a.key.Public())
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:16])
}

// accountDir is where the account of directoryURL lives under the store.
func accountDir(store, directoryURL string) (string, error) {
	u, err := url.Parse(directoryURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("directory URL %q has no host", directoryURL)
	}
	sum := sha256.Sum256([]byte(directoryURL))
	// The host is only a readable hint; the hash tells directories apart.
	safeHost := make([]rune, 0, len(u.Host))
	for _, r := range u.Host {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			safeHost = append(safeHost, r)
		} else {
			safeHost = append(safeHost, '_')
		}
	}
	if strings.Trim(string(safeHost), ".") == "" {
		safeHost = []rune("_")
	}
	return filepath.Join(store, "accounts", "certmgr", string(safeHost), hex.EncodeToString(sum[:8])), nil
}

// loadAccount reads or creates the account key of directoryURL, and the
// registration if one was saved.
func loadAccount(store, directoryURL, email string) (*account, error) {
	dir, err := accountDir(store, directoryURL)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create account directory: %w", err)
	}
	for _, d := range []string{filepath.Join(store, "accounts"), filepath.Join(store, "accounts", "certmgr")} {
		_ = os.Chmod(d, 0o700)
	}
	key, err := loadOrCreateKey(filepath.Join(dir, "private_key.pem"))
	if err != nil {
		return nil, err
	}
	a := &account{dir: dir, email: email, key: key}
	b, err := os.ReadFile(filepath.Join(dir, "account.json"))
	if err == nil {
		var f accountFile
		if json.Unmarshal(b, &f) == nil && f.URI != "" && f.Directory == directoryURL && f.Email == email {
			a.reg = &legoacme.ExtendedAccount{Location: f.URI}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read account: %w", err)
	}
	return a, nil
}

// saveRegistration records the account URL so later starts skip registration.
func (a *account) saveRegistration(directoryURL string, reg *legoacme.ExtendedAccount) error {
	a.reg = reg
	b, err := json.MarshalIndent(accountFile{Directory: directoryURL, URI: reg.Location, Email: a.email}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(a.dir, "account.json"), b, 0o600); err != nil {
		return fmt.Errorf("save account: %w", err)
	}
	return nil
}

// loadOrCreateKey reads the key at path, or creates it there without ever
// replacing one another process created first.
func loadOrCreateKey(path string) (crypto.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		key, err := certcrypto.ParsePEMPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("parse account key %s: %w", path, err)
		}
		return key, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read account key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate account key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode account key: %w", err)
	}
	// link(2) fails when path exists: whoever links first owns the account.
	if _, err := writeFileExclusive(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("install account key: %w", err)
	}
	return loadOrCreateKey(path)
}
