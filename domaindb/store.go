package domaindb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/midsummer/certmgr/domain"
)

// Config configures a Store.
type Config struct {
	// URL is the PostgreSQL connection URL (MIDSUMMER_DB_URL). Required unless Pool is set.
	URL string
	// Pool, if set, is used instead of opening one from URL; Close leaves it open.
	// Locks still open their own connections from Pool's configuration.
	Pool *pgxpool.Pool
	// Logger receives warnings about unusable rows. Default: disabled.
	Logger zerolog.Logger
	// Names validates names read from rows. Default: the zero Policy (domain.Parse);
	// set CNAMETarget to refuse rows claiming the platform's own zone as well.
	Names domain.Policy
	// MaxConns caps the pool opened from URL. Default 8. Held locks do not count:
	// each has its own connection.
	MaxConns int32
	// LockTimeout bounds unlocking, which runs even after the caller's ctx is done.
	// Default 5s.
	LockTimeout time.Duration
	// LockWait bounds how long Lock waits for a lock another holder keeps; then it
	// fails with a *LockBusyError, which IsTransient reports (retry later).
	// Default 30s.
	LockWait time.Duration
	// Now is the clock MarkFailed uses to tell whether a certificate is live.
	// Default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	c.MaxConns = cmp.Or(c.MaxConns, 8)
	c.LockTimeout = cmp.Or(c.LockTimeout, 5*time.Second)
	c.LockWait = cmp.Or(c.LockWait, 30*time.Second)
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	if c.URL == "" && c.Pool == nil {
		return errors.New("domaindb: URL (MIDSUMMER_DB_URL) is required")
	}
	if c.MaxConns < 1 {
		return fmt.Errorf("domaindb: MaxConns %d must be at least 1", c.MaxConns)
	}
	if err := c.Names.Validate(); err != nil {
		return fmt.Errorf("domaindb: Names: %w", err)
	}
	return nil
}

// CustomDomain is one row of tenant_customdomain. Zero times stand for NULL.
type CustomDomain struct {
	ID            int64
	Domain        domain.Name
	Mode          Mode
	TenantID      int64
	EventID       int64 // 0 when NULL
	Status        Status
	LastError     string
	DNSVerifiedAt time.Time
	CertIssuedAt  time.Time
	CertExpiresAt time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Owner names who the row's domain belongs to: "event-<event_id>" for an
// event's domain, else "tenant-<tenant_id>". The ownership token and the
// certificate owner records are keyed by it; the prefix keeps tenant 5 and
// event 5 apart.
func (d CustomDomain) Owner() string {
	if d.Mode == ModeEvent && d.EventID != 0 {
		return fmt.Sprintf("event-%d", d.EventID)
	}
	return fmt.Sprintf("tenant-%d", d.TenantID)
}

// CertLive reports whether the row records a certificate still valid at now.
func (d CustomDomain) CertLive(now time.Time) bool {
	return d.Status == StatusIssued && d.CertExpiresAt.After(now)
}

// Store reads and writes tenant_customdomain.
type Store struct {
	pool    *pgxpool.Pool
	ownPool bool
	cfg     Config
	log     zerolog.Logger
	tables  tables
}

// New opens the store. It does not contact the database; use Ping for readiness.
func New(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Store{pool: cfg.Pool, cfg: cfg, log: cfg.Logger.With().Str("component", "domaindb").Logger()}
	if s.pool == nil {
		pc, err := pgxpool.ParseConfig(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("domaindb: parse MIDSUMMER_DB_URL: %w", redact(err))
		}
		pc.MaxConns = cfg.MaxConns
		pool, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			return nil, fmt.Errorf("domaindb: open pool: %w", err)
		}
		s.pool, s.ownPool = pool, true
	}
	return s, nil
}

// redact drops the error text of a URL parse failure, which may echo a password.
func redact(err error) error {
	if strings.Contains(err.Error(), "@") {
		return errors.New("invalid connection URL")
	}
	return err
}

