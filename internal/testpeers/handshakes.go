package testpeers

import (
	"crypto/tls"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Served reports whether a handshake with SNI name got name's certificate.
func Served(st tls.ConnectionState, name string) bool {
	if len(st.PeerCertificates) == 0 {
		return false
	}
	for _, n := range st.PeerCertificates[0].DNSNames {
		if n == name {
			return true
		}
	}
	return false
}

// Handshake makes one full TLS handshake (no resumption, no verification)
// with SNI name to addr and reports whether accept holds for it.
func Handshake(addr, name string, accept func(tls.ConnectionState, string) bool) bool {
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		return false
	}
	st := conn.ConnectionState()
	conn.Close()
	return accept(st, name)
}

// Handshakes runs full handshakes to addr from clients goroutines for dur,
// each with an SNI drawn at random from name(0..n-1), and counts those
// accept holds for (ok) and the rest (bad): the load the nginx benchmarks
// measure.
func Handshakes(addr string, n int, name func(int) string, clients int, dur time.Duration, accept func(tls.ConnectionState, string) bool) (ok, bad int64) {
	var o, b atomic.Int64
	stop := time.Now().Add(dur)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if Handshake(addr, name(rand.IntN(n)), accept) {
					o.Add(1)
				} else {
					b.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return o.Load(), b.Load()
}

// WarmNames makes one handshake per name(0..n-1) from clients goroutines
// (filling a server's certificate cache) and returns how many accept did
// not hold for.
func WarmNames(addr string, n int, name func(int) string, clients int, accept func(tls.ConnectionState, string) bool) (bad int64) {
	var next, b atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if !Handshake(addr, name(i), accept) {
					b.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return b.Load()
}
