package wire_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/dnscheck"
	"github.com/midsummer/certmgr/domain"
	"github.com/midsummer/certmgr/domaindb"
	"github.com/midsummer/certmgr/internal/wire"
	"github.com/midsummer/certmgr/nginxconf"
	"github.com/midsummer/certmgr/podreload"
	"github.com/midsummer/certmgr/tasks"
)

func TestParseStoreKind(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc, in string
		want     wire.StoreKind
		ok       bool
	}{
		{"files", "files", wire.StoreFiles, true},
		{"postgres in any case", "PostgreS", wire.StorePostgres, true},
		{"empty", "", "", false},
		{"another store", "redis", "", false},
	} {
		got, err := wire.ParseStoreKind(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("%s: ParseStoreKind(%q) = %q, %v", tc.desc, tc.in, got, err)
		}
	}
}

// filesConfig is a files-mode Config that builds without a peer: the
// database pool opens lazily, and nothing asks the CA or runs nginx.
func filesConfig(t *testing.T) wire.Config {
	dir := t.TempDir()
	return wire.Config{
		Names:  domain.Policy{CNAMETarget: "custom.platform.test"},
		DB:     domaindb.Config{URL: "postgres://u@127.0.0.1:1/x"},
		DNS:    dnscheck.Config{Servers: []string{"127.0.0.1:1"}, Target: "custom.platform.test"},
		ACME:   acme.Config{DirectoryURL: "https://127.0.0.1:1/dir", Dir: filepath.Join(dir, "letsencrypt"), Webroot: dir},
		Nginx:  nginxconf.Config{ConfPath: filepath.Join(dir, "custom-domains.conf"), LetsEncryptDir: filepath.Join(dir, "letsencrypt"), ACMEWebroot: dir},
		Reload: podreload.Config{Mode: podreload.ModeLocal},
	}
}

// The wrappers get files mode's own Issuer and Reloader (the tasks tests'
// counts prove the tasks get what they return).
func TestBuildWrapsIssuerAndReloader(t *testing.T) {
	t.Parallel()
	cfg := filesConfig(t)
	var wrapped []any
	cfg.WrapIssuer = func(i tasks.Issuer) tasks.Issuer { wrapped = append(wrapped, i); return i }
	cfg.WrapReloader = func(r tasks.Reloader) tasks.Reloader { wrapped = append(wrapped, r); return r }
	c, err := wire.Build(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if want := []any{c.ACME, c.Reloader}; !slices.Equal(wrapped, want) || c.Tasks == nil || c.Nginx == nil || c.Store != nil {
		t.Errorf("wrapped %v, want %v; components %+v", wrapped, want, c)
	}
}

// A DNS checker without a usable resolver is a *DNSConfigError naming the
// servers as configured.
func TestBuildNamesTheDNSConfig(t *testing.T) {
	t.Parallel()
	cfg := filesConfig(t)
	cfg.DNS.Servers = nil
	cfg.DNS.ResolvConf = filepath.Join(t.TempDir(), "missing")
	_, err := wire.Build(context.Background(), cfg)
	var de *wire.DNSConfigError
	if !errors.As(err, &de) || de.Servers != nil || de.Err == nil {
		t.Fatalf("Build = %v; want a *wire.DNSConfigError", err)
	}
}
