package celery

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary list entries to the decoder the worker runs on
// every message: it must return an error or a task, never panic, and a task it
// accepts must survive the retry rewrite.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "p*_*.json"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"body":"","properties":{"delivery_tag":"x"}}`))
	f.Add([]byte(`{"body":"W10=","content-type":"application/json","headers":{"task":"t","id":"i"},"properties":{"delivery_tag":"x","body_encoding":"base64"}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		fast, fastErr := DecodeMessage(raw)
		env, err := ParseEnvelope(raw)
		var m *TaskMessage
		if err == nil {
			m, err = DecodeTask(env)
		}
		if (err == nil) != (fastErr == nil) {
			t.Fatalf("DecodeMessage and ParseEnvelope+DecodeTask disagree: %v vs %v", fastErr, err)
		}
		if err != nil {
			return
		}
		if fast.ID != m.ID || fast.Task != m.Task || fast.Retries != m.Retries || !fast.ETA.Equal(m.ETA) || fast.Priority != m.Priority {
			t.Fatalf("decoders disagree: %+v vs %+v", fast, m)
		}
		if m.ID == "" || m.Task == "" {
			t.Fatalf("accepted a task without id or name: %+v", m)
		}
		out, err := RetryEnvelope(raw, m.Retries+1, time.Unix(0, 0), "tag")
		if err != nil {
			return
		}
		env2, err := ParseEnvelope(out)
		if err != nil {
			t.Fatalf("retry envelope unparsable: %v", err)
		}
		m2, err := DecodeTask(env2)
		if err != nil {
			t.Fatalf("retry envelope undecodable: %v\n%s", err, out)
		}
		if m2.ID != m.ID || m2.Retries != m.Retries+1 {
			t.Fatalf("retry changed identity: %+v -> %+v", m, m2)
		}
	})
}
