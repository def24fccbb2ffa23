package acme

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseLineageName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		in   string
		ok   bool
	}{
		{"domain", "shop.example.com", true},
		{"certbot suffix", "shop.example.com-0001", true},
		{"punycode", "xn--bcher-kva.example", true},
		{"certbot --cert-name", "custom-name", true},
		{"cert-name with upper case and underscore", "Shop_Certs.2024", true},
		{"space", "custom name", false},
		{"nginx syntax", "a;b", false},
		{"double dot", "a..b", false},
		{"leading dash", "-x", false},
		{"parent directory", "..", false},
		{"path separator", "a/b.example.com", false},
		{"traversal with suffix", "../x-0001", false},
		{"hidden staging directory", ".shop.example.com.new-0011223344556677", false},
		{"empty", "", false},
		{"wildcard", "*.example.com", false},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			_, err := ParseLineageName(tc.in)
			if (err == nil) != tc.ok {
				t.Errorf("ParseLineageName(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

func TestSaveWritesCertbotLayoutAndKeepsOldVersions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := NewStore(dir)
	ca := newTestCA(t)
	now := time.Now()
	name := LineageName("shop.example.com")
	params := RenewalParams{Server: "https://ca.example/dir", Account: "abc", Webroot: "/var/www/letsencrypt", KeyType: EC256, Domains: []string{"shop.example.com"}}

	v1 := ca.issue(t, now, now.Add(90*24*time.Hour), "shop.example.com")
	l1, err := s.Save(name, v1, params)
	if err != nil {
		t.Fatal(err)
	}
	if l1.Version != 1 || !slices.Equal(l1.Domains, []string{"shop.example.com"}) || l1.KeyType != EC256 {
		t.Fatalf("after first save: version %d domains %v key %s", l1.Version, l1.Domains, l1.KeyType)
	}

	v2 := ca.issue(t, now, now.Add(90*24*time.Hour), "shop.example.com")
	l2, err := s.Save(name, v2, params)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Version != 2 || l2.Serial == l1.Serial {
		t.Fatalf("after renewal: version %d serial %s (was %s)", l2.Version, l2.Serial, l1.Serial)
	}

	// Live links are relative and point at version 2; version 1 stays.
	for _, kind := range kinds {
		link := filepath.Join(dir, "live", string(name), kind+".pem")
		target, err := os.Readlink(link)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("../../archive/%s/%s2.pem", name, kind)
		if target != want {
			t.Errorf("%s -> %s, want %s", link, target, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "archive", string(name), kind+"1.pem")); err != nil {
			t.Errorf("old version removed: %v", err)
		}
	}
	if want := filepath.Join(dir, "archive", string(name), "privkey2.pem"); l2.Archive.Privkey != want {
		t.Errorf("Archive.Privkey = %s, want %s", l2.Archive.Privkey, want)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "archive", string(name), "cert1.pem"))
	if !bytes.Equal(got, v1.Cert) {
		t.Error("cert1.pem changed after renewal")
	}
	full, _ := os.ReadFile(l2.Live.Fullchain)
	if !bytes.HasPrefix(full, bytes.TrimSpace(v2.Cert)) || !bytes.Contains(full, bytes.TrimSpace(ca.PEM)) {
		t.Error("fullchain.pem is not cert followed by chain")
	}

	// Permissions: keys 0600, directories not readable by others.
	for _, p := range []string{filepath.Join(dir, "archive", string(name), "privkey1.pem"), filepath.Join(dir, "archive", string(name), "privkey2.pem")} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v (%v), want 0600", p, st.Mode().Perm(), err)
		}
	}
	for _, d := range []string{"archive", "live", "renewal", "archive/" + string(name), "live/" + string(name)} {
		st, err := os.Stat(filepath.Join(dir, d))
		if err != nil || st.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s mode %v (%v): readable by others", d, st.Mode().Perm(), err)
		}
	}
	for _, readme := range []string{"live/README", "live/" + string(name) + "/README"} {
		if b, err := os.ReadFile(filepath.Join(dir, readme)); err != nil || !strings.Contains(string(b), "DO NOT MOVE OR RENAME") {
			t.Errorf("%s: %v", readme, err)
		}
	}
	conf, err := readRenewalConf(filepath.Join(dir, "renewal", string(name)+".conf"))
	if err != nil {
		t.Fatal(err)
	}
	if conf.top["fullchain"] != l2.Live.Fullchain || conf.params["server"] != "https://ca.example/dir" || conf.params["authenticator"] != "webroot" {
		t.Errorf("renewal conf: %v %v", conf.top, conf.params)
	}
	// No staging or temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Join(dir, "live"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: live/%s", e.Name())
		}
	}
}

