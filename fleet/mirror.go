package fleet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/midsummer/certmgr/acme"
	"github.com/midsummer/certmgr/certstore"
)

// Store is what the worker side of fleet mode needs of the certificate store
// (*certstore.Store).
type Store interface {
	Snapshot(ctx context.Context) (certstore.Snapshot, error)
	Lineages(ctx context.Context, f certstore.LineageFilter) ([]certstore.Lineage, error)
	PutLineages(ctx context.Context, ls []certstore.Lineage) (int64, error)
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
// (LETSENCRYPT_DIR of a fleet worker: scratch space, an emptyDir). Pull
// never moves a lineage back: a version the worker has just issued and not
// yet pushed survives it.
type Mirror struct {
	store Store
	dir   string
	mu    sync.Mutex // one Pull or Push at a time
}

// NewMirror returns the mirror of store in dir.
func NewMirror(store Store, dir string) *Mirror { return &Mirror{store: store, dir: dir} }

// Dir is the mirror's directory.
func (m *Mirror) Dir() string { return m.dir }

// localCurrent is the version live/<name> links to; 0 when there is none.
func (m *Mirror) localCurrent(name string) int {
	return acme.LiveVersion(m.dir, acme.LineageName(name))
}

// Pull writes into the mirror every lineage whose current version in the
// store is newer than the mirror's, and the account files the mirror lacks.
func (m *Mirror) Pull(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	snap, err := m.store.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("pull certificate store: %w", err)
	}
	var fetch []string
	for name, st := range snap.Lineages {
		if m.localCurrent(name) < st.Current {
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
	return nil
}

// Push stores lineage name as the mirror holds it (its versions the store
// lacks, its live version) and the mirror's account files the store lacks.
func (m *Mirror) Push(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := certstore.ReadLineage(m.dir, name)
	if err != nil {
		return fmt.Errorf("push %s to the certificate store: %w", name, err)
	}
	if _, err := m.store.PutLineages(ctx, []certstore.Lineage{l}); err != nil {
		return fmt.Errorf("push %s to the certificate store: %w", name, err)
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

// pushNewer pushes the lineages among names whose mirror version is newer
// than the store's: a certificate issued by a task whose push failed is
// stored by the next publication.
func (m *Mirror) pushNewer(ctx context.Context, names []string, snap certstore.Snapshot) error {
	for _, n := range names {
		if st, ok := snap.Lineages[n]; !ok || m.localCurrent(n) > st.Current {
			if m.localCurrent(n) == 0 {
				continue
			}
			if err := m.Push(ctx, n); err != nil {
				return err
			}
		}
	}
	return nil
}
