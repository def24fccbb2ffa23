// Package faults is certmgr's fault suite: it runs the real certmgr binary
// against real Redis, PostgreSQL, Pebble, pebble-challtestsrv, nginx and
// Python Celery, breaks one of them (kill -9 of the worker at each stage of
// the pipeline, a Redis restart under load, a database outage, an ACME
// server that is down, refuses nonces or answers 5xx, an nginx -t that
// fails, hostile input at every entrance) and checks that nothing was lost
// and nothing done twice. It holds tests only.
//
// Moments in the pipeline are picked by watching external state (kombu's
// unacked hash, the HTTP-01 request reaching the webroot, the certificate
// store, an NGINX_BINARY wrapper script), never by hooks in production code.
package faults
