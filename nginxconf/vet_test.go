package nginxconf

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/midsummer/certmgr/domain"
)

func TestVet(t *testing.T) {
	t.Parallel()
	le := t.TempDir()
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	v := NewVetter(Config{LetsEncryptDir: le, Now: func() time.Time { return time.Unix(0, now.Load()) }})

	writeLineage(t, le, "a.example.com", leafOpts{})
	old := writeLineage(t, le, "b.example.com-0001", leafOpts{dnsNames: []string{"b.example.com"}})
	writeLineage(t, le, "garbage.example.com", leafOpts{})
	writeFile(t, filepath.Join(le, "archive", "garbage.example.com", "fullchain1.pem"), "-----BEGIN CERTIFICATE-----\nnot base64\n")
	ds := []Domain{
		{Name: "b.example.com", Lineage: "b.example.com-0001"},
		{Name: "a.example.com"},
		{Name: "garbage.example.com"},
		{Name: "Bad.example.com"},
		{Name: "c.example.com", Lineage: "../a.example.com"},
	}
	sites, skipped := v.Vet(ds)
	if len(sites) != 2 || sites[0].Name != "a.example.com" || sites[1].Name != "b.example.com" || sites[1].Lineage != "b.example.com-0001" {
		t.Fatalf("sites = %+v", sites)
	}
	if sum := sha256.Sum256(old.Raw); sites[1].CertSHA256 != hex.EncodeToString(sum[:]) {
		t.Error("fingerprint is not the leaf's SHA-256")
	}
	want := map[domain.Name]SkipKind{"garbage.example.com": SkipUnreadable, "Bad.example.com": SkipInvalidName, "c.example.com": SkipInvalidName}
	for _, s := range skipped {
		if want[s.Name] != s.Kind {
			t.Errorf("skipped %s as %s: %s", s.Name, s.Kind, s.Reason)
		}
	}
	if len(skipped) != 3 {
		t.Errorf("skipped = %+v", skipped)
	}

	// A renewal (new archive files, symlinks moved) is seen despite the cache.
	renewed := writeLineage(t, le, "b.example.com-0001", leafOpts{dnsNames: []string{"b.example.com"}, notAfter: time.Now().Add(72 * time.Hour)})
	sites, _ = v.Vet(ds)
	if sum := sha256.Sum256(renewed.Raw); sites[1].CertSHA256 != hex.EncodeToString(sum[:]) {
		t.Error("Vet still returns the certificate from before the renewal")
	}
	// Expiry is judged at every call, cached or not.
	now.Store(time.Now().Add(25 * time.Hour).UnixNano())
	sites, skipped = v.Vet(ds)
	if len(sites) != 1 || sites[0].Name != "b.example.com" {
		t.Errorf("after 25h sites = %+v; want only the renewed b.example.com", sites)
	}
	var expired *Skipped
	for i := range skipped {
		if skipped[i].Name == "a.example.com" {
			expired = &skipped[i]
		}
	}
	if expired == nil || expired.Kind != SkipExpired || !strings.Contains(expired.Reason, "expired on") {
		t.Errorf("a.example.com after expiry: %+v", expired)
	}
	// A deleted lineage is missing, with the path in the reason.
	os.RemoveAll(filepath.Join(le, "live", "a.example.com"))
	_, skipped = v.Vet(Domains("a.example.com"))
	if len(skipped) != 1 || skipped[0].Kind != SkipMissing || !strings.Contains(skipped[0].Reason, "live/a.example.com/fullchain.pem") {
		t.Errorf("deleted lineage: %+v", skipped)
	}
}
