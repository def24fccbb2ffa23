package certstore

import (
	"context"
	"fmt"

	"github.com/midsummer/certmgr/acme"
)

// ImportResult is what Import did.
type ImportResult struct {
	Lineages     []string         `json:"lineages"`
	Skipped      []SkippedLineage `json:"skipped"`
	AccountFiles int              `json:"account_files"`
}

// SkippedLineage is a lineage Import could not read.
type SkippedLineage struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// importBatch lineages are stored per transaction.
const importBatch = 200

// Import copies a certbot-layout directory into the store: every lineage
// with a renewal configuration (certbot's own and certmgr's), with all its
// versions, and the accounts/ tree. A lineage that cannot be read is skipped
// and listed; versions already in the store are kept, so Import can be run
// again (after a worker in files mode renewed more, say).
func (s *Store) Import(ctx context.Context, dir string) (ImportResult, error) {
	res := ImportResult{Lineages: []string{}, Skipped: []SkippedLineage{}}
	names, err := acme.LineageNames(dir)
	if err != nil {
		return res, err
	}
	var batch []Lineage
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if _, err := s.PutLineages(ctx, batch); err != nil {
			return err
		}
		for _, l := range batch {
			res.Lineages = append(res.Lineages, l.Name)
		}
		batch = batch[:0]
		return nil
	}
	for _, n := range names {
		l, err := ReadLineage(dir, string(n))
		if err != nil {
			res.Skipped = append(res.Skipped, SkippedLineage{Name: string(n), Reason: err.Error()})
			continue
		}
		batch = append(batch, l)
		if len(batch) == importBatch {
			if err := flush(); err != nil {
				return res, fmt.Errorf("import %s: %w", dir, err)
			}
		}
	}
	if err := flush(); err != nil {
		return res, fmt.Errorf("import %s: %w", dir, err)
	}
	files, err := acme.ReadAccountFiles(dir)
	if err != nil {
		return res, fmt.Errorf("import %s: %w", dir, err)
	}
	if err := s.PutAccountFiles(ctx, files, false); err != nil {
		return res, fmt.Errorf("import %s: %w", dir, err)
	}
	res.AccountFiles = len(files)
	return res, nil
}

// Export writes the whole store into a certbot-layout directory, every
// version of every lineage and the accounts/ tree: the way back to a
// single-volume install, readable by `certbot certificates --config-dir`.
func (s *Store) Export(ctx context.Context, dir string) (int, error) {
	ls, err := s.Lineages(ctx, LineageFilter{AllVersions: true})
	if err != nil {
		return 0, err
	}
	for _, l := range ls {
		if _, err := WriteLineage(dir, l, true); err != nil {
			return 0, fmt.Errorf("export to %s: %w", dir, err)
		}
	}
	files, err := s.AccountFiles(ctx)
	if err != nil {
		return 0, err
	}
	if err := acme.WriteAccountFiles(dir, files); err != nil {
		return 0, fmt.Errorf("export to %s: %w", dir, err)
	}
	return len(ls), nil
}
