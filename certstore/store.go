package certstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/acme"
)

// Store is certmgr's PostgreSQL certificate store. It is safe for concurrent
// use by many goroutines and many processes.
type Store struct {
	cfg  Config
	log  zerolog.Logger
	pool *pgxpool.Pool
	keys *Keyring
}

// Version is one version of a lineage: certbot's archive/<name>/*N.pem.
type Version struct {
	N         int
	Cert      []byte
	Chain     []byte
	Fullchain []byte
	Privkey   []byte // in clear once read; sealed in the table
	Serial    string // hex
	NotBefore time.Time
	NotAfter  time.Time
}

// Lineage is a lineage as the store holds it.
type Lineage struct {
	Name        string
	Domains     []string
	Current     int    // the live version
	RenewalConf string // renewal/<name>.conf, as certbot reads it
	Owner       string
	// Versions are the versions read: every one, or only Current (see
	// Store.Lineages).
	Versions []Version
}

// CurrentVersion is the live version among l.Versions.
func (l Lineage) CurrentVersion() (Version, bool) {
	for _, v := range l.Versions {
		if v.N == l.Current {
			return v, true
		}
	}
	return Version{}, false
}

// Served is a domain every nginx serves with a lineage.
type Served struct {
	Domain  string `json:"domain"`
	Lineage string `json:"lineage"`
}

