package testpeers

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// RedisTLS is a redis-server of the test's own that speaks only TLS, with a
// CA the test generated. Its certificate names localhost only (not
// 127.0.0.1), so connecting by address fails the host name check. It asks
// for a client certificate (signed by the same CA) and refuses clients
// without one.
type RedisTLS struct {
	Port       int
	CAFile     string // the CA that signed the server and client certificates
	ClientCert string
	ClientKey  string
	proc       *Process
}

// StartRedisTLS starts a TLS-only redis-server on a free port.
func StartRedisTLS(t testing.TB) *RedisTLS {
	t.Helper()
	bin := lookBinary(t, "redis-server")
	dir := t.TempDir()
	ca := NewCA(t, "certmgr redis test CA")
	s := &RedisTLS{Port: FreePort(t), CAFile: filepath.Join(dir, "ca.pem")}
	ca.WriteFile(t, s.CAFile)
	serverCert, serverKey := filepath.Join(dir, "localhost.pem"), filepath.Join(dir, "localhost.key")
	ca.Issue(t, LeafOptions{Names: []string{"localhost"}}).WriteFiles(t, serverCert, serverKey)
	s.ClientCert, s.ClientKey = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	ca.Issue(t, LeafOptions{CommonName: "client", Usage: x509.ExtKeyUsageClientAuth}).WriteFiles(t, s.ClientCert, s.ClientKey)
	s.proc = startProcess(t, filepath.Join(dir, "redis.log"), nil, bin,
		"--port", "0", "--tls-port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--tls-cert-file", serverCert, "--tls-key-file", serverKey, "--tls-ca-cert-file", s.CAFile,
		"--tls-auth-clients", "yes", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", s.Port), 20*time.Second); err != nil {
		t.Fatalf("redis-server with TLS on %d: %v", s.Port, err)
	}
	return s
}

// URL is a rediss:// URL for database db with every Celery ssl_* parameter
// (CA, client certificate and key, CERT_REQUIRED).
func (s *RedisTLS) URL(db int) string {
	return fmt.Sprintf("rediss://localhost:%d/%d?ssl_cert_reqs=required&ssl_ca_certs=%s&ssl_certfile=%s&ssl_keyfile=%s",
		s.Port, db, s.CAFile, s.ClientCert, s.ClientKey)
}

// RedisSocket is a redis-server of the test's own listening on a Unix socket
// only.
type RedisSocket struct {
	Path string
	pool *redis.Pool
	proc *Process
}

