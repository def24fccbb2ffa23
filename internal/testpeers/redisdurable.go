package testpeers

import (
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// DurableRedisServer is a private redis-server that keeps its data across a
// restart: append-only file with fsync on every write, the way a broker that
// must not lose queued messages is run. Stop kills it (SIGKILL); Start brings
// it back on the same port with the same data.
type DurableRedisServer struct {
	*RedisPeer
	Port   int
	dir    string
	binary string
	proc   *Process
}

// StartDurableRedisServer runs a durable redis-server of the test's own on a
// free port; database 0 of it is handed to the test.
func StartDurableRedisServer(t testing.TB) *DurableRedisServer {
	t.Helper()
	s := &DurableRedisServer{binary: lookBinary(t, "redis-server"), dir: t.TempDir(), Port: FreePort(t)}
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

// Start starts (or restarts) the server; it replays its append-only file.
func (s *DurableRedisServer) Start(t testing.TB) {
	t.Helper()
	s.proc = startProcess(t, filepath.Join(s.dir, "redis-"+strconv.FormatInt(time.Now().UnixNano(), 36)+".log"), nil, s.binary,
		"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", s.dir)
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
func (s *DurableRedisServer) Stop() {
	if s.proc != nil {
		s.proc.Kill()
		s.proc = nil
	}
}
