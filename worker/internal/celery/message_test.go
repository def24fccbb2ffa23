package celery

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeTaskFixtures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc     string
		file     string
		protocol int
		id       string
		eta      string
		expires  string
	}{
		{desc: "protocol 2 send_task", file: "p2_send_task__db0__certmgr__0.json", protocol: 2, id: "f5eeff14-d8b2-45ef-a63f-07e699dbe195"},
		{desc: "protocol 2 routed", file: "p2_send_task_routed_noqueue__db0__certmgr__0.json", protocol: 2, id: "68d5c3e7-bf77-43b9-9108-4fc422d4e52d"},
		{desc: "protocol 2 countdown", file: "p2_apply_async_countdown30__db0__certmgr__0.json", protocol: 2, id: "f7a84176-35fc-4831-b7a4-1d3233a9e33a", eta: "2026-11-28T05:12:10.867485Z"},
		{desc: "protocol 2 expires", file: "p2_send_task_expires3600__db0__certmgr__0.json", protocol: 2, id: "70a9a669-a606-4f77-8596-b07ddfb2a129", expires: "2026-11-28T06:11:40.900259Z"},
		{desc: "protocol 2 priority", file: "p2_apply_async_priority5__db0__certmgr__SEP__3__0.json", protocol: 2, id: "54ce5aa4-0fe0-49d7-a16c-01b42b287366"},
		{desc: "protocol 1", file: "p1_send_task__db0__certmgr__0.json", protocol: 1, id: "e6e4860d-a0f1-48c3-9e93-ff8c8b4c5512"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			env, err := ParseEnvelope(readFixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			m, err := DecodeTask(env)
			if err != nil {
				t.Fatal(err)
			}
			if m.Protocol != tt.protocol || m.ID != tt.id || m.Task != "tenant.tasks.issue_custom_domain_task" {
				t.Errorf("got protocol %d id %q task %q", m.Protocol, m.ID, m.Task)
			}
			if len(m.Args) != 1 || string(m.Args[0]) != "42" {
				t.Errorf("args = %s", m.Args)
			}
			if string(m.Kwargs["force"]) != "true" {
				t.Errorf("kwargs = %v", m.Kwargs)
			}
			if m.RootID != tt.id {
				t.Errorf("root id = %q", m.RootID)
			}
			checkTime(t, "eta", m.ETA, tt.eta)
			checkTime(t, "expires", m.Expires, tt.expires)
		})
	}
}

func checkTime(t *testing.T, what string, got time.Time, want string) {
	t.Helper()
	if want == "" {
		if !got.IsZero() {
			t.Errorf("%s = %v, want none", what, got)
		}
		return
	}
	w, _ := time.Parse(time.RFC3339Nano, want)
	if !got.Equal(w) {
		t.Errorf("%s = %v, want %v", what, got, w)
	}
}

func TestPickleRefusedUndecoded(t *testing.T) {
	t.Parallel()
	// A pickle body that would run os.system if unpickled; it must never be looked at.
	env := &Envelope{
		Body:        base64.StdEncoding.EncodeToString([]byte("cos\nsystem\n(S'touch /tmp/pwned'\ntR.")),
		ContentType: "application/x-python-serialize",
		Headers:     json.RawMessage(`{"task": "x", "id": "1"}`),
		Properties:  Properties{BodyEncoding: "base64", DeliveryTag: "t"},
	}
	_, err := DecodeTask(env)
	var cte *ContentTypeError
	if !errors.As(err, &cte) || cte.ContentType != "application/x-python-serialize" {
		t.Fatalf("err = %v, want ContentTypeError", err)
	}
}

func TestTimeLimit(t *testing.T) {
	t.Parallel()
	raw := strings.Replace(string(readFixture(t, "p2_send_task__db0__certmgr__0.json")), `"timelimit": [null, null]`, `"timelimit": [30, 10.5]`, 1)
	env, err := ParseEnvelope([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeTask(env)
	if err != nil {
		t.Fatal(err)
	}
	if m.TimeLimit() != 10500*time.Millisecond {
		t.Errorf("TimeLimit = %v, want 10.5s", m.TimeLimit())
	}
}

func TestRetryEnvelope(t *testing.T) {
	t.Parallel()
	for _, file := range []string{"p2_send_task__db0__certmgr__0.json", "p1_send_task__db0__certmgr__0.json"} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			raw := readFixture(t, file)
			eta := time.Date(2026, 11, 28, 6, 0, 0, 123456000, time.UTC)
			out, err := RetryEnvelope(raw, 1, eta, "new-tag")
			if err != nil {
				t.Fatal(err)
			}
			env, err := ParseEnvelope(out)
			if err != nil {
				t.Fatal(err)
			}
			if env.Properties.DeliveryTag != "new-tag" {
				t.Errorf("delivery tag = %q", env.Properties.DeliveryTag)
			}
			m, err := DecodeTask(env)
			if err != nil {
				t.Fatal(err)
			}
			orig, _ := ParseEnvelope(raw)
			om, _ := DecodeTask(orig)
			if m.Retries != 1 || !m.ETA.Equal(eta) || m.ID != om.ID || string(m.Args[0]) != "42" {
				t.Errorf("retry message = %+v", m)
			}
		})
	}
}

func TestMarkRedelivered(t *testing.T) {
	t.Parallel()
	out, err := MarkRedelivered(readFixture(t, "p2_send_task__db0__certmgr__0.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"redelivered":true`) {
		t.Errorf("no redelivered flag: %s", out)
	}
	if _, err := ParseEnvelope(out); err != nil {
		t.Fatal(err)
	}
}

func TestQueueForPriority(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		pri  int
		want string
	}{
		{"zero", 0, "certmgr"}, {"two", 2, "certmgr"}, {"five", 5, "certmgr\x06\x163"},
		{"six", 6, "certmgr\x06\x166"}, {"nine", 9, "certmgr\x06\x169"},
	}
	for _, tt := range tests {
		if got := QueueForPriority("certmgr", tt.pri); got != tt.want {
			t.Errorf("%s: got %q want %q", tt.desc, got, tt.want)
		}
	}
}

func TestResultMetaMatchesCelery(t *testing.T) {
	t.Parallel()
	var want map[string]any
	if err := json.Unmarshal(readFixture(t, "result_setex_db1__SUCCESS.json"), &want); err != nil {
		t.Fatal(err)
	}
	done, _ := time.Parse("2006-01-02T15:04:05.999999", want["date_done"].(string))
	m := NewResultMeta(want["task_id"].(string), StateSuccess, want["result"], "", done)
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	_ = json.Unmarshal(b, &got)
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("got %s\nwant %s", gb, wb)
	}
}

func TestControlRequest(t *testing.T) {
	t.Parallel()
	req, err := DecodeControl(readFixture(t, "pidbox_publish__ping__request.json"))
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "ping" || req.ReplyTo == nil || req.ReplyTo.RoutingKey != "a9953fbd-eef6-3da5-9aca-1ac33c15d9f5" || !req.For("certmgr@x") {
		t.Errorf("request = %+v", req)
	}
	req.Destination = []string{"celery@other"}
	if req.For("certmgr@x") {
		t.Error("answered a request for another node")
	}
}
