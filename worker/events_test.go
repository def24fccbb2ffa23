package worker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/midsummer/certmgr/internal/testpeers"
	"github.com/midsummer/certmgr/worker"
	"github.com/midsummer/certmgr/worker/internal/celery"
)

// TestEventsAndStartedState checks what `celery events` and Flower read (the
// celeryev fanout channels of this database) and the STARTED state stored
// with TrackStarted.
func TestEventsAndStartedState(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.cfg.SendTaskEvents = true
	s.cfg.TrackStarted = true
	s.cfg.HeartbeatInterval = 200 * time.Millisecond
	states := make(chan string, 1)
	s.mux.HandleFunc("tenant.tasks.observed", func(_ context.Context, task *worker.Task) error {
		raw, _ := redis.Bytes(s.redis.Do(t, "GET", celery.ResultKeyPrefix+task.ID), nil)
		var m celery.ResultMeta
		_ = json.Unmarshal(raw, &m)
		states <- string(m.Status)
		return nil
	})

	events := subscribeEvents(t, s)

	srv := s.start(t)
	id := s.celery.Send(t, testpeers.SendOptions{Task: "tenant.tasks.observed"})
	if _, cerr := s.celery.Get(t, id, 30*time.Second); cerr != nil {
		t.Fatal(cerr)
	}
	if st := <-states; st != "STARTED" {
		t.Errorf("state while running = %q, want STARTED", st)
	}
	want := map[string]bool{"worker-online": false, "worker-heartbeat": false, "task-received": false, "task-started": false, "task-succeeded": false}
	deadline := time.After(15 * time.Second)
	for missing := len(want); missing > 0; {
		select {
		case e := <-events:
			typ, _ := e["type"].(string)
			if seen, ok := want[typ]; ok && !seen && e["hostname"] == srv.Hostname() {
				if typ[:4] == "task" && e["uuid"] != id {
					continue
				}
				want[typ] = true
				missing--
			}
		case <-deadline:
			t.Fatalf("events seen: %v", want)
		}
	}
}

// subscribeEvents receives every event published on this test's database,
// as `celery events` and Flower do (task.multi lists are flattened).
func subscribeEvents(t *testing.T, s *setup) <-chan map[string]any {
	t.Helper()
	conn, err := redis.Dial("tcp", s.redis.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	psc := redis.PubSubConn{Conn: conn}
	if err := psc.PSubscribe(fmt.Sprintf("/%d.celeryev/*", s.redis.DB)); err != nil {
		t.Fatal(err)
	}
	events := make(chan map[string]any, 100)
	go func() {
		for {
			switch v := psc.Receive().(type) {
			case redis.Message:
				env, err := celery.ParseEnvelope(v.Data)
				if err != nil {
					continue
				}
				body, _ := base64.StdEncoding.DecodeString(env.Body)
				var one map[string]any
				var many []map[string]any
				if json.Unmarshal(body, &many) == nil {
					for _, e := range many {
						events <- e
					}
				} else if json.Unmarshal(body, &one) == nil {
					events <- one
				}
			case error:
				return
			}
		}
	}()

	return events
}
