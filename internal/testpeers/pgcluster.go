package testpeers

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/midsummer/certmgr/internal/schema"
)

// PGBinDir is where Debian puts PostgreSQL 15's server programs.
const PGBinDir = "/usr/lib/postgresql/15/bin"

// PGCluster is a private PostgreSQL cluster (initdb on a free port, trust
// auth) that a test may stop and start without disturbing the shared server.
// Its database postgres holds tenant_customdomain in the public schema.
type PGCluster struct {
	*PostgresPeer
	Port int
	dir  string
	as   []string // runs a command as the postgres user when the test is root
}

// StartPGCluster creates and starts a cluster of the test's own; it is
// stopped and removed when the test ends.
func StartPGCluster(t testing.TB) *PGCluster {
	t.Helper()
	if _, err := os.Stat(filepath.Join(PGBinDir, "initdb")); err != nil {
		missing(t, "%s/initdb not found (apt-get install postgresql-15)", PGBinDir)
	}
	// initdb refuses to run as root: the cluster then belongs to postgres,
	// in a directory outside the test's 0700 temp dir.
	dir, err := os.MkdirTemp("", "certmgr-pgcluster-")
	if err != nil {
		t.Fatalf("pg cluster dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	c := &PGCluster{Port: FreePort(t), dir: dir}
	if os.Geteuid() == 0 {
		c.as = []string{"/usr/sbin/runuser", "-u", "postgres", "--"}
		out, err := exec.Command("chown", "postgres:postgres", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("chown %s: %v %s", dir, err, out)
		}
	}
	if out, err := c.run(60*time.Second, filepath.Join(PGBinDir, "initdb"), "-D", c.data(), "-U", "postgres",
		"--auth=trust", "--no-sync", "-E", "UTF8"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	c.Start(t)
	t.Cleanup(func() { _, _ = c.pgctl(30*time.Second, "stop", "-m", "immediate") })

	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
	c.PostgresPeer = &PostgresPeer{URL: url, Schema: "public"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect to private cluster: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, schema.SQL); err != nil {
		t.Fatalf("create tenant_customdomain: %v", err)
	}
	return c
}

func (c *PGCluster) data() string { return filepath.Join(c.dir, "data") }

func (c *PGCluster) run(timeout time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append(append(append([]string{}, c.as...), name), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

func (c *PGCluster) pgctl(timeout time.Duration, args ...string) ([]byte, error) {
	return c.run(timeout, filepath.Join(PGBinDir, "pg_ctl"), append([]string{"-D", c.data()}, args...)...)
}

// Start starts (or restarts) the cluster on its port and waits until it
// accepts connections.
func (c *PGCluster) Start(t testing.TB) {
	t.Helper()
	opts := "-p " + strconv.Itoa(c.Port) + " -k " + c.dir + " -c listen_addresses=127.0.0.1 -c fsync=off"
	if out, err := c.pgctl(60*time.Second, "-l", filepath.Join(c.dir, "postgres.log"), "-o", opts, "-w", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, tail(log, 4000))
	}
}

// Stop shuts the cluster down at once (pg_ctl stop -m immediate): every
// connection is cut, as when the database host goes away.
func (c *PGCluster) Stop(t testing.TB) {
	t.Helper()
	if out, err := c.pgctl(30*time.Second, "stop", "-m", "immediate", "-w"); err != nil {
		t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}
