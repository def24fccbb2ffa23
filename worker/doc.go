// Package worker runs Go handlers for Celery tasks that a Django app sends with
// Python Celery 5 through a Redis broker, and leaves behind exactly what a
// Python Celery worker would: results AsyncResult.get() can read, retries
// Celery understands, remote-control answers and events, and no lost message
// when anything crashes.
//
// The API has net/http's shape: a Handler processes one *Task, a ServeMux
// routes by Celery task name, middleware wraps handlers, and a Server consumes
// the queue:
//
//	mux := worker.NewServeMux()
//	worker.RegisterBuiltins(mux) // certmgr.ping -> "pong"
//	mux.HandleFunc("tenant.tasks.verify_custom_domain_dns_task", verify)
//	srv, err := worker.NewServer(worker.Config{BrokerURL: url, Logger: log}, mux)
//	err = srv.Run(ctx) // until ctx ends, then a graceful stop
//
// A handler returns nil (SUCCESS, with the value given to Task.SetResult), an
// error (FAILURE; give it an exc_type with an ExcType method or Fail), or
// RetryAfter(d) (the task is re-sent with retries+1 and an eta, like
// Task.retry; after MaxRetries, or RetryAfterMax's own limit, it fails with
// the wrapped cause, or MaxRetriesExceededError when there is none).
//
// Around the handler the Server does what a Python worker does: it applies
// the message's link callbacks, next chain step and link_error errbacks,
// joins chords on the Redis result backend (Celery 5.2's keys), honours
// revokes (kept in Redis for every replica), answers `celery inspect` and
// `celery control`, and sends task events. docs/celery-compat.md, written by
// the differential suite in worker/internal/compat, says what matches Python
// Celery and what does not.
//
// # Why the protocol layer is ours
//
// No maintained Go library can stand in for a Celery worker here. gocelery
// (github.com/gocelery/gocelery, last release 2020) speaks only protocol 1 and
// silently drops the protocol 2 messages Celery 5 sends by default; it pops
// messages with BRPOP and never acknowledges, so a crash loses whatever it was
// running, and it pins a withdrawn redigo major version. gopher-celery has no
// acknowledgement and no result backend. The subpackages are therefore ours:
// worker/internal/celery is the wire format (protocol 1 and 2, JSON only: pickle is
// refused unread), worker/internal/redisbroker is kombu's Redis transport with
// acknowledgements that survive kill -9 at any instant, and Celery's Redis
// result backend. Both are built from real captures of Celery 5.2 traffic.
package worker
