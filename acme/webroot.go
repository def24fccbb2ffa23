package acme

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/go-acme/lego/v5/challenge"
)

// ChallengeSolver publishes an HTTP-01 key authorization where the CA will
// fetch it (http://<domain>/.well-known/acme-challenge/<token>) and removes it
// afterwards. It is lego's challenge.Provider.
type ChallengeSolver interface {
	Present(ctx context.Context, domain, token, keyAuth string) error
	CleanUp(ctx context.Context, domain, token, keyAuth string) error
}

var _ ChallengeSolver = challenge.Provider(nil)

// webroot solves HTTP-01 by writing the key authorization to
// <root>/.well-known/acme-challenge/<token>, which nginx serves on :8080, and
// removing it afterwards. certmgr itself never listens on port 80.
type webroot struct{ root string }

var _ challenge.Provider = webroot{}

// tokenRE is the base64url alphabet RFC 8555 §8.3 allows in a token. The token
// comes from the CA; checking it keeps it a single file name.
var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

func (w webroot) path(token string) (string, error) {
	if !tokenRE.MatchString(token) {
		return "", fmt.Errorf("http-01 token %q is not base64url", token)
	}
	return filepath.Join(w.root, ".well-known", "acme-challenge", token), nil
}

// Present writes the token file atomically (nginx never serves half of it),
// world-readable as nginx's workers need.
// The webroot is opened as an os.Root: a .well-known or acme-challenge
// planted as a symlink leading out of it is refused, not written through.
func (w webroot) Present(_ context.Context, _, token, keyAuth string) error {
	if _, err := w.path(token); err != nil {
		return err
	}
	root, err := os.OpenRoot(w.root)
	if err != nil {
		return fmt.Errorf("open webroot: %w", err)
	}
	defer root.Close()
	if err := root.MkdirAll(challengeDir, 0o755); err != nil {
		return fmt.Errorf("create webroot challenge directory: %w", err)
	}
	dir, err := root.OpenRoot(challengeDir)
	if err != nil {
		return fmt.Errorf("open webroot challenge directory: %w", err)
	}
	defer dir.Close()
	if err := writeAtomic(dir, token, []byte(keyAuth), 0o644, true); err != nil {
		return fmt.Errorf("write http-01 token to the webroot: %w", err)
	}
	return nil
}

// challengeDir is where HTTP-01 tokens live under the webroot.
var challengeDir = filepath.Join(".well-known", "acme-challenge")

// CleanUp removes the token file.
func (w webroot) CleanUp(_ context.Context, _, token, _ string) error {
	if _, err := w.path(token); err != nil {
		return err
	}
	root, err := os.OpenRoot(w.root)
	if err != nil {
		return fmt.Errorf("open webroot: %w", err)
	}
	defer root.Close()
	if err := root.Remove(filepath.Join(challengeDir, token)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove http-01 token from the webroot: %w", err)
	}
	return nil
}
