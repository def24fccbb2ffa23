package acme

import "github.com/midsummer/certmgr/domain"

// ByDomain maps each domain to the lineage that serves it, by Find's rule (a
// working lineage for exactly that name, the one expiring last), reading the
// store once: regenerating nginx for thousands of domains must not list the
// store once per domain.
func (s *Store) ByDomain() (map[domain.Name]Lineage, error) {
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	out := make(map[domain.Name]Lineage, len(all))
	for _, c := range all {
		if c.Err != nil || len(c.Domains) != 1 {
			continue
		}
		d, err := domain.Parse(c.Domains[0])
		if err != nil || string(d) != c.Domains[0] {
			continue // a name certmgr would not serve (wildcard, IP, ...)
		}
		if cur, ok := out[d]; !ok || c.NotAfter.After(cur.NotAfter) {
			out[d] = c
		}
	}
	return out, nil
}
