package acme

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Remove deletes lineage n from the store: its live links, archive versions
// and renewal configuration, as `certbot delete` does. The name is validated
// again, so no path outside the store is touched. Removing a lineage that is
// not there is not an error.
func (s *Store) Remove(n LineageName) error {
	if _, err := ParseLineageName(string(n)); err != nil {
		return err
	}
	unlock := s.lock(n)
	defer unlock()
	// The renewal configuration first: without it the lineage is no longer
	// listed, even if removing the rest is interrupted.
	var errs []error
	if err := os.Remove(s.confPath(n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, dir := range []string{s.liveDir(n), s.archiveDir(n)} {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove lineage %s: %w", n, err)
	}
	return nil
}
