package acme

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkSave measures writing one version of a lineage and making it live
// (four archive files with fsync, a staged live directory, the exchange).
func BenchmarkSave(b *testing.B) {
	s := NewStore(b.TempDir())
	ca := newTestCA(b)
	now := time.Now()
	v := ca.issue(b, now, now.Add(90*24*time.Hour), "bench.example.com")
	for b.Loop() {
		if _, err := s.Save("bench.example.com", v, RenewalParams{}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStore lays out n certbot lineages (one certificate reused: parsing
// cost is the same) for the Serving benchmarks.
func benchStore(b *testing.B, n int) *Store {
	b.Helper()
	dir := b.TempDir()
	ca := newTestCA(b)
	now := time.Now()
	v := ca.issue(b, now, now.Add(90*24*time.Hour), "bench.example.com")
	conf := confFor(dir, "x", nil, "bench.example.com")
	for i := range n {
		writeCertbotLineage(b, dir, fmt.Sprintf("lineage-%05d", i), conf, v)
	}
	return NewStore(dir)
}

// BenchmarkServing3300Warm is what regen-nginx and each sweep pay to map
// every name to its lineage in a 3,300-lineage store once the cache is warm
// (two stat calls per lineage).
func BenchmarkServing3300Warm(b *testing.B) {
	s := benchStore(b, 3300)
	if _, err := s.Serving(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Serving(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServing3300Cold is the first call of a process (every certificate
// and key read and checked).
func BenchmarkServing3300Cold(b *testing.B) {
	s := benchStore(b, 3300)
	for b.Loop() {
		s.cacheMu.Lock()
		clear(s.cache)
		s.cacheMu.Unlock()
		if _, err := s.Serving(); err != nil {
			b.Fatal(err)
		}
	}
}