// Open connects, brings the schema up to date (Migrate) and checks that the
// keyring opens what the store holds. A missing or wrong key is a *KeyError.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	keys, err := ParseKeyring(cfg.Key)
	if err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("open certificate store: %w", err)
	}
	// After a silent network partition the pool may hold connections the
	// network forgot: the ping before reuse gives up on one within
	// seconds (not at its caller's deadline), and keepalive probes find
	// idle ones dead within a minute. The LISTEN connection copies this.
	pc.PingTimeout = 5 * time.Second
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 4}}
	pc.ConnConfig.DialFunc = d.DialContext
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open certificate store: %w", err)
	}
	s := &Store{cfg: cfg, log: cfg.Logger.With().Str("component", "certstore").Logger(), pool: pool, keys: keys}
	if _, err := Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	if err := s.checkKey(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Keyring is the store's keyring.
func (s *Store) Keyring() *Keyring { return s.keys }

// ConnConfig is a copy of the pool's connection settings, for a connection of
// one's own (LISTEN).
func (s *Store) ConnConfig() *pgx.ConnConfig { return s.pool.Config().ConnConfig.Copy() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

const keyCheckAAD = "certmgr-key-check"

// checkKey refuses a keyring that did not seal this store: the check value
// must open, and every sealed row must name a key of the keyring.
func (s *Store) checkKey(ctx context.Context) error {
	id, sealed := s.keys.Seal(keyCheckAAD, []byte(keyCheckAAD))
	if _, err := s.pool.Exec(ctx, `INSERT INTO certmgr_key_check (id, key_id, sealed) VALUES (true, $1, $2)
		ON CONFLICT (id) DO NOTHING`, id, sealed); err != nil {
		return fmt.Errorf("check store key: %w", err)
	}
	if err := s.pool.QueryRow(ctx, `SELECT key_id, sealed FROM certmgr_key_check`).Scan(&id, &sealed); err != nil {
		return fmt.Errorf("check store key: %w", err)
	}
	if _, err := s.keys.Open(id, keyCheckAAD, sealed); err != nil {
		return &KeyError{Reason: fmt.Sprintf("does not open this store (it was sealed with key %s, the keyring holds %s): set the key the store was created with",
			id, strings.Join(s.keys.IDs(), ", "))}
	}
	rows, err := s.pool.Query(ctx, `SELECT privkey_key_id, count(*) FROM certmgr_lineage_version GROUP BY 1
		UNION ALL SELECT key_id, count(*) FROM certmgr_account_file GROUP BY 1`)
	if err != nil {
		return fmt.Errorf("check store key: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var kid string
		var n int
		if err := rows.Scan(&kid, &n); err != nil {
			return fmt.Errorf("check store key: %w", err)
		}
		if !slices.Contains(s.keys.IDs(), kid) {
			return &KeyError{Reason: fmt.Sprintf("%d sealed values in the store use key %s, which the keyring (%s) does not hold: a rotation is unfinished; give \"new,old\" and run certmgr store rotate-key",
				n, kid, strings.Join(s.keys.IDs(), ", "))}
		}
	}
	return rows.Err()
}

// bump increments the store version inside tx and sends NOTIFY (delivered at
// commit).
func bump(ctx context.Context, tx pgx.Tx) (int64, error) {
	var v int64
	if err := tx.QueryRow(ctx, `UPDATE certmgr_store_version SET version = version + 1 RETURNING version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("bump store version: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, current_schema() || ' ' || $2::text)`, Channel, strconv.FormatInt(v, 10)); err != nil {
		return 0, fmt.Errorf("notify: %w", err)
	}
	return v, nil
}

// StoreVersion is the store's current version.
func (s *Store) StoreVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, `SELECT version FROM certmgr_store_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read store version: %w", err)
	}
	return v, nil
}

// Schema is the schema the store's tables are in (the NOTIFY payload's first
// word).
func (s *Store) Schema(ctx context.Context) (string, error) {
	var schema string
	if err := s.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return "", fmt.Errorf("read schema: %w", err)
	}
	return schema, nil
}

func privkeyAAD(lineage string, n int) string { return "privkey:" + lineage + ":" + strconv.Itoa(n) }
func accountAAD(path string) string           { return "account:" + path }

// PutLineages stores lineages: each lineage row is created or updated
// (domains, current version, renewal configuration, owner) and each of its
// Versions added. A version that is already stored with another certificate
// is an error (two writers numbered a version alike); one stored with the same
// certificate is skipped, so an import can run twice. One transaction, one
// store version; it returns that version.
func (s *Store) PutLineages(ctx context.Context, ls []Lineage) (int64, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("store lineages: %w", err)
	}
	defer tx.Rollback(ctx)
	v, err := bump(ctx, tx)
	if err != nil {
		return 0, err
	}
	for _, l := range ls {
		if _, err := tx.Exec(ctx, `INSERT INTO certmgr_lineage (name, domains, current_version, renewal_conf, owner, changed_version)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (name) DO UPDATE SET domains = $2, current_version = $3, renewal_conf = $4, owner = $5,
				changed_version = $6, updated_at = now()`,
			l.Name, l.Domains, l.Current, l.RenewalConf, l.Owner, v); err != nil {
			return 0, fmt.Errorf("store lineage %s: %w", l.Name, err)
		}
		for _, ver := range l.Versions {
			kid, sealed := s.keys.Seal(privkeyAAD(l.Name, ver.N), ver.Privkey)
			tag, err := tx.Exec(ctx, `INSERT INTO certmgr_lineage_version
				(lineage, version, cert, chain, fullchain, privkey_key_id, privkey_sealed, serial, not_before, not_after)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (lineage, version) DO NOTHING`,
				l.Name, ver.N, string(ver.Cert), string(ver.Chain), string(ver.Fullchain), kid, sealed, ver.Serial, ver.NotBefore, ver.NotAfter)
			if err != nil {
				return 0, fmt.Errorf("store lineage %s version %d: %w", l.Name, ver.N, err)
			}
			if tag.RowsAffected() == 0 {
				var cert string
				if err := tx.QueryRow(ctx, `SELECT cert FROM certmgr_lineage_version WHERE lineage = $1 AND version = $2`, l.Name, ver.N).Scan(&cert); err != nil {
					return 0, fmt.Errorf("store lineage %s version %d: %w", l.Name, ver.N, err)
				}
				if cert != string(ver.Cert) {
					return 0, fmt.Errorf("store lineage %s: version %d is already stored with another certificate", l.Name, ver.N)
				}
			}
		}
		var ok bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM certmgr_lineage_version WHERE lineage = $1 AND version = $2)`, l.Name, l.Current).Scan(&ok); err != nil {
			return 0, fmt.Errorf("store lineage %s: %w", l.Name, err)
		}
		if !ok {
			return 0, fmt.Errorf("store lineage %s: its current version %d is not stored", l.Name, l.Current)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("store lineages: commit: %w", err)
	}
	return v, nil
}

// AddIssued stores versions of lineage l.Name that one writer issued: each of
// l.Versions whose certificate the store already holds keeps its stored
// number; one whose number another certificate holds is stored under the
// next free number (two workers renewed the lineage at once, both as N+1).
// When a version was added, l.Current, renumbered with it, becomes the
// lineage's current version, with l's domains and renewal configuration;
// when every version was already stored (a push repeated after a crash)
// nothing changes, so a repeat never moves the lineage back. numbers[i] is
// the number l.Versions[i] is stored under; version is the store version,
// 0 when nothing changed. The lineage row is locked for
// the transaction: concurrent AddIssued calls number one after the other.
func (s *Store) AddIssued(ctx context.Context, l Lineage) (numbers []int, version int64, err error) {
	cur := slices.IndexFunc(l.Versions, func(v Version) bool { return v.N == l.Current })
	if cur < 0 {
		return nil, 0, fmt.Errorf("store issued %s: current version %d not given", l.Name, l.Current)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("store issued %s: %w", l.Name, err)
	}
	defer tx.Rollback(ctx)
	v, err := bump(ctx, tx)
	if err != nil {
		return nil, 0, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO certmgr_lineage (name, domains, current_version, renewal_conf, owner, changed_version)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING`,
		l.Name, l.Domains, l.Current, l.RenewalConf, l.Owner, v); err != nil {
		return nil, 0, fmt.Errorf("store issued %s: %w", l.Name, err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM certmgr_lineage WHERE name = $1 FOR UPDATE`, l.Name); err != nil {
		return nil, 0, fmt.Errorf("store issued %s: %w", l.Name, err)
	}
	rows, err := tx.Query(ctx, `SELECT version, cert FROM certmgr_lineage_version WHERE lineage = $1`, l.Name)
	if err != nil {
		return nil, 0, fmt.Errorf("store issued %s: %w", l.Name, err)
	}
	byCert, taken, highest := map[string]int{}, map[int]bool{}, 0
	for rows.Next() {
		var n int
		var cert string
		if err := rows.Scan(&n, &cert); err != nil {
			rows.Close()
			return nil, 0, fmt.Errorf("store issued %s: %w", l.Name, err)
		}
		byCert[cert], taken[n], highest = n, true, max(highest, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("store issued %s: %w", l.Name, err)
	}
	// Versions in their order, so that renumbered ones keep it.
	order := make([]int, len(l.Versions))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return l.Versions[a].N - l.Versions[b].N })
	numbers = make([]int, len(l.Versions))
	added := false
	for _, i := range order {
		ver := l.Versions[i]
		if n, ok := byCert[string(ver.Cert)]; ok {
			numbers[i] = n
			continue
		}
		n := ver.N
		if taken[n] {
			n = highest + 1
		}
		kid, sealed := s.keys.Seal(privkeyAAD(l.Name, n), ver.Privkey)
		if _, err := tx.Exec(ctx, `INSERT INTO certmgr_lineage_version
			(lineage, version, cert, chain, fullchain, privkey_key_id, privkey_sealed, serial, not_before, not_after)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			l.Name, n, string(ver.Cert), string(ver.Chain), string(ver.Fullchain), kid, sealed, ver.Serial, ver.NotBefore, ver.NotAfter); err != nil {
			return nil, 0, fmt.Errorf("store issued %s version %d: %w", l.Name, n, err)
		}
		numbers[i], byCert[string(ver.Cert)], taken[n], highest, added = n, n, true, max(highest, n), true
	}
	if !added {
		return numbers, 0, nil
	}
	if _, err := tx.Exec(ctx, `UPDATE certmgr_lineage SET domains = $2, current_version = $3, renewal_conf = $4,
			changed_version = $5, updated_at = now() WHERE name = $1`,
		l.Name, l.Domains, numbers[cur], l.RenewalConf, v); err != nil {
		return nil, 0, fmt.Errorf("store issued %s: %w", l.Name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, 0, fmt.Errorf("store issued %s: commit: %w", l.Name, err)
	}
	return numbers, v, nil
}

// DeleteLineage removes a lineage with all its versions and any served entry
// that names it. Deleting one that is not there is not an error.
func (s *Store) DeleteLineage(ctx context.Context, name string) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("delete lineage %s: %w", name, err)
	}
	defer tx.Rollback(ctx)
	if _, err := bump(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM certmgr_served WHERE lineage = $1`, name); err != nil {
		return fmt.Errorf("delete lineage %s: %w", name, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM certmgr_lineage WHERE name = $1`, name); err != nil {
		return fmt.Errorf("delete lineage %s: %w", name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("delete lineage %s: commit: %w", name, err)
	}
	return nil
}

// LineageFilter chooses what Lineages reads.
type LineageFilter struct {
	// Names limits the read to these lineages; nil means all.
	Names []string
	// AllVersions reads every version; otherwise only the current one.
	AllVersions bool
}

// Lineages reads lineages with their versions, private keys opened, sorted by
// name.
func (s *Store) Lineages(ctx context.Context, f LineageFilter) ([]Lineage, error) {
	return s.lineages(ctx, s.pool, f)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (s *Store) lineages(ctx context.Context, q querier, f LineageFilter) ([]Lineage, error) {
	rows, err := q.Query(ctx, `SELECT l.name, l.domains, l.current_version, l.renewal_conf, l.owner,
			v.version, v.cert, v.chain, v.fullchain, v.privkey_key_id, v.privkey_sealed, v.serial, v.not_before, v.not_after
		FROM certmgr_lineage l JOIN certmgr_lineage_version v ON v.lineage = l.name
		WHERE ($1::text[] IS NULL OR l.name = ANY($1)) AND ($2 OR v.version = l.current_version)
		ORDER BY l.name, v.version`, f.Names, f.AllVersions)
	if err != nil {
		return nil, fmt.Errorf("read lineages: %w", err)
	}
	defer rows.Close()
	var out []Lineage
	for rows.Next() {
		var l Lineage
		var v Version
		var cert, chain, full, kid string
		var sealed []byte
		if err := rows.Scan(&l.Name, &l.Domains, &l.Current, &l.RenewalConf, &l.Owner,
			&v.N, &cert, &chain, &full, &kid, &sealed, &v.Serial, &v.NotBefore, &v.NotAfter); err != nil {
			return nil, fmt.Errorf("read lineages: %w", err)
		}
		v.Cert, v.Chain, v.Fullchain = []byte(cert), []byte(chain), []byte(full)
		if v.Privkey, err = s.keys.Open(kid, privkeyAAD(l.Name, v.N), sealed); err != nil {
			return nil, fmt.Errorf("read lineage %s: %w", l.Name, err)
		}
		if n := len(out); n > 0 && out[n-1].Name == l.Name {
			out[n-1].Versions = append(out[n-1].Versions, v)
			continue
		}
		l.Versions = []Version{v}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read lineages: %w", err)
	}
	return out, nil
}

// LineageState is what a reader needs to tell whether its copy of a lineage
// is current.
type LineageState struct {
	Current int
	Serial  string
}

// Snapshot is the store at one version: what to serve and the state of every
// lineage.
type Snapshot struct {
	Version  int64
	Served   []Served // sorted by domain
	Lineages map[string]LineageState
}

// Snapshot reads the store version, the served set and every lineage's state
// in one consistent read.
func (s *Store) Snapshot(ctx context.Context) (Snapshot, error) {
	var snap Snapshot
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT version FROM certmgr_store_version`).Scan(&snap.Version); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT domain, lineage FROM certmgr_served ORDER BY domain`)
		if err != nil {
			return err
		}
		snap.Served, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Served, error) {
			var sv Served
			return sv, r.Scan(&sv.Domain, &sv.Lineage)
		})
		if err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT l.name, l.current_version, v.serial FROM certmgr_lineage l
			JOIN certmgr_lineage_version v ON v.lineage = l.name AND v.version = l.current_version`)
		if err != nil {
			return err
		}
		defer rows.Close()
		snap.Lineages = map[string]LineageState{}
		for rows.Next() {
			var name string
			var st LineageState
			if err := rows.Scan(&name, &st.Current, &st.Serial); err != nil {
				return err
			}
			snap.Lineages[name] = st
		}
		return rows.Err()
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("read store snapshot: %w", err)
	}
	return snap, nil
}

