package acme

import (
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