// Close closes the pool if the store opened it.
func (s *Store) Close() {
	if s.ownPool {
		s.pool.Close()
	}
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Check proves the database is usable as configured: it answers, the user
// can log in, and tenant_customdomain has every column certmgr reads and can
// be read by that user. The error says which of these failed.
func (s *Store) Check(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect to the database: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM tenant_customdomain LIMIT 0`)
	if err != nil {
		return fmt.Errorf("read tenant_customdomain: %w", err)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read tenant_customdomain: %w", err)
	}
	return nil
}

const columns = `id, domain, mode, tenant_id, event_id, status, last_error,
	dns_verified_at, cert_issued_at, cert_expires_at, created_at, updated_at`

type rawRow struct {
	id, tenantID                               int64
	eventID                                    *int64
	name, mode, status, lastError              string
	dnsVerifiedAt, certIssuedAt, certExpiresAt *time.Time
	createdAt, updatedAt                       time.Time
}

func scanRaw(row pgx.Row) (rawRow, error) {
	var r rawRow
	err := row.Scan(&r.id, &r.name, &r.mode, &r.tenantID, &r.eventID, &r.status, &r.lastError,
		&r.dnsVerifiedAt, &r.certIssuedAt, &r.certExpiresAt, &r.createdAt, &r.updatedAt)
	return r, err
}

// decode validates a raw row; a name, mode or status outside the contract makes a
// *BadRowError.
func (s *Store) decode(r rawRow) (CustomDomain, error) {
	bad := func(err error) (CustomDomain, error) {
		return CustomDomain{}, &BadRowError{ID: r.id, Domain: r.name, LastError: r.lastError, Err: err}
	}
	name, err := s.cfg.Names.Parse(r.name)
	if err != nil {
		return bad(err)
	}
	if string(name) != r.name {
		// Django stores the normalised form; anything else (upper case, Unicode,
		// trailing dot) means the row was written around the app's validation.
		return bad(fmt.Errorf("stored name is not in normal form %q", name))
	}
	mode, err := ParseMode(r.mode)
	if err != nil {
		return bad(err)
	}
	status, err := ParseStatus(r.status)
	if err != nil {
		return bad(err)
	}
	d := CustomDomain{
		ID: r.id, Domain: name, Mode: mode, TenantID: r.tenantID, Status: status,
		LastError: r.lastError, CreatedAt: r.createdAt, UpdatedAt: r.updatedAt,
		DNSVerifiedAt: orZero(r.dnsVerifiedAt), CertIssuedAt: orZero(r.certIssuedAt),
		CertExpiresAt: orZero(r.certExpiresAt),
	}
	if r.eventID != nil {
		d.EventID = *r.eventID
	}
	return d, nil
}

// orZero maps a NULL timestamp to the zero time.
func orZero(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// Get loads the row with primary key id.
func (s *Store) Get(ctx context.Context, id int64) (CustomDomain, error) {
	r, err := scanRaw(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM tenant_customdomain WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return CustomDomain{}, &NotFoundError{ID: id}
	}
	if err != nil {
		return CustomDomain{}, fmt.Errorf("load custom domain %d: %w", id, err)
	}
	return s.decode(r)
}

// GetByName loads the row of a (validated) name.
func (s *Store) GetByName(ctx context.Context, name domain.Name) (CustomDomain, error) {
	r, err := scanRaw(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM tenant_customdomain WHERE domain = $1`, string(name)))
	if errors.Is(err, pgx.ErrNoRows) {
		return CustomDomain{}, &NotFoundError{Name: string(name)}
	}
	if err != nil {
		return CustomDomain{}, fmt.Errorf("load custom domain %s: %w", name, err)
	}
	return s.decode(r)
}

// ListServable returns the domains nginx should serve: status ssl_issued, or any row
// with a recorded certificate (cert_expires_at set), ordered by name. Rows that fail
// validation are left out, returned in bad, and logged as warnings.
func (s *Store) ListServable(ctx context.Context) (domains []CustomDomain, bad []*BadRowError, err error) {
	return s.list(ctx, `WHERE status = 'ssl_issued' OR cert_expires_at IS NOT NULL`)
}

// ListAll returns every row, ordered by name, with unusable rows apart as in ListServable.
func (s *Store) ListAll(ctx context.Context) (domains []CustomDomain, bad []*BadRowError, err error) {
	return s.list(ctx, ``)
}

