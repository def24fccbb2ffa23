package testpeers

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/midsummer/certmgr/internal/schema"
)

// DefaultPostgresURL is the server every machine of this kind runs (trust
// auth); TEST_POSTGRES_URL overrides it.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// PostgresPeer is a PostgreSQL schema that belongs to a single test, with the
// contract's tenant_customdomain table in it.
type PostgresPeer struct {
	URL    string // connection URL whose search_path is the test's schema
	Schema string
}

// Postgres creates a fresh schema holding tenant_customdomain and drops it
// when the test ends.
func Postgres(t testing.TB) *PostgresPeer {
	t.Helper()
	base := DefaultPostgresURL
	if v := os.Getenv("TEST_POSTGRES_URL"); v != "" {
		base = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		missing(t, "postgres at %s: %v", base, err)
	}
	defer admin.Close(context.Background())

	name := "t_" + RandomHex(6)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Logf("drop schema %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", name, err)
		}
	})

	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", base, err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	p := &PostgresPeer{URL: u.String(), Schema: name}

	c, err := pgx.Connect(ctx, p.URL)
	if err != nil {
		t.Fatalf("connect to schema %s: %v", name, err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, schema.SQL); err != nil {
		t.Fatalf("create tenant_customdomain: %v", err)
	}
	return p
}

// Pool opens a pgx pool on the test's schema, closed when the test ends.
func (p *PostgresPeer) Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), p.URL)
	if err != nil {
		t.Fatalf("pgx pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Conn opens a connection on the test's schema, closed when the test ends.
func (p *PostgresPeer) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.URL)
	if err != nil {
		t.Fatalf("connect to %s: %v", p, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// Exec runs one statement on the test's schema and fails the test on error.
func (p *PostgresPeer) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.Conn(t).Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// InsertDomain adds a row the way the Django app does when a tenant adds a
// domain (status pending) and returns its id.
func (p *PostgresPeer) InsertDomain(t testing.TB, name string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var id int64
	err := p.Conn(t).QueryRow(ctx, `INSERT INTO tenant_customdomain (domain, mode, tenant_id, status)
		VALUES ($1, 'tenant', 1, 'pending') RETURNING id`, name).Scan(&id)
	if err != nil {
		t.Fatalf("insert domain %q: %v", name, err)
	}
	return id
}

// String names the peer in test logs.
func (p *PostgresPeer) String() string { return fmt.Sprintf("postgres schema %s", p.Schema) }
