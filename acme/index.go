package acme

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/midsummer/certmgr/domain"
)

// Which lineage serves a name. certbot lets a lineage have any name
// (--cert-name) and several names; a name may even be in more than one
// lineage. The lineage that serves a domain d is, among the working lineages
// whose certificate names d, the one that expires last (ties: the first name
// in order). Only when no working lineage names d does a broken one stand for
// it: one named after d (d, d-NNNN) or listing d in its [[webroot_map]], so
// that nginx and the sweep can say why d is not served and renewing repairs it.
//
// Reading every certificate of a large store on each regeneration would be
// slow, so lineages are cached with the identity of their files (the live
// directory, which a Save replaces and certbot rewrites, and the renewal
// configuration): an unchanged lineage costs two stat calls.

// cachedLineage is a lineage as read, with the identity of its files then.
type cachedLineage struct {
	stamp [2]fileStamp
	l     Lineage
}

// fileStamp identifies one state of a file or directory.
type fileStamp struct {
	dev, ino  uint64
	size      int64
	mtime     time.Time
	ctimeSec  int64
	ctimeNsec int64
}

func stampOf(path string) (fileStamp, bool) {
	info, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStamp{}, false
	}
	return fileStamp{dev: uint64(st.Dev), ino: st.Ino, size: info.Size(), mtime: info.ModTime(),
		ctimeSec: int64(st.Ctim.Sec), ctimeNsec: int64(st.Ctim.Nsec)}, true
}

// loadCached is load, skipping the files when they are unchanged since the
// last call.
func (s *Store) loadCached(n LineageName) Lineage {
	live, okLive := stampOf(s.liveDir(n))
	conf, okConf := stampOf(s.confPath(n))
	stamp := [2]fileStamp{live, conf}
	if okLive && okConf {
		s.cacheMu.Lock()
		c, ok := s.cache[n]
		s.cacheMu.Unlock()
		if ok && c.stamp == stamp {
			return c.l
		}
	}
	l := s.load(n)
	if okLive && okConf {
		s.cacheMu.Lock()
		s.cache[n] = cachedLineage{stamp: stamp, l: l}
		s.cacheMu.Unlock()
	}
	return l
}

// names lists the lineages that have a renewal configuration with a usable
// name, sorted.
func (s *Store) names() ([]LineageName, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "renewal"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]LineageName, 0, len(entries))
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".conf")
		if !ok || e.IsDir() {
			continue
		}
		if n, err := ParseLineageName(base); err == nil {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// Serving maps every domain to the lineage that serves it (see the comment at
// the top of this file). A lineage with several names appears once per name.
func (s *Store) Serving() (map[domain.Name]Lineage, error) {
	names, err := s.names()
	if err != nil {
		return nil, err
	}
	out := make(map[domain.Name]Lineage, len(names))
	var broken []Lineage
	seen := make(map[LineageName]bool, len(names))
	for _, n := range names {
		seen[n] = true
		l := s.loadCached(n)
		if l.Err != nil {
			broken = append(broken, l)
			continue
		}
		for _, d := range l.names() {
			if cur, ok := out[d]; !ok || l.NotAfter.After(cur.NotAfter) {
				out[d] = l
			}
		}
	}
	for _, l := range broken {
		for _, d := range l.names() {
			if _, ok := out[d]; !ok {
				out[d] = l
			}
		}
	}
	// Forget lineages that are gone.
	s.cacheMu.Lock()
	for n := range s.cache {
		if !seen[n] {
			delete(s.cache, n)
		}
	}
	s.cacheMu.Unlock()
	return out, nil
}

// names are the domains lineage l is for: its certificate's DNS names when
// it is readable, else the name it is named after and the names of its
// [[webroot_map]]. Names that are not plain domains (wildcards) are left out.
func (l Lineage) names() []domain.Name {
	var raw []string
	if l.Err == nil {
		raw = l.Domains
	} else {
		if d := l.Name.baseDomain(); d != "" {
			raw = append(raw, string(d))
		}
		for d := range l.Settings.WebrootMap {
			raw = append(raw, d)
		}
		sort.Strings(raw[min(len(raw), 1):])
	}
	out := make([]domain.Name, 0, len(raw))
	for _, r := range raw {
		if d, err := domain.Parse(r); err == nil && string(d) == r && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// Names are the domains a lineage is for (see Serving): what a renewal
// orders, and the rows it is linked to.
func (l Lineage) Names() []domain.Name { return l.names() }

// Find returns the working lineage that serves d (see the comment at the top
// of this file); ok is false when there is none.
func (s *Store) Find(d domain.Name) (l Lineage, ok bool, err error) {
	all, err := s.Serving()
	if err != nil {
		return Lineage{}, false, err
	}
	l, ok = all[d]
	if !ok || l.Err != nil {
		return Lineage{}, false, nil
	}
	return l, true, nil
}

// LineageNames maps each domain to the name of the lineage that serves it, as
// Serving does: the lineage nginx is configured with for that name.
func (s *Store) LineageNames() (map[domain.Name]LineageName, error) {
	all, err := s.Serving()
	if err != nil {
		return nil, err
	}
	out := make(map[domain.Name]LineageName, len(all))
	for d, l := range all {
		out[d] = l.Name
	}
	return out, nil
}
