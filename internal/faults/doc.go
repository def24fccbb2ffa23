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
//
// Each case fails when its protection is removed; these were checked by
// hand on a copy of the tree:
//   - the broker keeping fetched messages in kombu's unacked hash (fetch that
//     acks on receipt): TestKillWorkerAtEachStage fails, the killed task's
//     message is gone;
//   - nginx -t before installing the file (skipped): TestNginxTestFailure...
//     fails, the task succeeds instead of NginxConfigInvalid;
//   - retrying database errors (classified permanent): TestPostgresDown...
//     fails, the tasks end FAILURE during the outage;
//   - dead-lettering malformed messages (dropped instead): TestHostileInput
//     fails, certmgr.dead stays empty.
//   - finishing a reload a killed worker left pending (before b7fbec6 there
//     was no such protection): the before-the-ack stage of
//     TestKillWorkerAtEachStage failed, nginx never served the domain.
//   - printing connection URLs and driver errors as they are (before the
//     redaction of 2026-11-29): TestBadURLsNeverPrintThePassword and
//     TestRunningWorkerNeverPrintsThePassword fail, the password of an URL with
//     an unescaped # or a wrong scheme is printed, /readyz names the database
//     user; TestReadyzFailsWhileDraining fails, /readyz answered ok after SIGTERM.
//
// Fleet mode (CERTMGR_STORE=postgres, an agent beside nginx):
// TestFleetWorkerKilledAfterTheStoreWrite kills the worker while it waits for
// the agent, after the certificate is in PostgreSQL; the redelivered task
// must find it there (one version, no second order).
// TestFleetAgentKilledConvergesOnRestart SIGKILLs the `certmgr agent` binary
// of pod app-0, issues two domains (validated through pod app-1) and removes
// one meanwhile: the results say app-0 timed_out while its heartbeat row is
// fresh and leave it out once stale; restarted, its nginx serves exactly the
// new set (the removed domain 421) at the store's version. The agent's faults
// (PostgreSQL cut for 30 s, its LISTEN connection killed, restarts, hostile
// rows) are in package agent's tests.
//
// Run it alone with `go test ./internal/faults` (about 1.5 minutes here; the
// binary is built once in TestMain). Its cases run four at a time unless
// -parallel says otherwise (they mostly wait), and its stacks retry
// transient failures after 1 s (CERTMGR_RETRY_BASE) instead of 10 s.
package faults