// SetServed replaces the served set. When it changed, the store version is
// incremented (and NOTIFY sent); version is the store version after the
// call either way.
func (s *Store) SetServed(ctx context.Context, served []Served) (changed bool, version int64, err error) {
	want := map[string]string{}
	for _, sv := range served {
		want[sv.Domain] = sv.Lineage
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// One writer at a time: two workers publishing at once must not
		// interleave their diffs.
		if _, err := tx.Exec(ctx, `SELECT version FROM certmgr_store_version FOR UPDATE`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT domain, lineage FROM certmgr_served`)
		if err != nil {
			return err
		}
		have := map[string]string{}
		for rows.Next() {
			var d, l string
			if err := rows.Scan(&d, &l); err != nil {
				rows.Close()
				return err
			}
			have[d] = l
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var gone, set []string
		for d := range have {
			if _, ok := want[d]; !ok {
				gone = append(gone, d)
			}
		}
		for d, l := range want {
			if have[d] != l {
				set = append(set, d)
			}
		}
		if len(gone) == 0 && len(set) == 0 {
			return tx.QueryRow(ctx, `SELECT version FROM certmgr_store_version`).Scan(&version)
		}
		changed = true
		if version, err = bump(ctx, tx); err != nil {
			return err
		}
		if len(gone) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM certmgr_served WHERE domain = ANY($1)`, gone); err != nil {
				return err
			}
		}
		for _, d := range set {
			if _, err := tx.Exec(ctx, `INSERT INTO certmgr_served (domain, lineage, changed_version) VALUES ($1, $2, $3)
				ON CONFLICT (domain) DO UPDATE SET lineage = $2, changed_version = $3`, d, want[d], version); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, 0, fmt.Errorf("set served domains: %w", err)
	}
	return changed, version, nil
}

