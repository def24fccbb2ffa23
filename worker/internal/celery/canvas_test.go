package celery

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"
)

// EncodeTask writes what Celery's producer writes: the same envelope,
// header and property keys as the captured send_task, a body of
// [args, kwargs, embed], and a message the decoder reads back whole.
func TestEncodeTaskMatchesCapture(t *testing.T) {
	t.Parallel()
	captured, err := os.ReadFile(filepath.Join("testdata", "p2_send_task__db0__certmgr__0.json"))
	if err != nil {
		t.Fatal(err)
	}
	idx := 2
	hard := 30.0
	chord := json.RawMessage(`{"task": "t.body", "args": [], "kwargs": {}, "options": {"task_id": "b"}, "subtask_type": null, "immutable": false, "chord_size": null}`)
	raw, err := EncodeTask(TaskRequest{
		ID: "c1", Task: "tenant.tasks.next", Args: []json.RawMessage{json.RawMessage(`42`)},
		Kwargs: map[string]json.RawMessage{"force": json.RawMessage(`true`)}, GroupID: "g", GroupIndex: &idx,
		HardLimit: &hard, RootID: "r", ParentID: "p", Origin: "certmgr@test", Priority: 3, Queue: "certmgr",
		ETA:   time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		Embed: Embed{Chain: []json.RawMessage{chord}, Chord: chord},
	})
	if err != nil {
		t.Fatal(err)
	}
	var want, got map[string]json.RawMessage
	_ = json.Unmarshal(captured, &want)
	_ = json.Unmarshal(raw, &got)
	for _, part := range []string{"", "headers", "properties"} {
		w, g := want, got
		if part != "" {
			_ = json.Unmarshal(want[part], &w)
			_ = json.Unmarshal(got[part], &g)
		}
		if !reflect.DeepEqual(keys(w), keys(g)) {
			t.Errorf("%s keys:\n got  %v\n want %v", part, keys(g), keys(w))
		}
	}
	m, err := DecodeMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "c1" || m.Task != "tenant.tasks.next" || m.GroupID != "g" || m.GroupIndex == nil || *m.GroupIndex != 2 ||
		m.RootID != "r" || m.ParentID != "p" || m.HardLimit != 30*time.Second || !m.ETA.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) ||
		m.Priority != 3 || m.RoutingKey != "certmgr" || len(m.Embed.Chain) != 1 || len(m.Embed.Chord) == 0 {
		t.Errorf("decoded back: %+v", m)
	}
}

func keys(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
