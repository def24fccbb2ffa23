package certstore

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/go-acme/lego/v5/certcrypto"
	"golang.org/x/sys/unix"

	"github.com/midsummer/certmgr/acme"
)

// The certbot layout, as package acme documents it:
//
//	archive/<name>/{cert,chain,fullchain,privkey}N.pem
//	live/<name>/{cert,chain,fullchain,privkey}.pem -> ../../archive/<name>/*N.pem
//	renewal/<name>.conf
//	accounts/...

var kinds = []string{"cert", "privkey", "chain", "fullchain"}

var archiveFileRE = regexp.MustCompile(`^(cert|privkey|chain|fullchain)([0-9]+)\.pem$`)

func (v Version) file(kind string) []byte {
	switch kind {
	case "cert":
		return v.Cert
	case "chain":
		return v.Chain
	case "fullchain":
		return v.Fullchain
	}
	return v.Privkey
}

// WriteLineage writes l into the certbot-layout directory dir: the archive
// files of every version in l.Versions, the renewal configuration, and
// live/<name> linking to version l.Current, exchanged in one rename so that a
// reader (nginx reloading) finds the old version or the new one, never a
// mixture. changed says whether anything a reader sees changed.
//
// With sync, every file is fsynced before it is renamed into place (an
// export that must survive a crash). Without, the page cache is trusted: for
// a directory rebuilt from the store at every start (an agent's emptyDir, a
// worker's mirror), where 10,000 lineages would otherwise cost 50,000 fsyncs.
func WriteLineage(dir string, l Lineage, sync bool) (changed bool, err error) {
	if _, err := acme.ParseLineageName(l.Name); err != nil {
		return false, fmt.Errorf("write lineage: %w", err)
	}
	if _, ok := l.CurrentVersion(); !ok {
		return false, fmt.Errorf("write lineage %s: version %d not given", l.Name, l.Current)
	}
	archive := filepath.Join(dir, "archive", l.Name)
	// A new lineage (the cold start of an agent: thousands) skips the
	// comparisons: nothing of it exists yet.
	fresh := false
	if err := os.Mkdir(archive, 0o755); err == nil {
		fresh = true
	} else if !errors.Is(err, fs.ErrExist) {
		for _, d := range []string{dir, filepath.Join(dir, "archive"), filepath.Join(dir, "live"), filepath.Join(dir, "renewal")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return false, fmt.Errorf("write lineage %s: %w", l.Name, err)
			}
		}
		if err := os.Mkdir(archive, 0o755); err != nil {
			return false, fmt.Errorf("write lineage %s: %w", l.Name, err)
		}
		fresh = true
	}
	for _, v := range l.Versions {
		for _, kind := range kinds {
			mode := os.FileMode(0o644)
			if kind == "privkey" {
				mode = 0o600
			}
			path := filepath.Join(archive, kind+strconv.Itoa(v.N)+".pem")
			if fresh {
				// Archive files of a version are read only through live/,
				// which links to them only after they are complete.
				if err := writeNew(path, v.file(kind), mode, sync); err != nil {
					return false, fmt.Errorf("write lineage %s: %w", l.Name, err)
				}
				changed = true
				continue
			}
			c, err := writeIfDifferent(path, v.file(kind), mode, sync)
			if err != nil {
				return false, fmt.Errorf("write lineage %s: %w", l.Name, err)
			}
			changed = changed || c
		}
	}
	if l.RenewalConf != "" {
		c, err := writeIfDifferent(filepath.Join(dir, "renewal", l.Name+".conf"), []byte(l.RenewalConf), 0o644, sync)
		if err != nil {
			return false, fmt.Errorf("write lineage %s: %w", l.Name, err)
		}
		changed = changed || c
	}
	live := filepath.Join(dir, "live", l.Name)
	if !changed && linksTo(live, l.Name, l.Current) {
		return false, nil
	}
	staged := filepath.Join(dir, "live", "."+l.Name+".new-"+randHex())
	if err := os.Mkdir(staged, 0o755); err != nil {
		return false, fmt.Errorf("write lineage %s: %w", l.Name, err)
	}
	for _, kind := range kinds {
		if err := os.Symlink(liveTarget(l.Name, kind, l.Current), filepath.Join(staged, kind+".pem")); err != nil {
			_ = os.RemoveAll(staged)
			return false, fmt.Errorf("write lineage %s: %w", l.Name, err)
		}
	}
	if _, err := os.Lstat(live); errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(staged, live); err != nil {
			_ = os.RemoveAll(staged)
			return false, fmt.Errorf("write lineage %s: %w", l.Name, err)
		}
		return true, nil
	}
	defer os.RemoveAll(staged) // after the exchange: the previous live directory
	if err := unix.Renameat2(unix.AT_FDCWD, staged, unix.AT_FDCWD, live, unix.RENAME_EXCHANGE); err != nil {
		// No exchange on this file system: aside, then in.
		old := staged + ".old"
		if err := os.Rename(live, old); err != nil {
			return false, fmt.Errorf("write lineage %s: %w", l.Name, err)
		}
		defer os.RemoveAll(old)
		if err := os.Rename(staged, live); err != nil {
			_ = os.Rename(old, live)
			return false, fmt.Errorf("write lineage %s: %w", l.Name, err)
		}
	}
	return true, nil
}

// linksTo reports whether every link of live points at version n.
func linksTo(live, name string, n int) bool {
	for _, kind := range kinds {
		if got, err := os.Readlink(filepath.Join(live, kind+".pem")); err != nil || got != liveTarget(name, kind, n) {
			return false
		}
	}
	return true
}

// writeNew creates path with data; it must not exist.
func writeNew(path string, data []byte, mode os.FileMode, sync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
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
	return err
}

