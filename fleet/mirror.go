package fleet

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v5/certcrypto"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/certstore"
)

// Store is what the worker side of fleet mode needs of the certificate store
// (*certstore.Store).
type Store interface {
	Snapshot(ctx context.Context) (certstore.Snapshot, error)
	Lineages(ctx context.Context, f certstore.LineageFilter) ([]certstore.Lineage, error)
	AddIssued(ctx context.Context, l certstore.Lineage) ([]int, int64, error)
	DeleteLineage(ctx context.Context, name string) error
	SetServed(ctx context.Context, served []certstore.Served) (bool, int64, error)
	StoreVersion(ctx context.Context) (int64, error)
	Agents(ctx context.Context, alive time.Duration) ([]certstore.Agent, error)
	PutChallenge(ctx context.Context, domain, token, keyAuth string) error
	DeleteChallenge(ctx context.Context, token string) error
	AccountFiles(ctx context.Context) ([]acme.AccountFile, error)
	PutAccountFiles(ctx context.Context, files []acme.AccountFile, replace bool) error
}

var _ Store = (*certstore.Store)(nil)

// Mirror is a worker-local certbot-layout copy of the store, in Dir
// (LETSENCRYPT_DIR of a fleet worker: scratch space, an emptyDir).
//
// A lineage of the mirror is either a copy of the store's, which Pull
// replaces whenever the store's current certificate differs from the
// mirror's live one (compared by serial, not by version number) and removes
// when the store no longer holds it; or it holds certificates this worker
// saved and has not pushed yet. Those are recorded, by serial, in
// certmgr-unpushed/<lineage> before acme writes the first file of them (the
// Mirror is acme's SaveJournal) and cleared once the store holds them, so a
// worker that dies between the save and the push pushes them at its next
// Pull instead of losing them, and a lineage purged elsewhere is never
// mistaken for a new issuance.
type Mirror struct {
	store Store
	dir   string

	mu     sync.Mutex           // one Pull, Push or journal entry at a time
	saving map[string]int       // lineages a Save in this process is writing
	known  map[string]liveStamp // the serial of each live certificate read
}

// liveStamp is the serial of a lineage's live certificate and the file it
// was read from.
type liveStamp struct {
	file   os.FileInfo
	serial string
}

var _ acme.SaveJournal = (*Mirror)(nil)

// unpushedDir holds one file per lineage with unpushed certificates: their
// serials, one a line.
const unpushedDir = "certmgr-unpushed"

// NewMirror returns the mirror of store in dir.
func NewMirror(store Store, dir string) *Mirror {
	return &Mirror{store: store, dir: dir, saving: map[string]int{}, known: map[string]liveStamp{}}
}

// Dir is the mirror's directory.
func (m *Mirror) Dir() string { return m.dir }

// Saving records cert as unpushed in lineage n, durably, before acme writes
// it (acme.SaveJournal). Until done, Pull leaves n alone.
func (m *Mirror) Saving(n acme.LineageName, cert []byte) (done func(), err error) {
	leaf, err := certcrypto.ParsePEMCertificate(cert)
	if err != nil {
		return nil, fmt.Errorf("record unpushed certificate: %w", err)
	}
	name := string(n)
	m.mu.Lock()
	defer m.mu.Unlock()
	serials, err := m.unpushed(name)
	if err != nil {
		return nil, err
	}
	if s := serialOf(leaf); !slices.Contains(serials, s) {
		if err := m.setUnpushed(name, append(serials, s)); err != nil {
			return nil, err
		}
	}
	m.saving[name]++
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.saving[name]--; m.saving[name] <= 0 {
			delete(m.saving, name)
		}
	}, nil
}

// Forget drops what the mirror recorded of lineage name as unpushed: it was
// removed from the store on purpose (Certificates.Remove).
func (m *Mirror) Forget(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.known, name)
	return m.setUnpushed(name, nil)
}

// Pull first pushes every lineage with unpushed certificates, then makes
// the mirror's other lineages copies of the store's: a lineage the store
// lacks is removed, one whose live certificate is not the store's current
// one is written again from the store. Account files the mirror lacks are
// written. A push that fails leaves its lineage as it is and is reported
// after the rest is done.
func (m *Mirror) Pull(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	pending, err := m.unpushedNames()
	if err != nil {
		return fmt.Errorf("pull certificate store: %w", err)
	}
	for _, n := range pending {
		if err := m.push(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	snap, err := m.store.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("pull certificate store: %w", err)
	}
	pinned := func(name string) (bool, error) {
		serials, err := m.unpushed(name)
		return len(serials) > 0 || m.saving[name] > 0, err
	}
	local, err := acme.LineageNames(m.dir)
	if err != nil {
		return fmt.Errorf("pull certificate store: %w", err)
	}
	for _, n := range local {
		if _, ok := snap.Lineages[string(n)]; ok {
			continue
		}
		if p, err := pinned(string(n)); err != nil || p {
			errs = append(errs, err)
			continue
		}
		delete(m.known, string(n))
		if err := acme.RemoveLineage(m.dir, n); err != nil {
			return fmt.Errorf("pull certificate store: %w", err)
		}
	}
	var fetch []string
	for name, st := range snap.Lineages {
		if p, err := pinned(name); err != nil || p {
			errs = append(errs, err)
			continue
		}
		if m.liveSerial(name) != st.Serial {
			fetch = append(fetch, name)
		}
	}
	slices.Sort(fetch)
	for len(fetch) > 0 {
		batch := fetch[:min(len(fetch), 500)]
		fetch = fetch[len(batch):]
		ls, err := m.store.Lineages(ctx, certstore.LineageFilter{Names: batch})
		if err != nil {
			return fmt.Errorf("pull certificate store: %w", err)
		}
		for _, l := range ls {
			// Another certificate under the same name: none of the
			// mirror's versions may outlive it (a purged lineage's would
			// be pushed back with the next renewal).
			delete(m.known, l.Name)
			if err := acme.RemoveLineage(m.dir, acme.LineageName(l.Name)); err != nil {
				return fmt.Errorf("pull certificate store: %w", err)
			}
			// Unsynced: the mirror is rebuilt from the store at every start.
			if _, err := certstore.WriteLineage(m.dir, l, false); err != nil {
				return fmt.Errorf("pull certificate store: %w", err)
			}
		}
	}
	files, err := m.store.AccountFiles(ctx)
	if err != nil {
		return fmt.Errorf("pull certificate store: %w", err)
	}
	var missing []acme.AccountFile
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(m.dir, "accounts", filepath.FromSlash(f.Path))); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, f)
		}
	}
	if err := acme.WriteAccountFiles(m.dir, missing); err != nil {
		return fmt.Errorf("pull certificate store: %w", err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pull certificate store: %w", err)
	}
	return nil
}

