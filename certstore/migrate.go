package certstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// migrations are applied in order, each once, each in its own transaction.
// Never edit one that has shipped: add the next.
var migrations = []string{
	// 1: the fleet store.
	`
CREATE TABLE certmgr_store_version (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    version bigint NOT NULL
);
INSERT INTO certmgr_store_version (id, version) VALUES (true, 0);

-- A value sealed under the key that sealed the store first: a keyring that
-- cannot open it is the wrong one.
CREATE TABLE certmgr_key_check (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    key_id text NOT NULL,
    sealed bytea NOT NULL
);

CREATE TABLE certmgr_lineage (
    name text PRIMARY KEY,
    domains text[] NOT NULL,
    current_version integer NOT NULL,
    renewal_conf text NOT NULL,
    owner text NOT NULL DEFAULT '',
    changed_version bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE certmgr_lineage_version (
    lineage text NOT NULL REFERENCES certmgr_lineage (name) ON DELETE CASCADE,
    version integer NOT NULL CHECK (version > 0),
    cert text NOT NULL,
    chain text NOT NULL,
    fullchain text NOT NULL,
    privkey_key_id text NOT NULL,
    privkey_sealed bytea NOT NULL,
    serial text NOT NULL,
    not_before timestamptz NOT NULL,
    not_after timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lineage, version)
);

-- certbot's accounts/ tree, every file sealed (path is the additional data).
CREATE TABLE certmgr_account_file (
    path text PRIMARY KEY,
    key_id text NOT NULL,
    sealed bytea NOT NULL,
    mode integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What every nginx serves: a domain and its lineage.
CREATE TABLE certmgr_served (
    domain text PRIMARY KEY,
    lineage text NOT NULL,
    changed_version bigint NOT NULL
);

CREATE TABLE certmgr_challenge (
    token text PRIMARY KEY,
    domain text NOT NULL,
    key_auth text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE certmgr_agent (
    pod text PRIMARY KEY,
    applied_version bigint NOT NULL,
    last_sync timestamptz,
    last_seen timestamptz NOT NULL DEFAULT now(),
    detail text NOT NULL DEFAULT ''
);
`,
}

// SchemaVersion is the migration the code expects.
func SchemaVersion() int { return len(migrations) }

// migrateLockKey names the advisory lock of Migrate; the schema is part of it,
// so stores in different schemas of one database migrate independently.
const migrateLockSQL = `SELECT pg_advisory_xact_lock(hashtext('certmgr-migrate:' || current_schema()))`

// Migrate applies the migrations this schema lacks and returns the version it
// is at. Many processes may call it at once: an advisory lock makes one apply
// and the others find the work done. A schema newer than this binary is an
// error (an older replica must not write into it).
func Migrate(ctx context.Context, conn interface {
	Begin(context.Context) (pgx.Tx, error)
}) (int, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, migrateLockSQL); err != nil {
		return 0, fmt.Errorf("migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS certmgr_schema_migrations (
        version integer PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	var have int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM certmgr_schema_migrations`).Scan(&have); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	if have > len(migrations) {
		return have, fmt.Errorf("migrate: the store is at schema version %d, newer than this certmgr (%d): upgrade certmgr", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
			return have, fmt.Errorf("migrate: version %d: %w", v, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO certmgr_schema_migrations (version) VALUES ($1)`, v); err != nil {
			return have, fmt.Errorf("migrate: version %d: %w", v, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return have, fmt.Errorf("migrate: commit: %w", err)
	}
	return len(migrations), nil
}
