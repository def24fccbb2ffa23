package redisbroker

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/midsummer/certmgr/internal/testpeers"
)

// pythonCelery runs worker/testdata/celery_options.py: Python Celery with
// broker_transport_options, as a Django app configured the same way.
type pythonCelery struct {
	script, broker, options string
}

func newPythonCelery(t *testing.T, brokerURL, options string) *pythonCelery {
	t.Helper()
	testpeers.Celery(t, brokerURL) // fails (or skips outside CI) without python3-celery
	dir, _ := os.Getwd()
	for {
		p := filepath.Join(dir, "testdata", "celery_options.py")
		if _, err := os.Stat(p); err == nil {
			return &pythonCelery{script: p, broker: brokerURL, options: options}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testdata/celery_options.py not found above the package")
		}
		dir = parent
	}
}

func (p *pythonCelery) run(t *testing.T, args ...string) string {
	t.Helper()
	args = append([]string{p.script, args[0], "--broker", p.broker, "--options", p.options}, args[1:]...)
	out, err := exec.Command(testpeers.Python, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("celery_options.py %v: %v\n%s", args[1], err, stderr)
	}
	return string(out)
}

func (p *pythonCelery) send(t *testing.T, task string, priority int) string {
	t.Helper()
	return strings.TrimSpace(p.run(t, "send", "--task", task, "--priority", strconv.Itoa(priority)))
}