// Push stores the certificates of lineage name this worker saved and has
// not pushed (certstore.Store.AddIssued: the newest becomes current), and
// the mirror's account files the store lacks.
func (m *Mirror) Push(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.push(ctx, name); err != nil {
		return err
	}
	files, err := acme.ReadAccountFiles(m.dir)
	if err != nil {
		return fmt.Errorf("push account to the certificate store: %w", err)
	}
	if err := m.store.PutAccountFiles(ctx, files, false); err != nil {
		return fmt.Errorf("push account to the certificate store: %w", err)
	}
	return nil
}

// push stores lineage name's unpushed versions and clears their record. A
// recorded serial the mirror does not hold as a complete version, with no
// Save of the lineage running, is dropped: its Save died before it wrote
// the version, and there is nothing to push. m.mu is held.
func (m *Mirror) push(ctx context.Context, name string) error {
	serials, err := m.unpushed(name)
	if err != nil || len(serials) == 0 {
		return err
	}
	saving := m.saving[name] > 0
	l, err := certstore.ReadLineage(m.dir, name)
	if err != nil {
		if saving {
			return nil
		}
		// Unreadable: nothing of it can be pushed; Pull replaces it with
		// the store's copy.
		return m.setUnpushed(name, nil)
	}
	out := certstore.Lineage{Name: name, RenewalConf: l.RenewalConf, Current: 0}
	var left []string
	for _, s := range serials {
		i := slices.IndexFunc(l.Versions, func(v certstore.Version) bool { return v.Serial == s })
		if i < 0 {
			if saving {
				left = append(left, s)
			}
			continue
		}
		v := l.Versions[i]
		out.Versions = append(out.Versions, v)
		// The live version if it is new here, else the newest new one (a
		// Save that died before making its version live).
		if v.N == l.Current || (out.Current != l.Current && v.N > out.Current) {
			out.Current = v.N
		}
	}
	if len(out.Versions) > 0 {
		cur, _ := out.CurrentVersion()
		leaf, err := certcrypto.ParsePEMCertificate(cur.Cert)
		if err != nil {
			return fmt.Errorf("push %s to the certificate store: %w", name, err)
		}
		out.Domains = certcrypto.ExtractDomains(leaf)
		if _, _, err := m.store.AddIssued(ctx, out); err != nil {
			return fmt.Errorf("push %s to the certificate store: %w", name, err)
		}
	}
	return m.setUnpushed(name, left)
}

// liveSerial is the serial of lineage name's live certificate in the
// mirror, "" when there is none; a file read before is not read again.
// m.mu is held.
func (m *Mirror) liveSerial(name string) string {
	path := filepath.Join(m.dir, "live", name, "cert.pem")
	fi, err := os.Stat(path)
	if err != nil {
		delete(m.known, name)
		return ""
	}
	if k, ok := m.known[name]; ok && os.SameFile(k.file, fi) && k.file.ModTime().Equal(fi.ModTime()) && k.file.Size() == fi.Size() {
		return k.serial
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	leaf, err := certcrypto.ParsePEMCertificate(b)
	if err != nil {
		return ""
	}
	m.known[name] = liveStamp{file: fi, serial: serialOf(leaf)}
	return m.known[name].serial
}

// serialOf is a certificate's serial as the store records it.
func serialOf(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// unpushed are the serials recorded as unpushed in lineage name.
func (m *Mirror) unpushed(name string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(m.dir, unpushedDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read unpushed certificates of %s: %w", name, err)
	}
	return strings.Fields(string(b)), nil
}

// unpushedNames are the lineages with unpushed certificates.
func (m *Mirror) unpushedNames() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(m.dir, unpushedDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list unpushed certificates: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// setUnpushed replaces the record of lineage name (none: removed), durably:
// it must outlive a crash that the certificate files outlive.
func (m *Mirror) setUnpushed(name string, serials []string) error {
	if _, err := acme.ParseLineageName(name); err != nil {
		return fmt.Errorf("record unpushed certificates: %w", err)
	}
	dir := filepath.Join(m.dir, unpushedDir)
	path := filepath.Join(dir, name)
	if len(serials) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("clear unpushed certificates of %s: %w", name, err)
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("record unpushed certificates of %s: %w", name, err)
	}
	if err := writeDurably(dir, name, []byte(strings.Join(serials, "\n")+"\n")); err != nil {
		return fmt.Errorf("record unpushed certificates of %s: %w", name, err)
	}
	return nil
}

// writeDurably replaces dir/name with data: a temporary file, fsynced, is
// renamed into place and the directory fsynced.
func writeDurably(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
