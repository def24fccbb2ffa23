package acme

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The one writer of the certbot layout (see store.go for the layout and how
// a version is made live). Store.Save adds the version it has just been
// issued, numbering it itself; WriteLineageFiles writes a lineage whose
// versions are already numbered: package certstore's export and the fleet's
// pod-local copies of the PostgreSQL store. Both write the archive files
// through the same confined writers and make a version live by the same
// exchange of live/<name>.

// ArchiveVersion is one version of a lineage as archive/<name>/ holds it,
// PEM encoded.
type ArchiveVersion struct {
	N         int
	Cert      []byte
	Chain     []byte
	Fullchain []byte
	Privkey   []byte
}

func (v ArchiveVersion) file(kind string) []byte {
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

// LineageFiles is a lineage as the files of a certbot-layout directory hold
// it.
type LineageFiles struct {
	Name LineageName
	// Versions in ascending order.
	Versions []ArchiveVersion
	// Live is the version live/<name> links to.
	Live int
	// RenewalConf is renewal/<name>.conf; empty leaves the one there alone.
	RenewalConf []byte
}

// archiveName is the file of kind in version n: cert3.pem.
func archiveName(kind string, n int) string { return kind + strconv.Itoa(n) + ".pem" }

// archiveMode is the mode of an archive file of kind: the key is private.
func archiveMode(kind string) os.FileMode {
	if kind == "privkey" {
		return 0o600
	}
	return 0o644
}

// liveTarget is where live/<name>/<kind>.pem links for version n: relative,
// as certbot writes them, so the directory can be mounted anywhere.
func liveTarget(name LineageName, kind string, n int) string {
	return filepath.Join("..", "..", "archive", string(name), archiveName(kind, n))
}

// layoutWrite is how a writer treats a certbot-layout directory: the store
// (shared, durable, certbot's own look) or a copy (see WriteLineageFiles).
type layoutWrite struct {
	sync    bool        // fsync files and directories before they are named
	dirMode os.FileMode // of the directories it creates
	readme  bool        // live/<name>/README, as certbot writes it
	step    func(step string)
}

// copyWrite is how WriteLineageFiles writes.
func copyWrite(sync bool) layoutWrite {
	return layoutWrite{sync: sync, dirMode: 0o755, step: func(string) {}}
}

// WriteLineageFiles writes l into the certbot-layout directory dir: the
// archive files of every version in l.Versions, the renewal configuration,
// and live/<name> linking to version l.Live, exchanged in one rename so that
// a reader (nginx reloading) finds the old version or the new one, never a
// mixture. An archive file already there with other content is replaced (the
// copy follows its source). changed says whether anything a reader sees
// changed.
//
// With sync, every file is fsynced before it is renamed into place (an
// export that must survive a crash). Without, the page cache is trusted: for
// a directory rebuilt from the store at every start (an agent's emptyDir, a
// worker's mirror), where 10,000 lineages would otherwise cost 50,000 fsyncs.
func WriteLineageFiles(dir string, l LineageFiles, sync bool) (changed bool, err error) {
	if _, err := ParseLineageName(string(l.Name)); err != nil {
		return false, fmt.Errorf("write lineage: %w", err)
	}
	if !slices.ContainsFunc(l.Versions, func(v ArchiveVersion) bool { return v.N == l.Live }) {
		return false, fmt.Errorf("write lineage %s: version %d not given", l.Name, l.Live)
	}
	w := copyWrite(sync)
	changed, err = w.writeCopy(dir, l)
	if err != nil {
		return false, fmt.Errorf("write lineage %s: %w", l.Name, err)
	}
	return changed, nil
}

func (w layoutWrite) writeCopy(dir string, l LineageFiles) (changed bool, err error) {
	// A new lineage (the cold start of an agent: thousands) skips the
	// comparisons: nothing of it exists yet.
	archiveDir := filepath.Join(dir, "archive", string(l.Name))
	fresh := false
	if err := os.Mkdir(archiveDir, w.dirMode); err == nil {
		fresh = true
	} else if !errors.Is(err, fs.ErrExist) {
		for _, d := range []string{dir, filepath.Join(dir, "archive"), filepath.Join(dir, "live"), filepath.Join(dir, "renewal")} {
			if err := os.MkdirAll(d, w.dirMode); err != nil {
				return false, err
			}
		}
		if err := os.Mkdir(archiveDir, w.dirMode); err != nil {
			return false, err
		}
		fresh = true
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return false, err
	}
	defer root.Close()
	archive, err := root.OpenRoot(filepath.Join("archive", string(l.Name)))
	if err != nil {
		return false, err
	}
	defer archive.Close()
	for _, v := range l.Versions {
		for _, kind := range kinds {
			name := archiveName(kind, v.N)
			if fresh {
				// Archive files of a version are read only through live/,
				// which links to them only after they are complete.
				if err := createFile(archive, name, v.file(kind), archiveMode(kind), w.sync); err != nil {
					return false, err
				}
				changed = true
				continue
			}
			c, err := writeIfDifferent(archive, name, v.file(kind), archiveMode(kind), w.sync)
			if err != nil {
				return false, err
			}
			changed = changed || c
		}
	}
	if w.sync && changed {
		if err := syncDir(archiveDir); err != nil {
			return false, err
		}
	}
	if len(l.RenewalConf) > 0 {
		c, err := writeIfDifferent(root, filepath.Join("renewal", string(l.Name)+".conf"), l.RenewalConf, 0o644, w.sync)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	if !changed && linksTo(filepath.Join(dir, "live", string(l.Name)), l.Name, l.Live) {
		return false, nil
	}
	if err := w.makeLive(dir, l.Name, l.Live); err != nil {
		return false, err
	}
	return true, nil
}

// linksTo reports whether every link of live points at version n.
func linksTo(live string, name LineageName, n int) bool {
	for _, kind := range kinds {
		if got, err := os.Readlink(filepath.Join(live, kind+".pem")); err != nil || got != liveTarget(name, kind, n) {
			return false
		}
	}
	return true
}

// makeLive points live/<name> at version n in one exchange (see store.go).
func (w layoutWrite) makeLive(dir string, name LineageName, n int) error {
	live := filepath.Join(dir, "live", string(name))
	staged, err := w.stageLive(dir, name, n)
	if err != nil {
		return err
	}
	w.step("staged")
	if err := swapDir(staged, live); err != nil {
		_ = os.RemoveAll(staged)
		return fmt.Errorf("make version %d live: %w", n, err)
	}
	w.step("swapped")
	// staged now holds the previous live directory, if there was one.
	_ = os.RemoveAll(staged)
	if w.sync {
		return syncDir(filepath.Join(dir, "live"))
	}
	return nil
}

// stageLive builds live/.<name>.new-XXXX with the four symlinks to version n
// (and the README).
func (w layoutWrite) stageLive(dir string, name LineageName, n int) (string, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	staged := filepath.Join(dir, "live", stagingPrefix(name)+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(staged, w.dirMode); err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		_ = os.RemoveAll(staged)
		return "", err
	}
	for _, kind := range kinds {
		if err := os.Symlink(liveTarget(name, kind, n), filepath.Join(staged, kind+".pem")); err != nil {
			return fail(err)
		}
	}
	if w.readme {
		if err := writeFileAtomic(filepath.Join(staged, "README"), []byte(liveReadme("")), 0o644); err != nil {
			return fail(err)
		}
	}
	if w.sync {
		if err := syncDir(staged); err != nil {
			return fail(err)
		}
	}
	return staged, nil
}

// stagingPrefix starts the name of a staging directory of live/<name>.
func stagingPrefix(name LineageName) string { return "." + string(name) + ".new-" }

// swapDir makes staged live at path in one step: an exchange when path exists
// (staged then holds the old directory), a rename when it does not.
func swapDir(staged, path string) error {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		// Another process may make its version live between the Lstat and
		// the rename: then path is a non-empty directory, which rename(2)
		// refuses, and the exchange below is the right move after all.
		err := os.Rename(staged, path)
		if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	err := unix.Renameat2(unix.AT_FDCWD, staged, unix.AT_FDCWD, path, unix.RENAME_EXCHANGE)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("exchange %s and %s: %w", staged, path, err)
	}
	// No RENAME_EXCHANGE here: move the old directory aside, then the new one
	// in. A reader may find no directory for an instant, never a mixed one.
	old := staged + ".old"
	if err := os.Rename(path, old); err != nil {
		return err
	}
	if err := os.Rename(staged, path); err != nil {
		_ = os.Rename(old, path)
		return err
	}
	return os.Rename(old, staged)
}

// ReadLineageFiles reads lineage name from the certbot-layout directory dir
// (certbot's own or one WriteLineageFiles wrote): every complete version in
// archive/<name>/, the live one (where live/<name>/cert.pem points, else the
// newest), the renewal configuration. Only regular files inside the
// lineage's own archive are read.
func ReadLineageFiles(dir string, name LineageName) (LineageFiles, error) {
	if _, err := ParseLineageName(string(name)); err != nil {
		return LineageFiles{}, fmt.Errorf("read lineage: %w", err)
	}
	l := LineageFiles{Name: name}
	conf, err := os.ReadFile(filepath.Join(dir, "renewal", string(name)+".conf"))
	if err != nil {
		return l, fmt.Errorf("read lineage %s: %w", name, err)
	}
	l.RenewalConf = conf
	archiveDir := filepath.Join(dir, "archive", string(name))
	entries, err := os.ReadDir(archiveDir)
	if err != nil {
		return l, fmt.Errorf("read lineage %s: %w", name, err)
	}
	// Kinds present per version, by the exact name each is read under: a
	// stray cert01.pem parses as version 1 too and must not stand in for a
	// missing fullchain1.pem.
	files := map[int]map[string]bool{}
	for _, e := range entries {
		if m := archiveFileRE.FindStringSubmatch(e.Name()); m != nil && e.Type().IsRegular() {
			n, _ := strconv.Atoi(m[2])
			if e.Name() != archiveName(m[1], n) {
				continue
			}
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
		return l, fmt.Errorf("read lineage %s: no complete version in %s", name, archiveDir)
	}
	for _, n := range ns {
		v := ArchiveVersion{N: n}
		for _, kind := range kinds {
			b, err := os.ReadFile(filepath.Join(archiveDir, archiveName(kind, n)))
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
		l.Versions = append(l.Versions, v)
	}
	l.Live = ns[len(ns)-1]
	if n := LiveVersion(dir, name); slices.Contains(ns, n) {
		l.Live = n
	}
	return l, nil
}

// LiveVersion is the version live/<name>/cert.pem in dir links to: 0 when
// there is no such link, it leads outside the lineage's archive or name is
// not a lineage name.
func LiveVersion(dir string, name LineageName) int {
	if _, err := ParseLineageName(string(name)); err != nil {
		return 0
	}
	live := filepath.Join(dir, "live", string(name))
	target, err := os.Readlink(filepath.Join(live, "cert.pem"))
	if err != nil {
		return 0
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(live, target)
	}
	m := archiveFileRE.FindStringSubmatch(filepath.Base(target))
	if m == nil || m[1] != "cert" || filepath.Dir(filepath.Clean(target)) != filepath.Join(dir, "archive", string(name)) {
		return 0
	}
	n, _ := strconv.Atoi(m[2])
	return n
}

// LineageNames lists the lineages of dir that have a renewal configuration
// and a valid name.
func LineageNames(dir string) ([]LineageName, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "renewal"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list lineages in %s: %w", dir, err)
	}
	var out []LineageName
	for _, e := range entries {
		if base, ok := strings.CutSuffix(e.Name(), ".conf"); ok && !e.IsDir() {
			if n, err := ParseLineageName(base); err == nil {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// RemoveLineage deletes lineage n from dir: its renewal configuration
// first (without it the lineage is no longer listed, even if removing the
// rest is interrupted), then its live links and archive versions, as
// `certbot delete` does. The name is validated again, so no path outside dir
// is touched. Removing a lineage that is not there is not an error.
func RemoveLineage(dir string, n LineageName) error {
	if _, err := ParseLineageName(string(n)); err != nil {
		return fmt.Errorf("remove lineage: %w", err)
	}
	var errs []error
	if err := os.Remove(filepath.Join(dir, "renewal", string(n)+".conf")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, d := range []string{filepath.Join(dir, "live", string(n)), filepath.Join(dir, "archive", string(n))} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove lineage %s: %w", n, err)
	}
	return nil
}

// AccountFile is one file of certbot's accounts/ tree.
type AccountFile struct {
	Path    string // relative to accounts/, slash-separated
	Content []byte
	Mode    uint32
}

// WriteAccountFiles writes files under dir/accounts, each replaced
// atomically unless it already holds its content, and fsynced.
func WriteAccountFiles(dir string, files []AccountFile) error {
	if len(files) == 0 {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(dir, "accounts"), 0o700); err != nil {
		return fmt.Errorf("write account file: %w", err)
	}
	root, err := openConfined(dir, "accounts")
	if err != nil {
		return fmt.Errorf("write account file: %w", err)
	}
	defer root.Close()
	for _, f := range files {
		p := filepath.Join(".", filepath.FromSlash(f.Path))
		if p == "." || strings.Contains(f.Path, "..") {
			return fmt.Errorf("write account file %q: outside accounts/", f.Path)
		}
		if err := root.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("write account file: %w", err)
		}
		if _, err := writeIfDifferent(root, p, f.Content, os.FileMode(f.Mode)&0o777, true); err != nil {
			return fmt.Errorf("write account file: %w", err)
		}
	}
	return nil
}

// ReadAccountFiles reads every regular file under dir/accounts but hidden
// ones (a writer's temporary files).
func ReadAccountFiles(dir string) ([]AccountFile, error) {
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
