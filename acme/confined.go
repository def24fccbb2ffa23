package acme

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The store and the webroot are volumes that other pods of the namespace
// mount too. A symlink planted in them (archive/<name> pointing at another
// directory, .well-known in the webroot pointing out of it) must not make
// certmgr write outside: every file acme writes goes through an os.Root,
// which follows a symlink only while it stays inside the root and refuses
// one that leads out. The functions below are the one way a file is written.

// openConfined opens dir/rel as a root confined to dir.
func openConfined(dir, rel string) (*os.Root, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if rel == "" || rel == "." {
		return root.OpenRoot(".")
	}
	sub, err := root.OpenRoot(rel)
	if err != nil {
		return nil, fmt.Errorf("open %s inside %s: %w", rel, dir, err)
	}
	return sub, nil
}

// createFile creates name in r with data; name must not exist (O_EXCL: never
// written through a link). The file is fsynced when sync is set, and removed
// again when it cannot be written whole.
func createFile(r *os.Root, name string, data []byte, mode os.FileMode, sync bool) error {
	f, err := r.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = r.Remove(name)
		return err
	}
	return nil
}

// writeTemp writes data to a fresh hidden file beside name and returns its
// name.
func writeTemp(r *os.Root, name string, data []byte, mode os.FileMode, sync bool) (string, error) {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(name), "."+filepath.Base(name)+".tmp-"+hex.EncodeToString(rnd[:]))
	if err := createFile(r, tmp, data, mode, sync); err != nil {
		return "", err
	}
	return tmp, nil
}

// writeAtomic replaces name in r: data goes to a fresh hidden file beside it
// (fsynced when sync), which is renamed over name, so a reader sees the old
// content or the whole new one. A link at name is replaced, not followed.
func writeAtomic(r *os.Root, name string, data []byte, mode os.FileMode, sync bool) error {
	tmp, err := writeTemp(r, name, data, mode, sync)
	if err != nil {
		return err
	}
	if err := r.Rename(tmp, name); err != nil {
		_ = r.Remove(tmp)
		return err
	}
	return nil
}

// writeIfDifferent is writeAtomic unless name already holds data; changed
// says whether it wrote.
func writeIfDifferent(r *os.Root, name string, data []byte, mode os.FileMode, sync bool) (changed bool, err error) {
	if old, err := r.ReadFile(name); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := writeAtomic(r, name, data, mode, sync); err != nil {
		return false, err
	}
	return true, nil
}

// writeExclusive writes data to a fresh file, fsyncs it and links it to
// name, which must not exist yet: unlike a rename, a link never replaces a
// file another process put there first. created is false (and err nil) when
// name already existed.
func writeExclusive(r *os.Root, name string, data []byte, mode os.FileMode) (created bool, err error) {
	tmp, err := writeTemp(r, name, data, mode, true)
	if err != nil {
		return false, err
	}
	defer r.Remove(tmp)
	if err := r.Link(tmp, name); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// writeFileAtomic is writeAtomic, fsynced, of the file at path, in a root of
// its directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	r, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer r.Close()
	return writeAtomic(r, filepath.Base(path), data, mode, true)
}

// writeFileExclusive is writeExclusive of the file at path, in a root of its
// directory.
func writeFileExclusive(path string, data []byte, mode os.FileMode) (created bool, err error) {
	r, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return false, err
	}
	defer r.Close()
	return writeExclusive(r, filepath.Base(path), data, mode)
}

// realDirs refuses top-level store directories that are symlinks.
func realDirs(paths ...string) error {
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory (a symlink?); refusing to write through it", p)
		}
	}
	return nil
}