func TestSaveRefusesMismatchedKeyAndBadNames(t *testing.T) {
	t.Parallel()
	s := NewStore(t.TempDir())
	ca := newTestCA(t)
	now := time.Now()
	a := ca.issue(t, now, now.Add(time.Hour), "a.example.com")
	b := ca.issue(t, now, now.Add(time.Hour), "a.example.com")
	a.Key = b.Key
	if _, err := s.Save("a.example.com", a, RenewalParams{}); err == nil {
		t.Error("Save accepted a key that does not match the certificate")
	}
	if _, err := s.Save("../../etc", b, RenewalParams{}); err == nil {
		t.Error("Save accepted a lineage name leaving the store")
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "live", "a.example.com")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused save left a live directory: %v", err)
	}
}

// writeCertbotLineage lays out a lineage as certbot 2.1.0 does, with conf as
// the renewal configuration (the fixture's absolute paths are kept: the store
// reads its own layout, not the paths in the file).
func writeCertbotLineage(t testing.TB, dir string, name string, conf []byte, versions ...Issued) {
	t.Helper()
	archive := filepath.Join(dir, "archive", name)
	live := filepath.Join(dir, "live", name)
	for _, d := range []string{archive, live, filepath.Join(dir, "renewal")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, v := range versions {
		n := i + 1
		files := map[string][]byte{"cert": v.Cert, "chain": v.Chain, "fullchain": append(append([]byte{}, v.Cert...), v.Chain...), "privkey": v.Key}
		for kind, b := range files {
			if err := os.WriteFile(filepath.Join(archive, fmt.Sprintf("%s%d.pem", kind, n)), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, kind := range kinds {
		target := fmt.Sprintf("../../archive/%s/%s%d.pem", name, kind, len(versions))
		if err := os.Symlink(target, filepath.Join(live, kind+".pem")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "renewal", name+".conf"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadReadsCertbotLineagesAsTheyAre(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t)
	now := time.Now()
	full, _ := os.ReadFile("testdata/full_renewal.conf")
	minimal, _ := os.ReadFile("testdata/minimal_renewal.conf")
	writeCertbotLineage(t, dir, "test.example.com", full,
		ca.issue(t, now, now.Add(time.Hour), "test.example.com"),
		ca.issue(t, now, now.Add(2*time.Hour), "test.example.com"))
	writeCertbotLineage(t, dir, "test.example.com-0001", minimal,
		ca.issue(t, now, now.Add(3*time.Hour), "test.example.com", "www.test.example.com"))

	s := NewStore(dir)
	all, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("List found %d lineages, want 2", len(all))
	}
	l := all[0]
	if l.Err != nil || l.Name != "test.example.com" || l.Version != 2 || l.Server != "https://acme-v02.api.letsencrypt.org/directory" {
		t.Errorf("certbot lineage read as %+v", l)
	}
	if all[1].Err != nil || all[1].Name != "test.example.com-0001" || len(all[1].Domains) != 2 {
		t.Errorf("suffixed lineage read as %+v", all[1])
	}
	// Find picks the lineage that names test.example.com and expires last:
	// the two-name -0001, which is also what nginx serves the name from.
	found, ok, err := s.Find("test.example.com")
	if err != nil || !ok || found.Name != "test.example.com-0001" {
		t.Errorf("Find = %v %v %v", found.Name, ok, err)
	}
	// The next save goes into the existing lineage as version 3.
	l3, err := s.Save("test.example.com", ca.issue(t, now, now.Add(time.Hour), "test.example.com"), RenewalParams{})
	if err != nil || l3.Version != 3 {
		t.Fatalf("renew certbot lineage: version %d, %v", l3.Version, err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "renewal", "test.example.com.conf"))
	if !bytes.Equal(after, full) {
		t.Error("the renewal configuration of a certbot lineage was rewritten")
	}
	// A name taken by a lineage for other names gets the next suffix.
	n, err := s.NameForNew("test.example.com")
	if err != nil || n != "test.example.com" {
		t.Errorf("NameForNew(existing single-name lineage) = %s, %v", n, err)
	}
	writeCertbotLineage(t, dir, "multi.example.com", minimal, ca.issue(t, now, now.Add(time.Hour), "multi.example.com", "www.multi.example.com"))
	if n, err := s.NameForNew("multi.example.com"); err != nil || n != "multi.example.com-0001" {
		t.Errorf("NameForNew(taken) = %s, %v; want multi.example.com-0001", n, err)
	}
}

func TestLoadFlagsBrokenLineages(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	now := time.Now()
	minimal, _ := os.ReadFile("testdata/minimal_renewal.conf")
	tests := []struct {
		desc   string
		break_ func(dir string)
	}{
		{"key of another certificate", func(dir string) {
			other := ca.issue(t, now, now.Add(time.Hour), "x.example.com")
			os.WriteFile(filepath.Join(dir, "archive", "x.example.com", "privkey1.pem"), other.Key, 0o600)
		}},
		{"link outside the archive", func(dir string) {
			link := filepath.Join(dir, "live", "x.example.com", "privkey.pem")
			os.Remove(link)
			os.Symlink("/etc/passwd", link)
		}},
		{"missing link", func(dir string) {
			os.Remove(filepath.Join(dir, "live", "x.example.com", "fullchain.pem"))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeCertbotLineage(t, dir, "x.example.com", minimal, ca.issue(t, now, now.Add(time.Hour), "x.example.com"))
			tc.break_(dir)
			l, err := NewStore(dir).Load("x.example.com")
			if err != nil {
				t.Fatal(err)
			}
			if l.Err == nil {
				t.Error("broken lineage loaded without error")
			}
		})
	}
}

// The crash tests run Save in a child process (this test binary again) that
// stops at a step of Save and is killed there with SIGKILL, then check what a
// reader of live/<name> finds.

const (
	crashDirEnv  = "CERTMGR_ACME_CRASH_DIR"
	crashStepEnv = "CERTMGR_ACME_CRASH_STEP"
)

// TestCrashHelper is the child: it saves a new version of crash.example.com and
// blocks forever at the step named in the environment. Without the
// environment it does nothing.
func TestCrashHelper(t *testing.T) {
	dir, step := os.Getenv(crashDirEnv), os.Getenv(crashStepEnv)
	if dir == "" {
		t.Skip("only run as the child of TestCrashDuringSaveKeepsPreviousVersionLive")
	}
	s := NewStore(dir)
	s.hook = func(at string) {
		if at == step {
			fmt.Printf("\nREACHED %s\n", at)
			os.Stdout.Sync()
			select {} // wait for SIGKILL
		}
	}
	ca := newTestCA(t)
	now := time.Now()
	if _, err := s.Save("crash.example.com", ca.issue(t, now, now.Add(48*time.Hour), "crash.example.com"), RenewalParams{}); err != nil {
		t.Fatal(err)
	}
}

func TestCrashDuringSaveKeepsPreviousVersionLive(t *testing.T) {
	t.Parallel()
	for _, step := range []string{"archive:cert", "archive:privkey", "archive:fullchain", "staged"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := NewStore(dir)
			ca := newTestCA(t)
			now := time.Now()
			v1, err := s.Save("crash.example.com", ca.issue(t, now, now.Add(24*time.Hour), "crash.example.com"), RenewalParams{})
			if err != nil {
				t.Fatal(err)
			}
			liveCert, _ := os.ReadFile(v1.Live.Cert)

			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashStepEnv+"="+step)
			cmd.Stderr = os.Stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			// The child announces the step on stdout; EOF means it ended without.
			reached := make(chan bool, 1)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if sc.Text() == "REACHED "+step {
						reached <- true
						return
					}
				}
				reached <- false
			}()
			select {
			case ok := <-reached:
				if !ok {
					t.Fatalf("child ended before step %s", step)
				}
			case <-time.After(2 * time.Minute):
				t.Fatalf("child never reached step %s", step)
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()

			l, err := s.Load("crash.example.com")
			if err != nil {
				t.Fatal(err)
			}
			if l.Err != nil || l.Version != 1 {
				t.Fatalf("after a crash at %s: version %d, err %v; want version 1 intact", step, l.Version, l.Err)
			}
			if got, _ := os.ReadFile(l.Live.Cert); !bytes.Equal(got, liveCert) {
				t.Fatal("live cert.pem changed")
			}
			// The next save recovers: a complete version, newer than any leftover.
			l2, err := s.Save("crash.example.com", ca.issue(t, now, now.Add(72*time.Hour), "crash.example.com"), RenewalParams{})
			if err != nil || l2.Err != nil || l2.Version < 2 {
				t.Fatalf("save after crash: version %d, %v %v", l2.Version, err, l2.Err)
			}
		})
	}
}

// Two stores on one directory stand for two processes saving the same lineage
// at once (which the pipeline's lock prevents, but a bug or an operator may
// not): every version on disk and the live one must still pair each
// certificate with its own key.
func TestConcurrentSavesNeverMixVersions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t)
	now := time.Now()
	const perWriter = 8
	errs := make(chan error, 2*perWriter)
	for range 2 {
		s := NewStore(dir)
		go func() {
			for range perWriter {
				_, err := s.Save("race.example.com", ca.issue(t, now, now.Add(time.Hour), "race.example.com"), RenewalParams{})
				errs <- err
			}
		}()
	}
	for range 2 * perWriter {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	l, err := NewStore(dir).Load("race.example.com")
	if err != nil || l.Err != nil {
		t.Fatalf("live lineage: %v %v", err, l.Err)
	}
	for v := 1; v <= 2*perWriter; v++ {
		cert, err1 := os.ReadFile(filepath.Join(dir, "archive", "race.example.com", fmt.Sprintf("cert%d.pem", v)))
		key, err2 := os.ReadFile(filepath.Join(dir, "archive", "race.example.com", fmt.Sprintf("privkey%d.pem", v)))
		if err1 != nil || err2 != nil {
			t.Fatalf("version %d missing: %v %v", v, err1, err2)
		}
		if err := checkIssued(Issued{Cert: cert, Key: key}); err != nil {
			t.Errorf("version %d: %v", v, err)
		}
	}
}

