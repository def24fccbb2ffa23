package acme

import (
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
// certmgr write outside: writes there go through an os.Root, which follows a
// symlink only while it stays inside the root and refuses one that leads out.

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

// rootWriteAtomic writes data to a fresh hidden file in r (created
// exclusively, so never through a link) and renames it over name.
func rootWriteAtomic(r *os.Root, name string, data []byte, mode os.FileMode) error {
	tmp, err := rootWriteTemp(r, name, data, mode)
	if err != nil {
		return err
	}
	if err := r.Rename(tmp, name); err != nil {
		_ = r.Remove(tmp)
		return err
	}
	return nil
}

// rootWriteExclusive is writeExclusive inside r: name is linked to a fresh
// file and never replaced. created is false when name already existed.
func rootWriteExclusive(r *os.Root, name string, data []byte, mode os.FileMode) (created bool, err error) {
	tmp, err := rootWriteTemp(r, name, data, mode)
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

func rootWriteTemp(r *os.Root, name string, data []byte, mode os.FileMode) (string, error) {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(name), "."+filepath.Base(name)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = r.Remove(tmp)
		return "", err
	}
	return tmp, nil
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
