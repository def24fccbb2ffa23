// Package djangodb is django-celery-results' DatabaseBackend as seen from a
// worker (CELERY_RESULT_BACKEND = 'django-db'): task states are rows of
// django_celery_results_taskresult in the Django app's PostgreSQL database,
// written as DatabaseBackend writes them, so AsyncResult in Django reads them.
//
// A row is what TaskResultManager.store_result leaves: task_id, status,
// result and meta ({"children": []}) as JSON text with Python's separators,
// content_type application/json, content_encoding utf-8, date_created set
// once and date_done on every write. With Celery's default result_extended =
// False, task_name, task_args, task_kwargs, worker, periodic_task_name and
// traceback are NULL. With result_extended (CELERY_RESULT_EXTENDED) they are
// filled as DatabaseBackend._get_extended_properties fills them: the task's
// name, the JSON of its argsrepr and kwargsrepr strings (of args and kwargs
// themselves for a message without them), the worker's hostname, the
// message's periodic_task_name property and the traceback.
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
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
VALUES ($1, $2, $3, $4, $5, 'application/json', 'utf-8', $6, $7, $8, $9, $10, now(), now())
ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status, result = EXCLUDED.result, meta = EXCLUDED.meta,
  traceback = EXCLUDED.traceback, content_type = EXCLUDED.content_type, content_encoding = EXCLUDED.content_encoding,
  periodic_task_name = coalesce(EXCLUDED.periodic_task_name, r.periodic_task_name),
  task_name = coalesce(EXCLUDED.task_name, r.task_name), task_args = coalesce(EXCLUDED.task_args, r.task_args),
  task_kwargs = coalesce(EXCLUDED.task_kwargs, r.task_kwargs), worker = coalesce(EXCLUDED.worker, r.worker),
  date_done = EXCLUDED.date_done
WHERE r.status <> 'SUCCESS'`

// chordPartUpsert writes a chord part's state, which the task's own write
// (with its request and traceback) has usually stored already: those
// columns are kept.
var chordPartUpsert = strings.Replace(upsert, "traceback = EXCLUDED.traceback", "traceback = r.traceback", 1)

// extendedColumns are traceback, periodic_task_name, task_name, task_args,
// task_kwargs and worker for a state: all NULL without result_extended (a
// chord part's state, written without its request, keeps the request
// columns its task's own writes filled).
func extendedColumns(x *celery.Extended, traceback *string) []any {
	if x == nil {
		return []any{nil, nil, nil, nil, nil, nil}
	}
	args, kwargs := reprColumn(x.ArgsRepr, x.Args), reprColumn(x.KwargsRepr, x.Kwargs)
	return []any{traceback, nullable(x.PeriodicTaskName), x.Name, args, kwargs, x.Worker}
}

// reprColumn is task_args or task_kwargs: the JSON of the repr string
// protocol 2 carries, or of the arguments themselves (protocol 1).
func reprColumn(repr string, v any) string {
	if repr != "" {
		return pythonJSON(marshal(repr))
	}
	return pythonJSON(marshal(v))
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// StoreMany writes states in order, in one transaction.
func (b *Backend) StoreMany(ctx context.Context, results []celery.EncodedResult) error {
	if len(results) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	for _, r := range results {
		var m struct {
			Status    string            `json:"status"`
			Result    json.RawMessage   `json:"result"`
			Children  []json.RawMessage `json:"children"`
			Traceback *string           `json:"traceback"`
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
		batch.Queue(upsert, append([]any{r.TaskID, m.Status, pythonJSON(result), pythonJSON(meta)},
			extendedColumns(r.Request, m.Traceback)...)...)
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
// (", " and ": " between items) and escapes what its ensure_ascii escapes
// (every character outside ' '..'~', as \uXXXX with surrogate pairs), which
// is what kombu's JSON serializer leaves in the result, meta, task_args and
// task_kwargs columns.
func pythonJSON(compact []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, compact); err != nil {
		return string(compact)
	}
	src := buf.Bytes()
	out := make([]byte, 0, len(src)+len(src)/8)
	inString, escaped := false, false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c >= 0x7f {
			r, size := utf8.DecodeRune(src[i:])
			i += size - 1
			if r1, r2 := utf16.EncodeRune(r); r1 != unicode.ReplacementChar {
				out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
			} else {
				out = fmt.Appendf(out, `\u%04x`, r)
			}
			continue
		}
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

// marshal is json.Marshal without Go's HTML escaping, which Python's
// json.dumps does not do.
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimRight(buf.Bytes(), "\n")
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
		if _, err := tx.Exec(ctx, chordPartUpsert, append([]any{id, state, pythonJSON(part[3]), pythonJSON(meta)},
			extendedColumns(nil, nil)...)...); err != nil {
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

// Permanent reports whether err is PostgreSQL refusing the data itself:
// SQLSTATE class 22 (data exception, such as a task id over varchar(255))
// or 23 (integrity constraint violation). Writing the same row again fails
// the same way, unlike a connection error, a timeout, a missing table or a
// refused login, which an operator or a restart can mend.
func Permanent(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23")
}
