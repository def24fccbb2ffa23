package acme

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A copy written by WriteLineageFiles is the layout Save writes: the store
// loads it whole, Save continues it with the next version, ReadLineageFiles
// reads back what was written, and writing it unchanged changes nothing.
func TestWriteLineageFilesIsTheStoresLayout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t)
	now := time.Now()
	var versions []ArchiveVersion
	for n := 1; n <= 2; n++ {
		c := ca.issue(t, now, now.Add(time.Hour), "shop.example.com")
		versions = append(versions, ArchiveVersion{N: n, Cert: c.Cert, Chain: c.Chain, Fullchain: append(append([]byte{}, c.Cert...), c.Chain...), Privkey: c.Key})
	}
	s := NewStore(dir)
	files := LineageFiles{Name: "shop.example.com", Versions: versions, Live: 1,
		RenewalConf: s.renewalConf("shop.example.com", RenewalParams{Server: "https://ca.example/dir", KeyType: EC256, Domains: []string{"shop.example.com"}})}
	for _, step := range []struct {
		live        int
		wantChanged bool
	}{{1, true}, {1, false}, {2, true}, {2, false}} {
		files.Live = step.live
		changed, err := WriteLineageFiles(dir, files, false)
		if err != nil || changed != step.wantChanged {
			t.Fatalf("live %d: changed %v, %v; want changed %v", step.live, changed, err, step.wantChanged)
		}
		l, err := s.Load("shop.example.com")
		if err != nil || l.Err != nil || l.Version != step.live || !bytes.Equal(l.pem, versions[step.live-1].Cert) {
			t.Fatalf("live %d: store loads version %d (%v, %v)", step.live, l.Version, err, l.Err)
		}
		if got := LiveVersion(dir, "shop.example.com"); got != step.live {
			t.Fatalf("LiveVersion = %d; want %d", got, step.live)
		}
	}
	back, err := ReadLineageFiles(dir, "shop.example.com")
	if err != nil || back.Live != 2 || len(back.Versions) != 2 || !bytes.Equal(back.Versions[0].Privkey, versions[0].Privkey) || !bytes.Equal(back.RenewalConf, files.RenewalConf) {
		t.Fatalf("read back: live %d, %d versions, %v", back.Live, len(back.Versions), err)
	}
	if info, err := os.Stat(filepath.Join(dir, "archive", "shop.example.com", "privkey1.pem")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("privkey1.pem: %v, %v; want mode 0600", info, err)
	}
	c := ca.issue(t, now, now.Add(time.Hour), "shop.example.com")
	if l, err := s.Save("shop.example.com", c, RenewalParams{}); err != nil || l.Version != 3 {
		t.Fatalf("Save after the copy: version %d, %v; want 3", l.Version, err)
	}
}

func TestLiveVersionStaysInsideTheLineage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	live := filepath.Join(dir, "live", "a.example.com")
	if err := os.MkdirAll(live, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc, target string
		want         int
	}{
		{"relative, as certbot writes", "../../archive/a.example.com/cert7.pem", 7},
		{"absolute, inside", filepath.Join(dir, "archive", "a.example.com", "cert3.pem"), 3},
		{"another lineage's archive", "../../archive/b.example.com/cert7.pem", 0},
		{"not a cert file", "../../archive/a.example.com/privkey7.pem", 0},
	} {
		link := filepath.Join(live, "cert.pem")
		_ = os.Remove(link)
		if err := os.Symlink(tc.target, link); err != nil {
			t.Fatal(err)
		}
		if got := LiveVersion(dir, "a.example.com"); got != tc.want {
			t.Errorf("%s: LiveVersion = %d; want %d", tc.desc, got, tc.want)
		}
	}
	if got := LiveVersion(dir, "../live/a.example.com"); got != 0 {
		t.Errorf("LiveVersion of a path = %d; want 0", got)
	}
}

// A stray zero-padded archive file (cert01.pem) beside an incomplete
// version 1 does not make version 1 count as complete: the lineage reads as
// its one complete version, 2, instead of failing on fullchain1.pem.
func TestReadLineageFilesSkipsIncompleteVersionsDespiteStrayNames(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	archive := filepath.Join(dir, "archive", "a.example.com")
	for _, d := range []string{archive, filepath.Join(dir, "renewal")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string) {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "renewal", "a.example.com.conf"))
	for _, f := range []string{"cert1.pem", "cert01.pem", "privkey1.pem", "chain1.pem",
		"cert2.pem", "privkey2.pem", "chain2.pem", "fullchain2.pem"} {
		write(filepath.Join(archive, f))
	}
	l, err := ReadLineageFiles(dir, "a.example.com")
	if err != nil || len(l.Versions) != 1 || l.Live != 2 {
		t.Fatalf("ReadLineageFiles: %d versions, live %d, %v; want version 2 only", len(l.Versions), l.Live, err)
	}
}
