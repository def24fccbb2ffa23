package acme

// Remove deletes lineage n from the store as RemoveLineage does, holding
// the lineage's lock so that no Save of it runs meanwhile.
func (s *Store) Remove(n LineageName) error {
	if _, err := ParseLineageName(string(n)); err != nil {
		return err
	}
	unlock := s.lock(n)
	defer unlock()
	return RemoveLineage(s.dir, n)
}
