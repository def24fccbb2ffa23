// Package djangodb is django-celery-results' DatabaseBackend as seen from a
// worker (CELERY_RESULT_BACKEND = 'django-db'): task states are rows of
// django_celery_results_taskresult in the Django app's PostgreSQL database,
// written as DatabaseBackend writes them, so AsyncResult in Django reads them.
//
// A row is what TaskResultManager.store_result leaves with Celery's default
// result_extended = False: task_id, status, result and meta ({"children": []})
// as JSON text with Python's separators, content_type application/json,
// content_encoding utf-8, date_created set once and date_done on every write,
// and NULL task_name, task_args, task_kwargs, worker, periodic_task_name and
// traceback (DatabaseBackend keeps the traceback only with result_extended).
// One difference: a SUCCESS row is never overwritten (a duplicate delivery
// must not turn a success into a failure), as Celery's Redis backend does.
//
// Chords are joined as DatabaseBackend.on_chord_part_return joins them, on
// the django_celery_results_chordcounter row the sender's apply_chord made.
package djangodb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/midsummer/certmgr/worker/internal/celery"
)

// Table is django-celery-results' TaskResult table.
const Table = "django_celery_results_taskresult"

// Backend writes task states to django_celery_results_taskresult.
type Backend struct {
	pool *pgxpool.Pool
}

// New prepares a backend on the Django database at dbURL (MIDSUMMER_DB_URL);
// it does not connect.
func New(dbURL string) (*Backend, error) {
	if dbURL == "" {
		return nil, errors.New("django-db result backend: the database URL (MIDSUMMER_DB_URL) is required")
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, errors.New("django-db result backend: the database URL does not parse")
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("django-db result backend: %w", err)
	}
	return &Backend{pool: pool}, nil
}

// Close releases the connections.
func (b *Backend) Close() error {
	b.pool.Close()
	return nil
}

const upsert = `
INSERT INTO ` + Table + ` AS r (task_id, status, result, meta, traceback, content_type, content_encoding,
  periodic_task_name, task_name, task_args, task_kwargs, worker, date_created, date_done)
VALUES ($1, $2, $3, $4, NULL, 'application/json', 'utf-8', NULL, NULL, NULL, NULL, NULL, now(), now())
ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status, result = EXCLUDED.result, meta = EXCLUDED.meta,
  traceback = NULL, content_type = EXCLUDED.content_type, content_encoding = EXCLUDED.content_encoding,
  date_done = EXCLUDED.date_done
WHERE r.status <> 'SUCCESS'`

// StoreMany writes states in order, in one transaction.
func (b *Backend) StoreMany(ctx context.Context, results []celery.EncodedResult) error {
	if len(results) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	for _, r := range results {
		var m struct {
			Status   string            `json:"status"`
			Result   json.RawMessage   `json:"result"`
			Children []json.RawMessage `json:"children"`
		}
		if err := json.Unmarshal(r.Raw, &m); err != nil {
			return fmt.Errorf("store result of %s: %w", r.TaskID, err)
		}
		if m.Children == nil {
			m.Children = []json.RawMessage{}
		}
		meta, _ := json.Marshal(map[string]any{"children": m.Children})
		result := m.Result
		if len(result) == 0 {
			result = json.RawMessage("null")
		}
		batch.Queue(upsert, r.TaskID, m.Status, pythonJSON(result), pythonJSON(meta))
	}
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, batch).Close()
	})
	if err != nil {
		return fmt.Errorf("store %d results in %s: %w", len(results), Table, err)
	}
	return nil
}

// Get reads a task's status and result columns (for tests and tools).
func (b *Backend) Get(ctx context.Context, taskID string) (status, result string, err error) {
	err = b.pool.QueryRow(ctx, `SELECT status, coalesce(result, '') FROM `+Table+` WHERE task_id = $1`, taskID).Scan(&status, &result)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", nil
	}
	return status, result, err
}

