package acme

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/midsummer/certmgr/domain"
)

// candidates groups the lineages of the store by the domain they are named
// after: d itself and certbot's d-NNNN. It reads the renewal directory only,
// so it stays cheap with tens of thousands of lineages.
func (s *Store) candidates() (map[domain.Name][]LineageName, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "renewal"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make(map[domain.Name][]LineageName, len(entries))
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".conf")
		if !ok || e.IsDir() {
			continue
		}
		n, err := ParseLineageName(base)
		if err != nil {
			continue
		}
		if d, err := domain.Parse(base); err == nil && string(d) == base {
			out[d] = append(out[d], n)
		}
		if m := suffixRE.FindStringSubmatch(base); m != nil {
			if d, err := domain.Parse(m[1]); err == nil && string(d) == m[1] {
				out[d] = append(out[d], n)
			}
		}
	}
	return out, nil
}

// LineageNames maps each domain to the name of the lineage that serves it, by
// Find's rule. A domain with a single lineage named after it is mapped without
// reading its files (nginxconf vets them anyway); only domains with several
// candidate lineages are loaded to pick one. Regenerating nginx for thousands
// of domains thus reads one directory, not every certificate.
func (s *Store) LineageNames() (map[domain.Name]LineageName, error) {
	cands, err := s.candidates()
	if err != nil {
		return nil, err
	}
	out := make(map[domain.Name]LineageName, len(cands))
	for d, names := range cands {
		if len(names) == 1 && names[0] == NameFor(d) {
			out[d] = names[0]
			continue
		}
		if l, ok := s.pick(d, names); ok {
			out[d] = l.Name
		}
	}
	return out, nil
}

// pick applies Find's rule to the given lineages: a working lineage for
// exactly d, the one that expires last.
func (s *Store) pick(d domain.Name, names []LineageName) (l Lineage, ok bool) {
	for _, n := range names {
		c := s.load(n)
		if c.Err != nil || len(c.Domains) != 1 || c.Domains[0] != string(d) {
			continue
		}
		if !ok || c.NotAfter.After(l.NotAfter) {
			l, ok = c, true
		}
	}
	return l, ok
}
