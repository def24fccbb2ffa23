package celery

import "testing"

// BenchmarkDecodeMessage is the worker's per-message decoding cost.
func BenchmarkDecodeMessage(b *testing.B) {
	raw := readFixture(b, "p2_send_task__db0__certmgr__0.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := DecodeMessage(raw); err != nil {
			b.Fatal(err)
		}
	}
}