// pythonJSON re-spaces compact JSON the way Python's json.dumps writes it
// (", " and ": " between items), which is what kombu's JSON serializer
// leaves in the result and meta columns. Strings are copied untouched.
func pythonJSON(compact []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, compact); err != nil {
		return string(compact)
	}
	src := buf.Bytes()
	out := make([]byte, 0, len(src)+len(src)/8)
	inString, escaped := false, false
	for _, c := range src {
		out = append(out, c)
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && (c == ',' || c == ':'):
			out = append(out, ' ')
		}
	}
	return string(out)
}

// ChordCounterTable is django-celery-results' ChordCounter table, created by
// the app's DatabaseBackend.apply_chord when it sends a chord.
const ChordCounterTable = "django_celery_results_chordcounter"

// ErrNestedChord is returned for a chord header holding groups, whose
// results only Python's GroupResult can gather.
var ErrNestedChord = errors.New("chord header holds nested groups")

// ChordPartReturn is DatabaseBackend.on_chord_part_return: it stores this
// header task's state (encoded [1, task_id, state, result]) and decrements
// the group's ChordCounter under SELECT ... FOR UPDATE, in one transaction;
// the last part deletes the counter and returns every part's encoding in
// header order, read from the task result rows. A group without a counter
// (not a django-db chord) is left alone, as DatabaseBackend does.
func (b *Backend) ChordPartReturn(ctx context.Context, group string, index *int, encoded []byte) ([][]byte, bool, error) {
	var part []json.RawMessage
	if err := json.Unmarshal(encoded, &part); err != nil || len(part) != 4 {
		return nil, false, fmt.Errorf("chord %s: part is not [1, id, state, result]", group)
	}
	var id, state string
	if json.Unmarshal(part[1], &id) != nil || json.Unmarshal(part[2], &state) != nil {
		return nil, false, fmt.Errorf("chord %s: part is not [1, id, state, result]", group)
	}
	meta, _ := json.Marshal(map[string]any{"children": []any{}})
	var parts [][]byte
	ready := false
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, upsert, id, state, pythonJSON(part[3]), pythonJSON(meta)); err != nil {
			return err
		}
		var count int
		var subTasks string
		err := tx.QueryRow(ctx, `SELECT count, sub_tasks FROM `+ChordCounterTable+` WHERE group_id = $1 FOR UPDATE`, group).Scan(&count, &subTasks)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if count > 1 {
			_, err := tx.Exec(ctx, `UPDATE `+ChordCounterTable+` SET count = count - 1 WHERE group_id = $1`, group)
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM `+ChordCounterTable+` WHERE group_id = $1`, group); err != nil {
			return err
		}
		// sub_tasks is json.dumps of each header result's as_tuple():
		// [[task_id, parent], children] with children null for a task.
		var subs [][]json.RawMessage
		if err := json.Unmarshal([]byte(subTasks), &subs); err != nil {
			return fmt.Errorf("sub_tasks of %s: %w", group, err)
		}
		for _, s := range subs {
			var idParent []json.RawMessage
			if len(s) != 2 || json.Unmarshal(s[0], &idParent) != nil || len(idParent) < 1 {
				return fmt.Errorf("sub_tasks of %s: not a result tuple", group)
			}
			if string(s[1]) != "null" {
				return ErrNestedChord
			}
			var sid string
			if err := json.Unmarshal(idParent[0], &sid); err != nil {
				return fmt.Errorf("sub_tasks of %s: %w", group, err)
			}
			var st string
			var res *string
			err := tx.QueryRow(ctx, `SELECT status, result FROM `+Table+` WHERE task_id = $1`, sid).Scan(&st, &res)
			if errors.Is(err, pgx.ErrNoRows) {
				st = "PENDING"
			} else if err != nil {
				return err
			}
			r := json.RawMessage("null")
			if res != nil && *res != "" {
				r = json.RawMessage(*res)
			}
			enc, err := json.Marshal([]any{1, sid, st, r})
			if err != nil {
				return err
			}
			parts = append(parts, enc)
		}
		ready = true
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("chord %s part return: %w", group, err)
	}
	return parts, ready, nil
}