// PutAccountFiles stores account files, sealed; a file already stored is
// replaced only when replace is set.
func (s *Store) PutAccountFiles(ctx context.Context, files []acme.AccountFile, replace bool) error {
	if len(files) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, f := range files {
			kid, sealed := s.keys.Seal(accountAAD(f.Path), f.Content)
			q := `INSERT INTO certmgr_account_file (path, key_id, sealed, mode) VALUES ($1, $2, $3, $4) ON CONFLICT (path) DO NOTHING`
			if replace {
				q = `INSERT INTO certmgr_account_file (path, key_id, sealed, mode) VALUES ($1, $2, $3, $4)
					ON CONFLICT (path) DO UPDATE SET key_id = $2, sealed = $3, mode = $4, updated_at = now()`
			}
			if _, err := tx.Exec(ctx, q, f.Path, kid, sealed, int32(f.Mode)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store account files: %w", err)
	}
	return nil
}

// AccountFiles reads every account file, opened.
func (s *Store) AccountFiles(ctx context.Context) ([]acme.AccountFile, error) {
	rows, err := s.pool.Query(ctx, `SELECT path, key_id, sealed, mode FROM certmgr_account_file ORDER BY path`)
	if err != nil {
		return nil, fmt.Errorf("read account files: %w", err)
	}
	defer rows.Close()
	var out []acme.AccountFile
	for rows.Next() {
		var f acme.AccountFile
		var kid string
		var sealed []byte
		var mode int32
		if err := rows.Scan(&f.Path, &kid, &sealed, &mode); err != nil {
			return nil, fmt.Errorf("read account files: %w", err)
		}
		if f.Content, err = s.keys.Open(kid, accountAAD(f.Path), sealed); err != nil {
			return nil, fmt.Errorf("read account file %s: %w", f.Path, err)
		}
		f.Mode = uint32(mode)
		out = append(out, f)
	}
	return out, rows.Err()
}

// RotateKey seals every sealed value again under the keyring's primary key
// and returns how many it re-sealed. Run it with CERTMGR_STORE_KEY="new,old";
// afterwards "new" alone opens the store.
func (s *Store) RotateKey(ctx context.Context) (int, error) {
	primary := s.keys.Primary()
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		n = 0
		var kid string
		var sealed []byte
		if err := tx.QueryRow(ctx, `SELECT key_id, sealed FROM certmgr_key_check FOR UPDATE`).Scan(&kid, &sealed); err != nil {
			return err
		}
		if kid != primary {
			if _, err := s.keys.Open(kid, keyCheckAAD, sealed); err != nil {
				return err
			}
			kid, sealed = s.keys.Seal(keyCheckAAD, []byte(keyCheckAAD))
			if _, err := tx.Exec(ctx, `UPDATE certmgr_key_check SET key_id = $1, sealed = $2`, kid, sealed); err != nil {
				return err
			}
			n++
		}
		type row struct {
			lineage string
			n       int
			kid     string
			sealed  []byte
		}
		rows, err := tx.Query(ctx, `SELECT lineage, version, privkey_key_id, privkey_sealed FROM certmgr_lineage_version
			WHERE privkey_key_id <> $1 FOR UPDATE`, primary)
		if err != nil {
			return err
		}
		old, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			return x, r.Scan(&x.lineage, &x.n, &x.kid, &x.sealed)
		})
		if err != nil {
			return err
		}
		for _, r := range old {
			plain, err := s.keys.Open(r.kid, privkeyAAD(r.lineage, r.n), r.sealed)
			if err != nil {
				return err
			}
			kid, sealed := s.keys.Seal(privkeyAAD(r.lineage, r.n), plain)
			if _, err := tx.Exec(ctx, `UPDATE certmgr_lineage_version SET privkey_key_id = $1, privkey_sealed = $2
				WHERE lineage = $3 AND version = $4`, kid, sealed, r.lineage, r.n); err != nil {
				return err
			}
			n++
		}
		rows, err = tx.Query(ctx, `SELECT path, 0, key_id, sealed FROM certmgr_account_file WHERE key_id <> $1 FOR UPDATE`, primary)
		if err != nil {
			return err
		}
		oldFiles, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			return x, r.Scan(&x.lineage, &x.n, &x.kid, &x.sealed)
		})
		if err != nil {
			return err
		}
		for _, r := range oldFiles {
			plain, err := s.keys.Open(r.kid, accountAAD(r.lineage), r.sealed)
			if err != nil {
				return err
			}
			kid, sealed := s.keys.Seal(accountAAD(r.lineage), plain)
			if _, err := tx.Exec(ctx, `UPDATE certmgr_account_file SET key_id = $1, sealed = $2 WHERE path = $3`, kid, sealed, r.lineage); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("rotate store key: %w", err)
	}
	return n, nil
}