func TestLineageNamesAndRemove(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := NewStore(dir)
	ca := newTestCA(t)
	now := time.Now()
	minimal, _ := os.ReadFile("testdata/minimal_renewal.conf")
	writeCertbotLineage(t, dir, "a.example.com", minimal, ca.issue(t, now, now.Add(time.Hour), "a.example.com"))
	writeCertbotLineage(t, dir, "a.example.com-0001", minimal, ca.issue(t, now, now.Add(48*time.Hour), "a.example.com"))
	writeCertbotLineage(t, dir, "b.example.com", minimal, ca.issue(t, now, now.Add(time.Hour), "b.example.com", "www.b.example.com"))
	if _, err := s.Save("c.example.com", ca.issue(t, now, now.Add(time.Hour), "c.example.com"), RenewalParams{}); err != nil {
		t.Fatal(err)
	}
	idx, err := s.LineageNames()
	if err != nil {
		t.Fatal(err)
	}
	if idx["a.example.com"] != "a.example.com-0001" || idx["c.example.com"] != "c.example.com" {
		t.Errorf("LineageNames = %v", idx)
	}
	if err := s.Remove("c.example.com"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"live/c.example.com", "archive/c.example.com", "renewal/c.example.com.conf"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there after Remove: %v", p, err)
		}
	}
	if err := s.Remove("c.example.com"); err != nil {
		t.Errorf("removing again: %v", err)
	}
	if idx, err := s.LineageNames(); err != nil || idx["c.example.com"] != "" {
		t.Errorf("after Remove: LineageNames = %v, %v", idx, err)
	}
	if err := s.Remove("../renewal"); err == nil {
		t.Error("Remove accepted a name outside the store")
	}
	if _, err := os.Stat(filepath.Join(dir, "renewal", "a.example.com.conf")); err != nil {
		t.Errorf("Remove touched another lineage: %v", err)
	}
}

// A reader listing the store while versions are being made live always finds
// a complete, matching pair.
func TestLoadDuringSavesSeesWholeVersions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := NewStore(dir)
	ca := newTestCA(t)
	now := time.Now()
	versions := make([]Issued, 20)
	for i := range versions {
		versions[i] = ca.issue(t, now, now.Add(time.Hour), "busy.example.com")
	}
	if _, err := s.Save("busy.example.com", versions[0], RenewalParams{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, v := range versions[1:] {
			if _, err := s.Save("busy.example.com", v, RenewalParams{}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	reader := NewStore(dir)
	for reads := 0; ; reads++ {
		select {
		case <-done:
			if reads == 0 {
				t.Error("no read overlapped the saves")
			}
			return
		default:
		}
		l, err := reader.Load("busy.example.com")
		if err != nil || l.Err != nil {
			t.Fatalf("read %d during saves: %v %v", reads, err, l.Err)
		}
	}
}