func (s *Store) list(ctx context.Context, where string) ([]CustomDomain, []*BadRowError, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM tenant_customdomain `+where+` ORDER BY domain`)
	if err != nil {
		return nil, nil, fmt.Errorf("list custom domains: %w", err)
	}
	defer rows.Close()
	var (
		out []CustomDomain
		bad []*BadRowError
	)
	for rows.Next() {
		r, err := scanRaw(rows)
		if err != nil {
			return nil, nil, fmt.Errorf("list custom domains: %w", err)
		}
		d, err := s.decode(r)
		var b *BadRowError
		if errors.As(err, &b) {
			s.log.Warn().Int64("row_id", b.ID).Str("domain", fmt.Sprintf("%.80q", b.Domain)).
				Err(b.Err).Msg("skipping unusable custom domain row")
			bad = append(bad, b)
			continue
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list custom domains: %w", err)
	}
	return out, bad, nil
}

// maxLastError caps last_error; it is shown in the tenant UI.
const maxLastError = 500

// cleanMessage makes msg fit for last_error: one line, printable, at most
// maxLastError characters.
func cleanMessage(msg string) string {
	msg = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return ' '
		}
		return r
	}, strings.TrimSpace(msg))
	if r := []rune(msg); len(r) > maxLastError {
		msg = string(r[:maxLastError-1]) + "…"
	}
	return msg
}

// MarkDNSVerified records a passed DNS check: status dns_verified (a row already
// ssl_issued stays so), dns_verified_at = at, last_error cleared unless
// keepError (an issued row whose renewal is still pending keeps what its
// last attempt said). It returns the status the row now has.
func (s *Store) MarkDNSVerified(ctx context.Context, id int64, at time.Time, keepError bool) (Status, error) {
	var st string
	err := s.pool.QueryRow(ctx, `UPDATE tenant_customdomain SET
		status = CASE WHEN status = 'ssl_issued' THEN status ELSE 'dns_verified' END,
		dns_verified_at = $2, last_error = CASE WHEN $3 THEN last_error ELSE '' END, updated_at = now()
		WHERE id = $1 RETURNING status`, id, at, keepError).Scan(&st)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", &NotFoundError{ID: id}
	}
	if err != nil {
		return "", fmt.Errorf("mark custom domain %d dns verified: %w", id, err)
	}
	return Status(st), nil
}

// MarkIssued records a certificate now served: status ssl_issued, its issue time and
// notAfter, last_error cleared.
func (s *Store) MarkIssued(ctx context.Context, id int64, issuedAt, notAfter time.Time) error {
	return s.exec(ctx, id, "mark issued", `UPDATE tenant_customdomain SET
		status = 'ssl_issued', cert_issued_at = $2, cert_expires_at = $3,
		last_error = '', updated_at = now()
		WHERE id = $1`, id, issuedAt, notAfter)
}

// MarkDropped records that the row's name is in no certificate any more (a
// multi-name lineage was renewed without it): status failed, the
// certificate's times cleared, last_error msg. The row then no longer counts
// as served.
func (s *Store) MarkDropped(ctx context.Context, id int64, msg string) error {
	return s.exec(ctx, id, "mark dropped", `UPDATE tenant_customdomain SET
		status = 'failed', cert_issued_at = NULL, cert_expires_at = NULL,
		last_error = $2, updated_at = now()
		WHERE id = $1`, id, cleanMessage(msg))
}

// LinkCertificate records the certificate the store serves the row's domain
// with (cert_issued_at, cert_expires_at) and nothing else: status and
// last_error stay. Rows migrated from certbot get their expiry this way
// before their first renewal. It writes only when the expiry differs and
// reports whether it wrote.
func (s *Store) LinkCertificate(ctx context.Context, id int64, issuedAt, notAfter time.Time) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE tenant_customdomain SET
		cert_issued_at = $2, cert_expires_at = $3, updated_at = now()
		WHERE id = $1 AND cert_expires_at IS DISTINCT FROM $3`, id, issuedAt, notAfter)
	if err != nil {
		return false, fmt.Errorf("link certificate of custom domain %d: %w", id, err)
	}
	return tag.RowsAffected() > 0, nil
}

// MarkFailed records a failure for the tenant. The status becomes failed unless the
// row's certificate is live (ssl_issued and cert_expires_at after the store's clock),
// in which case it stays ssl_issued. It returns the status the row now has.
func (s *Store) MarkFailed(ctx context.Context, id int64, msg string) (Status, error) {
	var st string
	err := s.pool.QueryRow(ctx, `UPDATE tenant_customdomain SET
		status = CASE WHEN status = 'ssl_issued' AND cert_expires_at > $3 THEN status ELSE 'failed' END,
		last_error = $2, updated_at = now()
		WHERE id = $1 RETURNING status`, id, cleanMessage(msg), s.cfg.Now()).Scan(&st)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", &NotFoundError{ID: id}
	}
	if err != nil {
		return "", fmt.Errorf("mark custom domain %d failed: %w", id, err)
	}
	return Status(st), nil
}

// SetLastError sets last_error alone ("" clears it).
func (s *Store) SetLastError(ctx context.Context, id int64, msg string) error {
	return s.exec(ctx, id, "set last error", `UPDATE tenant_customdomain SET
		last_error = $2, updated_at = now() WHERE id = $1`, id, cleanMessage(msg))
}

func (s *Store) exec(ctx context.Context, id int64, op, sql string, args ...any) error {
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("%s custom domain %d: %w", op, id, err)
	}
	if tag.RowsAffected() == 0 {
		return &NotFoundError{ID: id}
	}
	return nil
}
