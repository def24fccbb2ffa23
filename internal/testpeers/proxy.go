package testpeers

import (
	"bytes"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// TCPProxy forwards connections to a server (PostgreSQL, in the tests that
// take it away). Cut drops every connection and
// refuses new ones until Restore, which is what an outage looks like to a
// client. Blackhole is a silent partition instead: every connection, open
// or new, stays open and has its bytes taken and dropped, in both
// directions, with no reset. Heal forwards new connections again; the ones
// that lived through the partition stay dead, as when a NAT or conntrack
// table forgot them. KillOn closes connections that send a given string.
type TCPProxy struct {
	t      testing.TB
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
	black  bool
	pairs  []*proxyPair
	kill   []byte // close a connection whose client sends this, kills times
	kills  int
	killed chan struct{} // one value per connection killed
}

// proxyPair is one proxied connection.
type proxyPair struct {
	c, up net.Conn
	dead  atomic.Bool // bytes are dropped (blackholed)
}

// NewTCPProxy listens on a free port of 127.0.0.1 and forwards to target
// until the test ends.
func NewTCPProxy(t testing.TB, target string) *TCPProxy {
	p := &TCPProxy{t: t, target: target, killed: make(chan struct{}, 100)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.Cut)
	return p
}

func (p *TCPProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			pp := &proxyPair{c: c, up: up}
			p.mu.Lock()
			pp.dead.Store(p.black)
			p.conns = append(p.conns, c, up)
			p.pairs = append(p.pairs, pp)
			p.mu.Unlock()
			// A dead connection's end is not passed on either: a
			// partition delivers no FIN.
			go func() { p.pipe(pp, up, c, true); closeUnlessDead(pp, up) }()
			go func() { p.pipe(pp, c, up, false); closeUnlessDead(pp, c) }()
		}
	}()
}

// pipe copies src to dst until either fails, dropping what it reads while
// pp is dead, and closing both when the client sends p.kill.
func (p *TCPProxy) pipe(pp *proxyPair, dst, src net.Conn, fromClient bool) {
	buf := make([]byte, 32<<10)
	var tail []byte // the end of what came before, for a match across reads
	for {
		n, err := src.Read(buf)
		if n > 0 && fromClient && p.shouldKill(&tail, buf[:n]) {
			pp.c.Close()
			pp.up.Close()
			p.killed <- struct{}{}
			return
		}
		if n > 0 && !pp.dead.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func closeUnlessDead(pp *proxyPair, c net.Conn) {
	if !pp.dead.Load() {
		c.Close()
	}
}

func (p *TCPProxy) shouldKill(tail *[]byte, b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kills == 0 {
		return false
	}
	seen := append(*tail, b...)
	if bytes.Contains(seen, p.kill) {
		p.kills--
		return true
	}
	*tail = append([]byte(nil), seen[max(0, len(seen)-len(p.kill)):]...)
	return false
}

// KillOn closes the next times connections whose client sends s (mid-query,
// as a failing network or a restarting server does), and reports each on
// Killed.
func (p *TCPProxy) KillOn(s string, times int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.kill, p.kills = []byte(s), times
}

// Blackhole starts a silent partition.
func (p *TCPProxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.black = true
	for _, pp := range p.pairs {
		pp.dead.Store(true)
	}
}

// Heal ends the partition for new connections.
func (p *TCPProxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.black = false
}

// Killed receives a value for each connection KillOn closed.
func (p *TCPProxy) Killed() <-chan struct{} { return p.killed }

// Addr is the address clients connect to.
func (p *TCPProxy) Addr() string { return p.addr }

// Cut drops every connection and refuses new ones until Restore.
func (p *TCPProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns, p.pairs = nil, nil
}

// Restore forwards again, on the same address.
func (p *TCPProxy) Restore() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
}

// Via is the URL raw with its host replaced by the proxy's address.
func (p *TCPProxy) Via(t testing.TB, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.addr
	return u.String()
}
