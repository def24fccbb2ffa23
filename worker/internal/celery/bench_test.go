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

// BenchmarkEncodeTask is what a callback, chain step or chord body costs
// to build before it is published.
func BenchmarkEncodeTask(b *testing.B) {
	sig := []byte(`{"task": "tenant.tasks.notify", "args": [42], "kwargs": {}, "options": {"task_id": "5f0c1d2e-0000-4000-8000-000000000000", "queue": "django"}, "subtask_type": null, "immutable": false, "chord_size": null}`)
	b.ReportAllocs()
	for b.Loop() {
		s, err := ParseSignature(sig)
		if err != nil {
			b.Fatal(err)
		}
		var id, queue string
		s.Option("task_id", &id)
		s.Option("queue", &queue)
		if _, err := EncodeTask(TaskRequest{ID: id, Task: s.Task, Args: s.Args, Kwargs: s.Kwargs, Queue: queue, RootID: "r", ParentID: "p"}); err != nil {
			b.Fatal(err)
		}
	}
}