func liveTarget(name, kind string, n int) string {
	return filepath.Join("..", "..", "archive", name, kind+strconv.Itoa(n)+".pem")
}

// RemoveLineage deletes lineage name from dir (renewal configuration first,
// so a half-removed lineage is no longer listed).
func RemoveLineage(dir, name string) error {
	if _, err := acme.ParseLineageName(name); err != nil {
		return fmt.Errorf("remove lineage: %w", err)
	}
	var errs []error
	if err := os.Remove(filepath.Join(dir, "renewal", name+".conf")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, d := range []string{filepath.Join(dir, "live", name), filepath.Join(dir, "archive", name)} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove lineage %s: %w", name, err)
	}
	return nil
}

// LocalLineages lists the lineage names that have a renewal configuration in
// dir.
func LocalLineages(dir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "renewal"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list lineages in %s: %w", dir, err)
	}
	var out []string
	for _, e := range entries {
		if base, ok := strings.CutSuffix(e.Name(), ".conf"); ok && !e.IsDir() {
			if _, err := acme.ParseLineageName(base); err == nil {
				out = append(out, base)
			}
		}
	}
	return out, nil
}

// WriteAccounts writes account files under dir/accounts.
func WriteAccounts(dir string, files []AccountFile) error {
	root := filepath.Join(dir, "accounts")
	for _, f := range files {
		p := filepath.Join(root, filepath.FromSlash(f.Path))
		if !strings.HasPrefix(p, root+string(filepath.Separator)) || strings.Contains(f.Path, "..") {
			return fmt.Errorf("write account file %q: outside accounts/", f.Path)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("write account file: %w", err)
		}
		if _, err := writeIfDifferent(p, f.Content, os.FileMode(f.Mode)&0o777, true); err != nil {
			return fmt.Errorf("write account file: %w", err)
		}
	}
	return nil
}

// ReadAccounts reads every regular file under dir/accounts.
func ReadAccounts(dir string) ([]AccountFile, error) {
	root := filepath.Join(dir, "accounts")
	var out []AccountFile
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == root {
			return filepath.SkipDir
		}
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, AccountFile{Path: filepath.ToSlash(rel), Content: b, Mode: uint32(info.Mode().Perm())})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read accounts: %w", err)
	}
	return out, nil
}

// ReadLineage reads lineage name from a certbot-layout directory: every
// complete version in archive/<name>/, the live one (where live/<name>/cert.pem
// points), the renewal configuration. Only files inside the lineage's own
// archive are read.
func ReadLineage(dir, name string) (Lineage, error) {
	if _, err := acme.ParseLineageName(name); err != nil {
		return Lineage{}, fmt.Errorf("read lineage: %w", err)
	}
	l := Lineage{Name: name}
	conf, err := os.ReadFile(filepath.Join(dir, "renewal", name+".conf"))
	if err != nil {
		return l, fmt.Errorf("read lineage %s: %w", name, err)
	}
	l.RenewalConf = string(conf)
	archive := filepath.Join(dir, "archive", name)
	entries, err := os.ReadDir(archive)
	if err != nil {
		return l, fmt.Errorf("read lineage %s: %w", name, err)
	}
	files := map[int]map[string]bool{}
	for _, e := range entries {
		if m := archiveFileRE.FindStringSubmatch(e.Name()); m != nil && e.Type().IsRegular() {
			n, _ := strconv.Atoi(m[2])
			if files[n] == nil {
				files[n] = map[string]bool{}
			}
			files[n][m[1]] = true
		}
	}
	var ns []int
	for n, k := range files {
		if len(k) == len(kinds) {
			ns = append(ns, n)
		}
	}
	slices.Sort(ns)
	if len(ns) == 0 {
		return l, fmt.Errorf("read lineage %s: no complete version in %s", name, archive)
	}
	leaves := make(map[int]*x509.Certificate, len(ns))
	for _, n := range ns {
		v := Version{N: n}
		for _, kind := range kinds {
			b, err := os.ReadFile(filepath.Join(archive, kind+strconv.Itoa(n)+".pem"))
			if err != nil {
				return l, fmt.Errorf("read lineage %s: %w", name, err)
			}
			switch kind {
			case "cert":
				v.Cert = b
			case "chain":
				v.Chain = b
			case "fullchain":
				v.Fullchain = b
			case "privkey":
				v.Privkey = b
			}
		}
		leaf, err := parseLeaf(v.Cert)
		if err != nil {
			return l, fmt.Errorf("read lineage %s version %d: %w", name, n, err)
		}
		leaves[n] = leaf
		v.Serial = hex.EncodeToString(leaf.SerialNumber.Bytes())
		v.NotBefore, v.NotAfter = leaf.NotBefore, leaf.NotAfter
		l.Versions = append(l.Versions, v)
	}
	l.Current = ns[len(ns)-1]
	if target, err := os.Readlink(filepath.Join(dir, "live", name, "cert.pem")); err == nil {
		if !filepath.IsAbs(target) {
			target = filepath.Join(dir, "live", name, target)
		}
		if m := archiveFileRE.FindStringSubmatch(filepath.Base(target)); m != nil && filepath.Clean(filepath.Dir(target)) == filepath.Clean(archive) {
			if n, _ := strconv.Atoi(m[2]); slices.Contains(ns, n) {
				l.Current = n
			}
		}
	}
	// The names as acme lists them: the common name first.
	l.Domains = certcrypto.ExtractDomains(leaves[l.Current])
	return l, nil
}

func parseLeaf(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// writeIfDifferent replaces path atomically unless it already holds data
// (fsynced first when sync); changed says whether it wrote.
func writeIfDifferent(path string, data []byte, mode os.FileMode, sync bool) (changed bool, err error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+randHex())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return false, err
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return false, err
	}
	return true, nil
}

func randHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
