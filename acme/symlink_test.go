package acme

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// snapshot is every file under dir with its content, to prove nothing there
// changed.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	if len(before) != len(after) {
		t.Errorf("%s: %d files before, %d after: %v", what, len(before), len(after), after)
	}
	for p, b := range before {
		if after[p] != b {
			t.Errorf("%s: %s changed", what, p)
		}
	}
}

// A symlink planted in the shared certificate store (archive/<name> pointing
// at a directory outside it) or in the shared webroot (.well-known pointing
// outside) is refused: the save and the challenge fail, and nothing outside
// changes.
func TestSymlinksInSharedVolumesAreNotWrittenThrough(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "cert1.pem"), []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, outside)

	t.Run("archive/<name>", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "archive"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(dir, "archive", "shop.example.com")); err != nil {
			t.Fatal(err)
		}
		ca := newTestCA(t)
		now := time.Now()
		if _, err := NewStore(dir).Save("shop.example.com", ca.issue(t, now, now.Add(time.Hour), "shop.example.com"), RenewalParams{}); err == nil {
			t.Error("Save wrote through a symlinked archive directory")
		}
		sameSnapshot(t, "outside the store", before, snapshot(t, outside))
	})

	t.Run("archive itself", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Symlink(outside, filepath.Join(dir, "archive")); err != nil {
			t.Fatal(err)
		}
		ca := newTestCA(t)
		now := time.Now()
		if _, err := NewStore(dir).Save("shop.example.com", ca.issue(t, now, now.Add(time.Hour), "shop.example.com"), RenewalParams{}); err == nil {
			t.Error("Save wrote through a symlinked archive")
		}
		sameSnapshot(t, "outside the store", before, snapshot(t, outside))
	})

	t.Run("webroot .well-known", func(t *testing.T) {
		root := t.TempDir()
		if err := os.Symlink(outside, filepath.Join(root, ".well-known")); err != nil {
			t.Fatal(err)
		}
		w := webroot{root: root}
		if err := w.Present(context.Background(), "shop.example.com", "tok_en-1", "key-auth"); err == nil {
			t.Error("Present wrote through a symlinked .well-known")
		}
		sameSnapshot(t, "outside the webroot", before, snapshot(t, outside))
	})

	t.Run("webroot token file", func(t *testing.T) {
		root := t.TempDir()
		dir := filepath.Join(root, ".well-known", "acme-challenge")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// A link at the token's own name is replaced, not followed.
		if err := os.Symlink(filepath.Join(outside, "cert1.pem"), filepath.Join(dir, "tok_en-1")); err != nil {
			t.Fatal(err)
		}
		w := webroot{root: root}
		if err := w.Present(context.Background(), "shop.example.com", "tok_en-1", "key-auth"); err != nil {
			t.Fatalf("Present: %v", err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "tok_en-1")); err != nil || string(b) != "key-auth" {
			t.Errorf("token file = %q, %v", b, err)
		}
		if err := w.CleanUp(context.Background(), "shop.example.com", "tok_en-1", "key-auth"); err != nil {
			t.Fatal(err)
		}
		sameSnapshot(t, "outside the webroot", before, snapshot(t, outside))
	})
}
