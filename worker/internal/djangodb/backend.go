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