// Python Celery configured with global_keyprefix, sep and ten priority steps
// (what Celery's docs suggest) puts its messages where this broker takes
// them, in priority order; a message left unacknowledged past
// visibility_timeout (from the options, over the worker's own) is restored
// to the prefixed list kombu would restore it to.
func TestTransportOptionsMatchPythonProducer(t *testing.T) {
	t.Parallel()
	r := testpeers.Redis(t)
	const opts = `{"global_keyprefix": "midsummer:", "sep": ":", "priority_steps": [0,1,2,3,4,5,6,7,8,9], "queue_order_strategy": "priority", "visibility_timeout": 1}`
	py := newPythonCelery(t, r.URL, opts)
	ids := map[int]string{}
	for _, pri := range []int{7, 0, 4} {
		ids[pri] = py.send(t, "test.options", pri)
	}
	// Where Python put them: the prefix on every key, ":" before the step.
	keys, _ := redis.Strings(r.Do(t, "KEYS", "*"), nil)
	for _, want := range []string{"midsummer:certmgr", "midsummer:certmgr:4", "midsummer:certmgr:7", "midsummer:_kombu.binding.certmgr"} {
		if !strings.Contains(strings.Join(keys, "\n"), want) {
			t.Errorf("python left keys %q; no %q", keys, want)
		}
	}

	o, err := ParseOptions("CELERY_BROKER_TRANSPORT_OPTIONS", opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{URL: r.URL, Queue: "certmgr", Options: o, VisibilityTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.VisibilityTimeout() != time.Second {
		t.Errorf("visibility timeout %s: the option must win", b.VisibilityTimeout())
	}
	ctx := context.Background()
	ds, err := b.Fetch(ctx, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, d := range ds {
		var env struct {
			Headers struct{ ID string } `json:"headers"`
		}
		_ = json.Unmarshal(d.Raw, &env)
		order = append(order, env.Headers.ID)
	}
	if want := []string{ids[0], ids[4], ids[7]}; strings.Join(order, ",") != strings.Join(want, ",") {
		t.Fatalf("fetched %v, want priorities 0, 4, 7: %v", order, want)
	}
	if n, _ := redis.Int(r.Do(t, "HLEN", "midsummer:unacked"), nil); n != 3 {
		t.Errorf("midsummer:unacked has %d entries, want 3", n)
	}
	if n, _ := redis.Int(r.Do(t, "EXISTS", "unacked", "unacked_index"), nil); n != 0 {
		t.Errorf("unprefixed unacked keys exist")
	}
	if err := b.Ack(ctx, ds[0].Tag, ds[1].Tag); err != nil {
		t.Fatal(err)
	}
	// The priority-7 one is "lost"; after the 1s visibility timeout a restore
	// puts it back on midsummer:certmgr:7.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := b.RestoreVisible(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing restored after the visibility timeout")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n, _ := redis.Int(r.Do(t, "LLEN", "midsummer:certmgr:7"), nil); n != 1 {
		t.Errorf("midsummer:certmgr:7 has %d messages after the restore, want 1", n)
	}
	if n, _ := redis.Int(r.Do(t, "ZCARD", "midsummer:unacked_index"), nil); n != 0 {
		t.Errorf("midsummer:unacked_index still has %d", n)
	}
}

// A message over MaxMessageBytes moves, whole, from the queue to the dead
// list inside Redis; the worker gets its envelope without the body.
func TestTooLargeMessageStaysInRedis(t *testing.T) {
	t.Parallel()
	r := testpeers.Redis(t)
	b, err := New(Config{URL: r.URL, Queue: "certmgr", MaxMessageBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	small := fixture(t, "p2_send_task__db0__certmgr__0.json")
	var env map[string]any
	if err := json.Unmarshal(small, &env); err != nil {
		t.Fatal(err)
	}
	env["body"] = strings.Repeat("QUFB", 1<<18) // 1 MiB of base64
	big, _ := json.Marshal(env)
	// Python's json.dumps order (body first), as kombu writes it.
	bigKombu := `{"body": "` + strings.Repeat("QUFB", 1<<18) + `"` + string(small[strings.Index(string(small), `, "content-encoding"`):])
	r.Do(t, "LPUSH", "certmgr", bigKombu)
	r.Do(t, "LPUSH", "certmgr", big)
	r.Do(t, "LPUSH", "certmgr", small)

	ds, err := b.Fetch(context.Background(), 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 {
		t.Fatalf("%d deliveries", len(ds))
	}
	for i, d := range ds[:2] {
		if d.TooLarge < 1<<20 || d.Tag != "" {
			t.Errorf("delivery %d: TooLarge %d, tag %q", i, d.TooLarge, d.Tag)
		}
		if len(d.Raw) > 4096 || !strings.Contains(string(d.Raw), "f5eeff14-d8b2-45ef-a63f-07e699dbe195") {
			t.Errorf("delivery %d: %d bytes reached the worker: %.300s", i, len(d.Raw), d.Raw)
		}
	}
	if ds[2].TooLarge != 0 || ds[2].Tag == "" {
		t.Errorf("the small message after them: %+v", ds[2])
	}
	if n, _ := redis.Int(r.Do(t, "LLEN", "certmgr.dead"), nil); n != 2 {
		t.Errorf("dead list has %d, want 2", n)
	}
	got, _ := redis.Strings(r.Do(t, "LRANGE", "certmgr.dead", 0, -1), nil)
	if len(got) == 2 && got[0] != bigKombu && got[1] != bigKombu {
		t.Errorf("the dead list does not hold the message whole")
	}
	if n, _ := redis.Int(r.Do(t, "HLEN", "unacked"), nil); n != 1 {
		t.Errorf("unacked has %d, want only the small one", n)
	}
}

// A blocking wait whose peek meets a large message does not read it.
func TestWaitSkipsLargeMessage(t *testing.T) {
	t.Parallel()
	r := testpeers.Redis(t)
	b, err := New(Config{URL: r.URL, Queue: "certmgr", MaxMessageBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	done := make(chan []Delivery, 1)
	go func() {
		ds, err := b.Fetch(context.Background(), 1, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- ds
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, _ := redis.String(r.Do(t, "CLIENT", "LIST"), nil)
		if strings.Contains(info, "cmd=blmove") || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.Do(t, "LPUSH", "certmgr", `{"body": "`+strings.Repeat("A", 4<<20)+`", "headers": {"id": "x"}, "properties": {"delivery_tag": "t"}}`)
	ds := <-done
	if len(ds) != 1 || ds[0].TooLarge == 0 || len(ds[0].Raw) > 1024 {
		t.Fatalf("got %+v", ds)
	}
	// The waiting connection is still in step after skipping 4 MiB.
	r.Do(t, "LPUSH", "certmgr", fixture(t, "p2_send_task__db0__certmgr__0.json"))
	ds, err = b.Fetch(context.Background(), 1, time.Second)
	if err != nil || len(ds) != 1 || ds[0].Tag == "" {
		t.Fatalf("next fetch: %+v %v", ds, err)
	}
}
