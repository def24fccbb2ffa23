package testpeers

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// SharedRedisAddr is the Redis server every machine of this kind runs.
const SharedRedisAddr = "127.0.0.1:6379"

// firstTestDB..lastTestDB are the database indexes handed out to tests; 0 is
// left to anyone using Redis by hand, 14 to scripts/demo.sh (which flushes it)
// and 15 is left spare.
const (
	firstTestDB = 1
	lastTestDB  = 13
	dbLockKey   = "certmgr-test:db-lease:"
)

// RedisPeer is one Redis database that belongs to a single test.
type RedisPeer struct {
	Addr string // host:port
	DB   int    // database index, flushed before and after the test
	URL  string // redis://host:port/db, as Celery spells it
	pool *redis.Pool
}

// Pool returns a connection pool on the peer's database.
func (p *RedisPeer) Pool() *redis.Pool { return p.pool }

// Do runs one command on the peer's database and fails the test on error.
func (p *RedisPeer) Do(t testing.TB, cmd string, args ...any) any {
	t.Helper()
	c := p.pool.Get()
	defer c.Close()
	v, err := c.Do(cmd, args...)
	if err != nil {
		t.Fatalf("redis %s: %v", cmd, err)
	}
	return v
}

// Redis leases a database index of the shared Redis server for the test. The
// lease is a key in database 0, so test binaries running in parallel never
// share an index; a lease left by a process that died is taken over.
func Redis(t testing.TB) *RedisPeer {
	t.Helper()
	return redisOn(t, SharedRedisAddr)
}

func redisOn(t testing.TB, addr string) *RedisPeer {
	t.Helper()
	admin, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(2*time.Second))
	if err != nil {
		missing(t, "redis on %s: %v", addr, err)
	}
	defer admin.Close()

	owner := fmt.Sprintf("pid:%d", os.Getpid())
	db := -1
	deadline := time.Now().Add(3 * time.Minute)
	for db < 0 {
		for i := firstTestDB; i <= lastTestDB; i++ {
			key := dbLockKey + strconv.Itoa(i)
			ok, err := redis.String(admin.Do("SET", key, owner+":"+t.Name(), "NX", "EX", 3600))
			if err == nil && ok == "OK" {
				db = i
				break
			}
			if holder, err := redis.String(admin.Do("GET", key)); err == nil && leaseOrphaned(holder) {
				_, _ = admin.Do("DEL", key)
			}
		}
		if db >= 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no free redis database among %d..%d after 3m", firstTestDB, lastTestDB)
		}
		time.Sleep(100 * time.Millisecond)
	}

	p := &RedisPeer{Addr: addr, DB: db, URL: fmt.Sprintf("redis://%s/%d", addr, db)}
	p.pool = &redis.Pool{
		MaxIdle:     4,
		IdleTimeout: time.Minute,
		Dial: func() (redis.Conn, error) {
			return redis.Dial("tcp", addr, redis.DialDatabase(db), redis.DialConnectTimeout(2*time.Second))
		},
	}
	p.Do(t, "FLUSHDB")
	t.Cleanup(func() {
		c := p.pool.Get()
		_, _ = c.Do("FLUSHDB")
		c.Close()
		p.pool.Close()
		if a, err := redis.Dial("tcp", addr); err == nil {
			_, _ = a.Do("DEL", dbLockKey+strconv.Itoa(db))
			a.Close()
		}
	})
	return p
}

// leaseOrphaned tells whether the process that took a lease is gone.
func leaseOrphaned(holder string) bool {
	rest, ok := strings.CutPrefix(holder, "pid:")
	if !ok {
		return true
	}
	pidStr, _, _ := strings.Cut(rest, ":")
	pid, err := strconv.Atoi(pidStr)
	if err != nil {
		return true
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// RedisServer is a private redis-server process, for tests that stop,
// restart or break the broker.
type RedisServer struct {
	*RedisPeer
	Port    int
	dir     string
	binary  string
	durable bool
	proc    *Process
}

// StartRedisServer runs a redis-server of the test's own on a free port
// (database 0 of it is handed to the test). It keeps nothing across a
// restart, like the machine's shared Redis.
func StartRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	return startRedisServer(t, false)
}

// StartDurableRedisServer is StartRedisServer with an append-only file synced
// on every write, the way a broker that must not lose queued messages is run:
// Stop then Start brings it back with its data.
func StartDurableRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	return startRedisServer(t, true)
}

func startRedisServer(t testing.TB, durable bool) *RedisServer {
	t.Helper()
	s := &RedisServer{binary: lookBinary(t, "redis-server"), dir: t.TempDir(), Port: FreePort(t), durable: durable}
	s.Start(t)
	addr := fmt.Sprintf("127.0.0.1:%d", s.Port)
	s.RedisPeer = &RedisPeer{Addr: addr, DB: 0, URL: fmt.Sprintf("redis://%s/0", addr)}
	s.pool = &redis.Pool{
		MaxIdle: 4,
		Dial: func() (redis.Conn, error) {
			return redis.Dial("tcp", addr, redis.DialConnectTimeout(2*time.Second))
		},
	}
	t.Cleanup(func() { s.pool.Close() })
	return s
}

// Start starts (or restarts) the server on its port; a durable one replays
// its append-only file first.
func (s *RedisServer) Start(t testing.TB) {
	t.Helper()
	args := []string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--save", "", "--dir", s.dir, "--appendonly", "no"}
	if s.durable {
		args = append(args[:len(args)-1], "yes", "--appendfsync", "always")
	}
	s.proc = startProcess(t, filepath.Join(s.dir, "redis-"+strconv.FormatInt(time.Now().UnixNano(), 36)+".log"), nil, s.binary, args...)
	if err := waitFor(20*time.Second, func() error {
		c, err := redis.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), redis.DialConnectTimeout(time.Second))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Do("PING") // LOADING while the file is replayed
		return err
	}); err != nil {
		t.Fatalf("redis-server on %d: %v", s.Port, err)
	}
}

// Stop kills the server at once, as a crash would.
func (s *RedisServer) Stop() {
	if s.proc != nil {
		s.proc.Kill()
		s.proc = nil
	}
}
