package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/internal/testpeers"
)

func TestFleetConfigurationErrorsExit2(t *testing.T) {
	t.Parallel()
	pg := testpeers.Postgres(t)
	key := testpeers.StoreKey()
	env := func(kv ...string) map[string]string {
		m := map[string]string{EnvDBURL: pg.URL, EnvCNAMETarget: "custom.midsummer.cloud", EnvStore: "postgres", EnvStoreKey: key}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	// The store is created (and sealed) with key.
	if code, out, stderr := runCLI(t, env(), "migrate"); code != exitOK || !strings.Contains(out, "schema version 1") {
		t.Fatalf("migrate: exit %d\n%s%s", code, out, stderr)
	}
	tests := []struct {
		desc string
		env  map[string]string
		args []string
		want string
	}{
		{"store value", env(EnvStore, "etcd"), []string{"migrate"}, "CERTMGR_STORE=\"etcd\" is invalid"},
		{"missing key", env(EnvStoreKey, ""), []string{"migrate"}, "CERTMGR_STORE_KEY: not set"},
		{"short key", env(EnvStoreKey, "c2hvcnQ="), []string{"agent"}, "decodes to 5 bytes"},
		{"wrong key", env(EnvStoreKey, testpeers.StoreKey()), []string{"store", "export", t.TempDir()}, "does not open this store"},
		{"reload all pods", env(EnvReloadAllPods, "true", EnvDeploymentName, "api"), []string{"worker"},
			"RELOAD_ALL_PODS=\"true\" is invalid: expected false with CERTMGR_STORE=postgres: in fleet mode no worker reloads nginx"},
		{"agent on files", env(EnvStore, "files"), []string{"agent"}, "certmgr agent serves the postgres store"},
		{"store without op", env(), []string{"store"}, "import DIR, export DIR or rotate-key"},
		{"import without dir", env(), []string{"store", "import"}, "one directory"},
		{"import not certbot", env(), []string{"store", "import", t.TempDir()}, "a certbot-layout directory"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, tc.env, tc.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Fatalf("stderr does not name the problem %q:\n%s", tc.want, stderr)
			}
		})
	}
}

func TestStoreImportExportRotateFromTheCommandLine(t *testing.T) {
	t.Parallel()
	pg := testpeers.Postgres(t)
	oldKey, newKey := testpeers.StoreKey(), testpeers.StoreKey()
	src := t.TempDir()
	writeCertbotLineage(t, src, "shop.example.com")
	env := map[string]string{EnvDBURL: pg.URL, EnvStore: "postgres", EnvStoreKey: oldKey}
	code, out, stderr := runCLI(t, env, "store", "import", src)
	if code != exitOK || !strings.Contains(out, "imported 1 lineage(s)") {
		t.Fatalf("import: exit %d\n%s%s", code, out, stderr)
	}
	env[EnvStoreKey] = newKey + "," + oldKey
	if code, out, stderr := runCLI(t, env, "store", "rotate-key"); code != exitOK || !strings.Contains(out, "re-sealed 2 value(s)") {
		t.Fatalf("rotate-key: exit %d\n%s%s", code, out, stderr)
	}
	env[EnvStoreKey] = newKey
	dst := t.TempDir()
	if code, out, stderr := runCLI(t, env, "store", "export", dst); code != exitOK || !strings.Contains(out, "exported 1 lineage(s)") {
		t.Fatalf("export: exit %d\n%s%s", code, out, stderr)
	}
	a, _ := os.ReadFile(filepath.Join(src, "live", "shop.example.com", "privkey.pem"))
	b, err := os.ReadFile(filepath.Join(dst, "live", "shop.example.com", "privkey.pem"))
	if err != nil || string(a) != string(b) {
		t.Fatalf("exported key differs: %v", err)
	}
	env[EnvStoreKey] = oldKey
	if code, _, stderr := runCLI(t, env, "store", "export", t.TempDir()); code != exitUsage {
		t.Fatalf("old key after rotation: exit %d\n%s", code, stderr)
	}
}

// writeCertbotLineage saves a certificate for name into dir the way files
// mode does.
func writeCertbotLineage(t *testing.T, dir, name string) {
	t.Helper()
	if _, err := acme.NewStore(dir).Save(acme.LineageName(name), issued(t, time.Now().Add(90*24*time.Hour), name),
		acme.RenewalParams{Server: "https://acme.test/dir", KeyType: acme.EC256, Domains: []string{name}, Webroot: "/var/www/letsencrypt"}); err != nil {
		t.Fatal(err)
	}
}