// StartRedisSocket starts a redis-server on a Unix socket in a temporary
// directory, with no TCP port.
func StartRedisSocket(t testing.TB) *RedisSocket {
	t.Helper()
	bin := lookBinary(t, "redis-server")
	dir := t.TempDir()
	s := &RedisSocket{Path: filepath.Join(dir, "redis.sock")}
	s.proc = startProcess(t, filepath.Join(dir, "redis.log"), nil, bin,
		"--port", "0", "--unixsocket", s.Path, "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir)
	s.pool = &redis.Pool{MaxIdle: 2, Dial: func() (redis.Conn, error) {
		return redis.Dial("unix", s.Path, redis.DialConnectTimeout(2*time.Second))
	}}
	t.Cleanup(func() { s.pool.Close() })
	if err := waitFor(20*time.Second, func() error {
		c := s.pool.Get()
		defer c.Close()
		_, err := c.Do("PING")
		return err
	}); err != nil {
		t.Fatalf("redis-server on %s: %v", s.Path, err)
	}
	return s
}

// Pool is a connection pool on the socket's database 0.
func (s *RedisSocket) Pool() *redis.Pool { return s.pool }

// RedisSentinels is a master, a replica and three sentinels (redis-server
// --sentinel, what Debian's redis-sentinel runs) watching them as
// "mymaster", all of the test's own. Failover happens one second after the
// master stops answering.
type RedisSentinels struct {
	MasterName    string
	SentinelPorts []int
	ports         map[int]*Process // data servers by port
}

// StartRedisSentinels starts the five servers and waits until every sentinel
// knows the replica (so that a failover can happen).
func StartRedisSentinels(t testing.TB) *RedisSentinels {
	t.Helper()
	bin := lookBinary(t, "redis-server")
	dir := t.TempDir()
	s := &RedisSentinels{MasterName: "mymaster", ports: map[int]*Process{}}
	master, replica := FreePort(t), FreePort(t)
	for _, p := range []int{master, replica} {
		args := []string{"--port", strconv.Itoa(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", t.TempDir()}
		if p == replica {
			args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(master))
		}
		s.ports[p] = startProcess(t, filepath.Join(dir, fmt.Sprintf("redis-%d.log", p)), nil, bin, args...)
		if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", p), 20*time.Second); err != nil {
			t.Fatalf("redis-server on %d: %v", p, err)
		}
	}
	for i := range 3 {
		port := FreePort(t)
		conf := filepath.Join(dir, fmt.Sprintf("sentinel-%d.conf", i))
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 5000\nsentinel parallel-syncs %s 1\n",
			port, dir, s.MasterName, master, s.MasterName, s.MasterName, s.MasterName)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		startProcess(t, filepath.Join(dir, fmt.Sprintf("sentinel-%d.log", i)), nil, bin, conf, "--sentinel")
		s.SentinelPorts = append(s.SentinelPorts, port)
	}
	if err := waitFor(60*time.Second, func() error {
		for _, p := range s.SentinelPorts {
			c, err := redis.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p), redis.DialConnectTimeout(time.Second))
			if err != nil {
				return err
			}
			reps, err := redis.Values(c.Do("SENTINEL", "REPLICAS", s.MasterName))
			others, err2 := redis.Values(c.Do("SENTINEL", "SENTINELS", s.MasterName))
			c.Close()
			if err != nil || err2 != nil || len(reps) == 0 || len(others) < 2 {
				return fmt.Errorf("sentinel %d does not know the replica and the other sentinels yet", p)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("sentinels: %v", err)
	}
	return s
}

// URL is the sentinel:// URL of the three sentinels, for database db.
func (s *RedisSentinels) URL(db int) string {
	var parts []string
	for _, p := range s.SentinelPorts {
		parts = append(parts, fmt.Sprintf("sentinel://127.0.0.1:%d/%d", p, db))
	}
	return strings.Join(parts, ";")
}

// Master is the port of the current master, as the first sentinel answering sees it.
func (s *RedisSentinels) Master(t testing.TB) int {
	t.Helper()
	for _, p := range s.SentinelPorts {
		c, err := redis.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p), redis.DialConnectTimeout(time.Second))
		if err != nil {
			continue
		}
		hp, err := redis.Strings(c.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName))
		c.Close()
		if err == nil && len(hp) == 2 {
			n, _ := strconv.Atoi(hp[1])
			return n
		}
	}
	t.Fatal("no sentinel names a master")
	return 0
}

// Conn connects to the data server on port (database db).
func (s *RedisSentinels) Conn(t testing.TB, port, db int) redis.Conn {
	t.Helper()
	c, err := redis.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), redis.DialDatabase(db), redis.DialConnectTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Kill stops the data server on port at once, as a crash would.
func (s *RedisSentinels) Kill(port int) { s.ports[port].Kill() }

// Other is the port of the data server that is not port.
func (s *RedisSentinels) Other(port int) int {
	for p := range s.ports {
		if p != port {
			return p
		}
	}
	return 0
}

// StartRedisWithout starts a redis-server of the test's own on a free port
// with the named commands disabled (rename-command NAME ""): it answers them
// "ERR unknown command", as an older server that lacks them does (BLMOVE
// before Redis 6.2). It returns the server's redis:// URL for database 0.
func StartRedisWithout(t testing.TB, commands ...string) string {
	t.Helper()
	bin := lookBinary(t, "redis-server")
	dir := t.TempDir()
	port := FreePort(t)
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
	for _, c := range commands {
		args = append(args, "--rename-command", c, "")
	}
	startProcess(t, filepath.Join(dir, "redis.log"), nil, bin, args...)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitTCP(addr, 20*time.Second); err != nil {
		t.Fatalf("redis-server on %d: %v", port, err)
	}
	return "redis://" + addr + "/0"
}