// PutChallenge records an HTTP-01 key authorization for the agents to answer.
func (s *Store) PutChallenge(ctx context.Context, domain, token, keyAuth string) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO certmgr_challenge (token, domain, key_auth) VALUES ($1, $2, $3)
		ON CONFLICT (token) DO UPDATE SET domain = $2, key_auth = $3, created_at = now()`, token, domain, keyAuth); err != nil {
		return fmt.Errorf("store http-01 challenge: %w", err)
	}
	return nil
}

// DeleteChallenge removes a key authorization once the CA has validated.
func (s *Store) DeleteChallenge(ctx context.Context, token string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM certmgr_challenge WHERE token = $1`, token); err != nil {
		return fmt.Errorf("remove http-01 challenge: %w", err)
	}
	return nil
}

// ErrNoChallenge is KeyAuth's error for a token the store does not hold.
var ErrNoChallenge = errors.New("no such http-01 challenge")

// KeyAuth is the key authorization of token.
func (s *Store) KeyAuth(ctx context.Context, token string) (string, error) {
	var ka string
	err := s.pool.QueryRow(ctx, `SELECT key_auth FROM certmgr_challenge WHERE token = $1`, token).Scan(&ka)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNoChallenge
	}
	if err != nil {
		return "", fmt.Errorf("read http-01 challenge: %w", err)
	}
	return ka, nil
}

