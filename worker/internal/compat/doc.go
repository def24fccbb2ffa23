// Package compat holds the differential suite that keeps certmgr's worker
// indistinguishable from a Python Celery worker. It has no code of its own:
// testdata/scenarios.py is a Python Celery producer whose scenarios are run
// twice, against a real Python Celery worker running testdata/compat_app.py
// and against certmgr's worker with Go stand-ins of the same tasks; the test
// compares what the producer observed and writes docs/celery-compat.md from
// the comparison (go test ./worker/internal/compat -update).
package compat
