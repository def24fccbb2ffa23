package domaindb

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/midsummer/certmgr/domain"
)

// certmgr's own tables, beside Django's: created by certmgr on first use in
// the schema the connection's search_path names, never touched by Django's
// migrations.
const ownersTable = `CREATE TABLE IF NOT EXISTS certmgr_certificate_owner (
	domain     varchar(253) PRIMARY KEY,
	row_id     bigint       NOT NULL,
	owner      text         NOT NULL,
	checked_at timestamptz  NOT NULL DEFAULT now()
)`

// tables creates certmgr's tables once per Store (again after a failure).
type tables struct {
	mu   sync.Mutex
	done bool
}

func (s *Store) ensureTables(ctx context.Context) error {
	s.tables.mu.Lock()
	defer s.tables.mu.Unlock()
	if s.tables.done {
		return nil
	}
	// Replicas start together: CREATE TABLE IF NOT EXISTS is not safe against
	// itself (two sessions can both try to create the type), so one at a time.
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, LockKey("certmgr-tables")); err != nil {
			return err
		}
		for _, ddl := range []string{ownersTable, budgetTable,
			`ALTER TABLE certmgr_acme_order ADD COLUMN IF NOT EXISTS renewal boolean NOT NULL DEFAULT false`,
			`CREATE INDEX IF NOT EXISTS certmgr_acme_order_at ON certmgr_acme_order (at)`,
			`CREATE INDEX IF NOT EXISTS certmgr_acme_order_domain ON certmgr_acme_order (domain, at)`,
			`CREATE INDEX IF NOT EXISTS certmgr_acme_order_owner ON certmgr_acme_order (owner, at)`,
			`CREATE INDEX IF NOT EXISTS certmgr_acme_order_registered ON certmgr_acme_order (registered, at)`} {
			if _, err := tx.Exec(ctx, ddl); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create certmgr's tables: %w", err)
	}
	s.tables.done = true
	return nil
}

// CertOwner is the row a domain's stored certificate was last issued,
// reused or renewed for, after that row passed the ownership check.
type CertOwner struct {
	RowID int64
	Owner string // CustomDomain.Owner of that row
}

// RecordOwner notes that name's certificate now serves row, which has just
// passed the ownership check.
func (s *Store) RecordOwner(ctx context.Context, name domain.Name, row CustomDomain) error {
	if err := s.ensureTables(ctx); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO certmgr_certificate_owner (domain, row_id, owner, checked_at)
		VALUES ($1, $2, $3, now())
		ON CONFLICT (domain) DO UPDATE SET row_id = $2, owner = $3, checked_at = now()`,
		string(name), row.ID, row.Owner())
	if err != nil {
		return fmt.Errorf("record owner of %s: %w", name, err)
	}
	return nil
}

// CertOwners returns every recorded owner by domain. A domain without a record
// has a certificate from before owners were recorded (or none).
func (s *Store) CertOwners(ctx context.Context) (map[domain.Name]CertOwner, error) {
	if err := s.ensureTables(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT domain, row_id, owner FROM certmgr_certificate_owner`)
	if err != nil {
		return nil, fmt.Errorf("read certificate owners: %w", err)
	}
	defer rows.Close()
	out := map[domain.Name]CertOwner{}
	for rows.Next() {
		var (
			name string
			o    CertOwner
		)
		if err := rows.Scan(&name, &o.RowID, &o.Owner); err != nil {
			return nil, fmt.Errorf("read certificate owners: %w", err)
		}
		out[domain.Name(name)] = o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read certificate owners: %w", err)
	}
	return out, nil
}