// Agent is one agent's heartbeat row.
type Agent struct {
	Pod            string
	AppliedVersion int64
	LastSync       time.Time
	LastSeen       time.Time
	Detail         string // why the last sync failed; "" when it did not
}

// Heartbeat records that pod is alive and serves applied.
func (s *Store) Heartbeat(ctx context.Context, a Agent) error {
	var lastSync *time.Time
	if !a.LastSync.IsZero() {
		lastSync = &a.LastSync
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO certmgr_agent (pod, applied_version, last_sync, last_seen, detail)
		VALUES ($1, $2, $3, now(), $4)
		ON CONFLICT (pod) DO UPDATE SET applied_version = $2, last_sync = coalesce($3, certmgr_agent.last_sync),
			last_seen = now(), detail = $4`, a.Pod, a.AppliedVersion, lastSync, a.Detail); err != nil {
		return fmt.Errorf("record agent heartbeat: %w", err)
	}
	return nil
}

// Agents lists the agents seen within alive, by pod name.
func (s *Store) Agents(ctx context.Context, alive time.Duration) ([]Agent, error) {
	rows, err := s.pool.Query(ctx, `SELECT pod, applied_version, coalesce(last_sync, 'epoch'), last_seen, detail
		FROM certmgr_agent WHERE last_seen > now() - make_interval(secs => $1) ORDER BY pod`, alive.Seconds())
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Agent, error) {
		var a Agent
		return a, r.Scan(&a.Pod, &a.AppliedVersion, &a.LastSync, &a.LastSeen, &a.Detail)
	})
}

// RemoveAgent deletes pod's heartbeat row (an agent shutting down for good).
func (s *Store) RemoveAgent(ctx context.Context, pod string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM certmgr_agent WHERE pod = $1`, pod); err != nil {
		return fmt.Errorf("remove agent %s: %w", pod, err)
	}
	return nil
}
