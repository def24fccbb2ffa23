package nginxconf

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// conf.d is shared with other pods: links planted at certmgr's own file names
// there (the candidate, the reload marker, pointing at a file outside and at
// a path that does not exist yet) are replaced or refused, never written
// through. The regeneration still works and nothing outside changes.
func TestConfDSymlinksAreNotWrittenThrough(t *testing.T) {
	t.Parallel()
	f := setup(t, CertModeVariable)
	a := f.gen.Applier()
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim.conf")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, a.CandidatePath()); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "created-by-certmgr"), a.side("reload-pending")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.gen.Regenerate(context.Background(), nil); err != nil {
		t.Fatalf("Regenerate with planted links: %v", err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "precious\n" {
		t.Errorf("the candidate link's target changed: %q %v", b, err)
	}
	entries, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("files outside conf.d: %v; want only the victim", entries)
	}
	if fi, err := os.Lstat(f.cfg.ConfPath); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("live file %s: %v %v", f.cfg.ConfPath, fi, err)
	}
}
