package acme

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/midsummer/certmgr/domain"
)

// confFor is certbot 2.1's renewal configuration for a webroot lineage, with
// extra [renewalparams] lines and a webroot map of names.
func confFor(dir, name string, params []string, names ...string) []byte {
	var b strings.Builder
	b.WriteString("version = 2.1.0\n")
	b.WriteString("archive_dir = " + filepath.Join(dir, "archive", name) + "\n")
	for _, k := range kinds {
		b.WriteString(k + " = " + filepath.Join(dir, "live", name, k+".pem") + "\n")
	}
	b.WriteString("\n# Options used in the renewal process\n[renewalparams]\naccount = 0123456789abcdef0123456789abcdef\n")
	b.WriteString("authenticator = webroot\nwebroot_path = /var/www/letsencrypt,\nserver = https://acme-v02.api.letsencrypt.org/directory\n")
	for _, p := range params {
		b.WriteString(p + "\n")
	}
	b.WriteString("[[webroot_map]]\n")
	for _, n := range names {
		b.WriteString(n + " = /var/www/letsencrypt\n")
	}
	return []byte(b.String())
}

func TestKeyTypeFromCertbotConf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc                 string
		keyType, size, curve string
		want                 KeyType
		wantErr              bool
	}{
		{"certbot before 1.10 wrote none", "", "", "", "", false},
		{"rsa default size", "rsa", "", "", RSA2048, false},
		{"rsa 2048", "rsa", "2048", "", RSA2048, false},
		{"rsa 4096", "rsa", "4096", "", RSA4096, false},
		{"rsa 1024 is not issued", "rsa", "1024", "", "", true},
		{"ecdsa default curve", "ecdsa", "", "", EC256, false},
		{"ecdsa p-384", "ecdsa", "", "secp384r1", EC384, false},
		{"ecdsa p-521 is not issued", "ecdsa", "", "secp521r1", "", true},
		{"unknown", "ed25519", "", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got, err := keyTypeFromConf(tc.keyType, tc.size, tc.curve)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("keyTypeFromConf(%q, %q, %q) = %q, %v; want %q, error %v", tc.keyType, tc.size, tc.curve, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// Every shape certbot makes is found for each of its names: a lineage under
// any --cert-name, one with several names, one named after a domain that is
// broken (standing for its names only while no working lineage does).
func TestServingCoversEveryCertbotShape(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t)
	now := time.Now()
	writeCertbotLineage(t, dir, "custom-name", confFor(dir, "custom-name", nil, "shop.example.com"),
		ca.issue(t, now, now.Add(24*time.Hour), "shop.example.com"))
	writeCertbotLineage(t, dir, "two.example.com", confFor(dir, "two.example.com", nil, "two.example.com", "www.two.example.com"),
		ca.issue(t, now, now.Add(24*time.Hour), "two.example.com", "www.two.example.com"))
	writeCertbotLineage(t, dir, "gone.example.com", confFor(dir, "gone.example.com", nil, "gone.example.com", "alias.example.com"),
		ca.issue(t, now, now.Add(24*time.Hour), "gone.example.com"))
	if err := os.Remove(filepath.Join(dir, "live", "gone.example.com", "privkey.pem")); err != nil {
		t.Fatal(err)
	}
	s := NewStore(dir)
	want := map[domain.Name]LineageName{
		"shop.example.com":    "custom-name",
		"two.example.com":     "two.example.com",
		"www.two.example.com": "two.example.com",
		"gone.example.com":    "gone.example.com",
		"alias.example.com":   "gone.example.com",
	}
	idx, err := s.LineageNames()
	if err != nil {
		t.Fatal(err)
	}
	for d, n := range want {
		if idx[d] != n {
			t.Errorf("LineageNames[%s] = %q, want %q", d, idx[d], n)
		}
	}
	if len(idx) != len(want) {
		t.Errorf("LineageNames = %v, want %v", idx, want)
	}
	l, ok, err := s.Find("www.two.example.com")
	if err != nil || !ok || l.Name != "two.example.com" {
		t.Errorf("Find(www.two) = %s %v %v", l.Name, ok, err)
	}
	if _, ok, _ := s.Find("gone.example.com"); ok {
		t.Error("Find returned a broken lineage")
	}
	// A working lineage for a name takes it over from a broken one; a later
	// expiry takes it over from an earlier one.
	if _, err := s.Save("alias.example.com", ca.issue(t, now, now.Add(time.Hour), "alias.example.com"), RenewalParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save("shop.example.com", ca.issue(t, now, now.Add(48*time.Hour), "shop.example.com"), RenewalParams{}); err != nil {
		t.Fatal(err)
	}
	idx, _ = s.LineageNames()
	if idx["alias.example.com"] != "alias.example.com" || idx["shop.example.com"] != "shop.example.com" {
		t.Errorf("after saves: %v", idx)
	}
	// Removing the newer lineage hands the name back to the older one.
	if err := s.Remove("shop.example.com"); err != nil {
		t.Fatal(err)
	}
	if idx, _ = s.LineageNames(); idx["shop.example.com"] != "custom-name" {
		t.Errorf("after removing the newer lineage: %v", idx)
	}
}

func TestRenewalSettingsAreReadAndIgnoredOnesNamed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t)
	now := time.Now()
	writeCertbotLineage(t, dir, "rsa-lineage", confFor(dir, "rsa-lineage",
		[]string{"key_type = rsa", "rsa_key_size = 2048", `preferred_chain = "ISRG Root X1"`}, "rsa.example.com"),
		ca.issueRSA(t, 2048, now, now.Add(time.Hour), "rsa.example.com"))
	writeCertbotLineage(t, dir, "old.example.com", confFor(dir, "old.example.com", nil, "old.example.com"),
		ca.issueRSA(t, 2048, now, now.Add(time.Hour), "old.example.com"))
	other := bytes.ReplaceAll(confFor(dir, "other.example.com", []string{"key_type = ecdsa", "elliptic_curve = secp521r1"}, "other.example.com"),
		[]byte("other.example.com = /var/www/letsencrypt"), []byte("other.example.com = /srv/other"))
	writeCertbotLineage(t, dir, "other.example.com", other, ca.issue(t, now, now.Add(time.Hour), "other.example.com"))

	m, err := New(Config{Dir: dir, Webroot: "/var/www/letsencrypt", DirectoryURL: "https://acme-v02.api.letsencrypt.org/directory", KeyType: EC256})
	if err != nil {
		t.Fatal(err)
	}
	st, err := m.Statuses(t.Context(), false)
	if err != nil || len(st) != 3 {
		t.Fatalf("statuses: %v %v", st, err)
	}
	byName := map[LineageName]Status{}
	for _, s := range st {
		byName[s.Name] = s
	}
	rsaL := byName["rsa-lineage"]
	if rsaL.Settings.PreferredChain != "ISRG Root X1" || rsaL.RenewKeyType != RSA2048 || len(rsaL.Notes) != 0 {
		t.Errorf("rsa lineage: settings %+v, renews with %s, notes %v", rsaL.Settings, rsaL.RenewKeyType, rsaL.Notes)
	}
	if got := byName["old.example.com"].RenewKeyType; got != RSA2048 {
		t.Errorf("a lineage without key_type renews with %s, want its certificate's rsa2048", got)
	}
	o := byName["other.example.com"]
	if o.RenewKeyType != EC256 || len(o.Notes) != 2 ||
		!strings.Contains(o.Notes[0], "elliptic_curve = secp521r1") || !strings.Contains(o.Notes[1], "other.example.com = /srv/other") {
		t.Errorf("other lineage: renews with %s, notes %q", o.RenewKeyType, o.Notes)
	}
	// A different server is named too.
	m2, _ := New(Config{Dir: dir, Webroot: "/var/www/letsencrypt", DirectoryURL: LetsEncryptStaging})
	if notes := m2.Notes(rsaL.Lineage); len(notes) != 1 || !strings.Contains(notes[0], "server = https://acme-v02") {
		t.Errorf("notes against staging: %q", notes)
	}
	var out bytes.Buffer
	infos := []CertificateInfo{Describe(o, now)}
	if err := WriteCertificates(&out, infos); err != nil || !strings.Contains(out.String(), "Note: webroot other.example.com = /srv/other is ignored") {
		t.Errorf("listing:\n%s", out.String())
	}
	if !slices.Equal(infos[0].Domains, []string{"other.example.com"}) {
		t.Errorf("domains %v", infos[0].Domains)
	}
}
