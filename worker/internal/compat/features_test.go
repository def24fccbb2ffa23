package compat_test

// knownDifferences explains, per scenario, why certmgr's observation differs
// from Python Celery's. A scenario that differs without an entry fails the
// suite; so does an entry whose scenario no longer differs.
var knownDifferences = map[string]string{
	"control_time_limit": "certmgr applies a time limit set by `control.time_limit` to the task's next messages that carry no limit of their own. " +
		"Celery 5.2 replies \"time limits set successfully\" too, but its worker keeps the limits its task strategy captured at start " +
		"(`create_request_cls`' `default_time_limit`), so the task runs on unlimited until the worker restarts: we took the reply at its word.",
}

// feature is one Celery 5 worker feature. With scenarios, its status comes
// from the run (supported when they all match Python Celery); without, it is
// stated here with the reason.
type feature struct {
	name      string
	scenarios []string
	status    string // when no scenario decides it
	why       string
}

var features = []feature{
	{name: "`send_task`/`apply_async`, result stored and read by `AsyncResult.get()`", scenarios: []string{"success"}},
	{name: "failure with the exception's class and message", scenarios: []string{"failure_builtin", "failure_custom", "not_registered"}},
	{name: "`Task.retry(countdown=...)`", scenarios: []string{"retry_then_succeed"}, why: "handlers return `worker.RetryAfter(d)`"},
	{name: "`max_retries` (default 3, per task, `MaxRetriesExceededError`, `retry(exc=...)`)", scenarios: []string{"max_retries_default", "max_retries_with_exc", "max_retries_per_task"}, why: "per task: `worker.RetryAfterMax`"},
	{name: "hard `time_limit` → `TimeLimitExceeded`", scenarios: []string{"time_limit"}},
	{name: "`soft_time_limit`", status: "partly", why: "the handler's context deadline is the smaller of the soft and hard limits; Go cannot raise `SoftTimeLimitExceeded` inside a running function, so the handler sees its context end, and a handler stopped by it fails with `SoftTimeLimitExceeded`, as an uncaught one does in Celery (`worker` TestTimeLimitBecomesDeadline)"},
	{name: "`task_track_started` (STARTED)", scenarios: []string{"track_started"}, why: "`CELERY_TASK_TRACK_STARTED=true`"},
	{name: "`result_extended`", scenarios: []string{"result_extended"}, why: "`CELERY_RESULT_EXTENDED=true`"},
	{name: "`link` callbacks (and the bytes of every canvas message a worker sends)", scenarios: []string{"link", "link_message"}},
	{name: "`link_error` errbacks", scenarios: []string{"link_error"}, why: "published with the failed task's id (see the next rows for new-style errbacks)"},
	{name: "`chain` (protocol 2)", scenarios: []string{"chain", "chain_failure"}},
	{name: "`group`", scenarios: []string{"group"}},
	{name: "nested canvas in a message: a chain or group as a `link` callback, groups inside a chord header", status: "not supported", why: "only plain task signatures are applied; a nested one is logged and skipped (a chord whose header holds groups stays unjoined: Celery restores a GroupResult for it, which needs Python)"},
	{name: "`Task.replace`, `self.request.callbacks` changed by the task", status: "not applicable", why: "Go handlers do not build signatures"},
	{name: "`result_chord_ordered=False` (list join keys)", status: "not supported", why: "certmgr joins with the sorted set Celery 5.2 uses by default"},
	{name: "errbacks taking `(request, exc, traceback)`", status: "partly", why: "Python calls such an errback in-process when its worker has the task; certmgr always publishes the errback as a task with the failed task's id, which is what Python does for an errback its worker does not have"},
	{name: "`chord` on the Redis result backend (a failed header part, also inside a header chain, fails the body with `ChordError`)", scenarios: []string{"chord", "chord_chain_failure"}},
	{name: "`control.revoke` (one or many ids, `terminate=True`)", scenarios: []string{"revoke", "revoke_terminate"}},
	{name: "remote control: `inspect` ping, registered, active, reserved, scheduled, revoked, query_task, stats, conf, active_queues, clock, report", scenarios: []string{"inspect"}},
	{name: "remote control: `control` enable_events, disable_events, heartbeat, time_limit, rate_limit, pool_grow, pool_shrink", scenarios: []string{"control", "control_time_limit"}, why: "as in Celery 5.2, `enable_events`/`disable_events` change nothing on a worker started with `-E` (its event groups are all on); `rate_limit` delays a task's starts on each worker, as Celery's token bucket does"},
	{name: "remote control: `control.shutdown`", status: "supported", why: "a graceful stop, no reply (as Celery); `worker` TestRemoteShutdownStopsRun"},
	{name: "remote control: autoscale, pool_restart, add_consumer, cancel_consumer, election, objgraph, memsample, memdump", status: "not supported", why: "no reply (Celery tolerates silent nodes); certmgr consumes one queue with a goroutine pool"},
	{name: "task events (`-E`, `enable_events`) for Flower", scenarios: []string{"events", "events_failure_retry_revoke"}, why: "`certmgr worker -E`, `CELERY_WORKER_SEND_TASK_EVENTS=true`"},
	{name: "worker events (online, heartbeat, offline)", status: "supported", why: "always sent, as Celery does; `worker` TestEventsAndStartedState; `control.heartbeat` as Celery (freq=5)"},
	{name: "`eta`/`countdown`, `expires`, `priority`", status: "supported", why: "`worker` TestCountdownHeldThenRun, TestExpiredTaskIsRevoked, TestPriorityZeroServedFirst against Python Celery producers"},
	{name: "protocol 1 and 2 messages, JSON", status: "supported", why: "`worker` TestPythonGetsGoResults (both protocols) and the captures in `worker/internal/celery/testdata`"},
	{name: "pickle, yaml, msgpack serializers", status: "not supported", why: "refused unread and moved to the dead list: unpickling a message runs code"},
	{name: "`acks_late`", status: "always", why: "a message is acknowledged only after its result is stored; a crash redelivers it"},
	{name: "prefork/eventlet/gevent/solo pools, `--autoscale`, `max_tasks_per_child`, `max_memory_per_child`", status: "not applicable", why: "handlers run on goroutines; concurrency is `CERTMGR_CONCURRENCY` (`pool_grow`/`pool_shrink` change it at run time: `worker` TestPoolGrowShrink)"},
	{name: "`--statedb`", status: "not applicable", why: "revoked ids are kept in Redis with a bounded TTL, shared by every replica (`worker` TestRevokeOutlivesRestartAndReachesNewReplicas)"},
	{name: "celery beat (`-B`)", status: "not supported", why: "run Celery beat itself; certmgr has its own renewal timer"},
	{name: "mingle, gossip", status: "not supported", why: "certmgr needs neither; Python workers started without them lose nothing either"},
	{name: "broadcast queues, custom exchanges other than the default", status: "not supported", why: "certmgr consumes one queue"},
}
