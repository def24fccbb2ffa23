"""The differential suite's scenarios, written once, run against any worker.

Each scenario acts as a Django producer would (send_task, signatures, canvas,
revoke, inspect) against a worker consuming queue `compat` with the stand-in
tasks of compat_app.py, and returns what the producer can observe. Task ids,
the worker's hostname and timestamps are replaced by stable labels, so that
the observations of a Python Celery worker and of certmgr can be compared
as they are.

  scenarios.py --broker URL --hostname NODE [--only a,b]   prints {name: observation}
"""
import argparse
import base64
import json
import re
import sys
import threading
import time
import traceback

import redis
from celery import Celery, chain, chord, group, signature

QUEUE = "compat"
WAIT = 20  # seconds a result may take


class Ctx:
    def __init__(self, app, r, hostname, events):
        self.app = app
        self.r = r
        self.hostname = hostname
        self.events = events
        self.labels = {}

    def label(self, task_id, name):
        self.labels[task_id] = name
        return task_id

    def sig(self, name, *args, **kwargs):
        return self.app.signature(name, args=args, kwargs=kwargs, queue=QUEUE)

    def send(self, name, args=(), kwargs=None, label=None, **options):
        r = self.app.send_task(name, args=list(args), kwargs=kwargs or {}, queue=QUEUE, **options)
        self.label(r.id, label or name)
        return r

    def calls(self):
        return [json.loads(c) for c in self.r.lrange("compat:calls", 0, -1)]

    def wait_calls(self, n, timeout=WAIT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            calls = self.calls()
            if len(calls) >= n:
                return calls
            time.sleep(0.05)
        return self.calls()

    def wait_state(self, result, states, timeout=WAIT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if result.state in states:
                return result.state
            time.sleep(0.05)
        return result.state


def outcome(result, timeout=WAIT):
    """What AsyncResult.get() tells a producer."""
    try:
        value = result.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
    except Exception as exc:
        return {"state": "TIMEOUT", "raised": type(exc).__name__}
    out = {"state": result.state}
    if isinstance(value, BaseException):
        out["exc_class"] = type(value).__name__
        out["exc_message"] = str(value)
    else:
        out["result"] = value
    return out


# --- scenarios -----------------------------------------------------------

def s_success(c):
    """sends `compat.add(2, 3)`, waits for the result"""
    return outcome(c.send("compat.add", [2, 3]))


def s_failure_builtin(c):
    """a task raising `ValueError('boom')`"""
    return outcome(c.send("compat.fail", ["boom"]))


def s_failure_custom(c):
    """a task raising a project exception class `CompatError`"""
    return outcome(c.send("compat.fail_custom", ["custom boom"]))


def s_not_registered(c):
    """sends a task name no worker has"""
    return outcome(c.send("compat.nobody_has_this", [1]))


def s_retry_then_succeed(c):
    """a task that calls `retry(countdown=0.1)` twice, then succeeds"""
    r = c.send("compat.flaky", [2])
    out = outcome(r)
    out["runs"] = len(c.calls())
    out["retries"] = r.retries
    return out


def s_max_retries_default(c):
    """a task that always calls `retry()` without `exc`: Celery's default `max_retries=3`"""
    out = outcome(c.send("compat.retry_forever"))
    out["runs"] = len(c.calls())
    return out


def s_max_retries_with_exc(c):
    """a task that always calls `retry(exc=ValueError(...))`"""
    out = outcome(c.send("compat.retry_forever_exc", ["still failing"]))
    out["runs"] = len(c.calls())
    return out


def s_max_retries_per_task(c):
    """a task declared with `max_retries=1` that always retries"""
    out = outcome(c.send("compat.retry_limited"))
    out["runs"] = len(c.calls())
    return out


def s_time_limit(c):
    """`compat.sleep(30)` sent with `time_limit=1`"""
    out = outcome(c.send("compat.sleep", [30], time_limit=1))
    out["runs"] = len(c.calls())
    return out


def s_track_started(c):
    """polls the state of a running task (`task_track_started`)"""
    r = c.send("compat.sleep", [1.5])
    seen = c.wait_state(r, {"STARTED", "SUCCESS"})
    out = outcome(r)
    out["seen_while_running"] = seen
    return out


def s_result_extended(c):
    """reads `name`, `args`, `kwargs`, `queue`, `retries`, `worker`, `date_done` (`result_extended`)"""
    r = c.send("compat.add", [4, 5], kwargs={})
    out = outcome(r)
    meta = r.backend.get_task_meta(r.id)
    out["fields"] = {k: meta.get(k) for k in ("name", "args", "kwargs", "queue", "retries")}
    out["worker_is_node"] = meta.get("worker") == c.hostname
    out["has_date_done"] = bool(meta.get("date_done"))
    return out


def s_link(c):
    """`apply_async(link=echo.s('from-link'))`: the callback gets the result first"""
    cb = c.sig("compat.echo", "from-link")
    cb_id = c.label(cb.freeze().id, "callback")
    r = c.send("compat.add", [2, 2], link=cb)
    out = {"parent": outcome(r), "callback": outcome(c.app.AsyncResult(cb_id))}
    out["calls"] = c.wait_calls(2)
    return out


def captured(c, queue, timeout=WAIT):
    """The next message on a queue no worker consumes, as kombu stored it:
    envelope keys, headers, properties and the decoded body."""
    item = c.r.brpop(queue, timeout=timeout)
    if item is None:
        return None
    env = json.loads(item[1])
    body = json.loads(base64.b64decode(env["body"]))
    props = dict(env["properties"])
    props["delivery_tag"] = "<tag>" if props.get("delivery_tag") else None
    props["reply_to"] = "<reply_to>" if props.get("reply_to") else props.get("reply_to")
    headers = dict(env["headers"])
    headers["origin"] = "<origin>" if headers.get("origin") else None
    return {"keys": sorted(env), "content-type": env["content-type"], "content-encoding": env["content-encoding"],
            "headers": headers, "properties": props, "body": body}


def s_link_message(c):
    """the messages a worker publishes for a `link` callback, the next chain step, a `link_error` errback and a chord body: every header and property"""
    cb = c.sig("compat.echo", "from-link").set(queue="compat-capture")
    c.label(cb.freeze().id, "callback")
    parent = c.send("compat.add", [2, 2], link=cb, label="parent")
    outcome(parent)
    out = {"callback": captured(c, "compat-capture")}
    res = chain(c.sig("compat.add", 1, 2), c.sig("compat.echo", "step").set(queue="compat-capture")).apply_async()
    node = res
    while node is not None:
        c.label(node.id, "step")
        node = node.parent
    out["chain_step"] = captured(c, "compat-capture")
    eb = c.sig("compat.on_error").set(queue="compat-capture")
    c.label(eb.freeze().id, "errback")
    outcome(c.send("compat.fail", ["bad"], link_error=eb, label="failed"))
    out["errback"] = captured(c, "compat-capture")
    if out["errback"]:
        out["errback"]["headers"]["group"] = "<group>" if out["errback"]["headers"]["group"] else None
    body = c.sig("compat.tsum").set(queue="compat-capture")
    res = chord([c.sig("compat.add", 1, 1), c.sig("compat.add", 2, 2)], body).apply_async()
    c.label(res.id, "body")
    if res.parent is not None:
        c.label(res.parent.id, "header")
        for child in res.parent.results:
            c.label(child.id, "member")
    out["chord_body"] = captured(c, "compat-capture")
    return out


def s_link_error(c):
    """`apply_async(link_error=on_error.s())` on a failing task"""
    eb = c.sig("compat.on_error")
    eb_id = c.label(eb.freeze().id, "errback")
    r = c.send("compat.fail", ["bad"], link_error=eb)
    out = {"parent": outcome(r), "errback": outcome(c.app.AsyncResult(eb_id))}
    out["calls"] = c.wait_calls(2)
    return out


def s_chain(c):
    """`chain(add(1, 2), add(3), add(4))`"""
    res = chain(c.sig("compat.add", 1, 2), c.sig("compat.add", 3), c.sig("compat.add", 4)).apply_async()
    node = res
    while node is not None:
        c.label(node.id, "step")
        node = node.parent
    out = outcome(res)
    out["calls"] = c.wait_calls(3)
    return out


def s_chain_failure(c):
    """a chain whose second step fails: the third never runs"""
    res = chain(c.sig("compat.add", 1, 2), c.sig("compat.fail", ), c.sig("compat.add", 4)).apply_async()
    node = res
    while node is not None:
        c.label(node.id, "step")
        node = node.parent
    out = outcome(res, timeout=5)
    out["parent"] = outcome(res.parent)
    out["calls"] = c.wait_calls(2)
    return out


def s_group(c):
    """`group(add(i, i) for i in range(3))`"""
    res = group(c.sig("compat.add", i, i) for i in range(3)).apply_async()
    c.label(res.id, "group")
    for child in res.results:
        c.label(child.id, "member")
    try:
        values = res.get(timeout=WAIT)
    except Exception as exc:
        return {"error": type(exc).__name__}
    return {"results": values, "states": sorted(ch.state for ch in res.results)}


def s_chord(c):
    """`chord([add(1, 1), add(2, 2)], tsum())`"""
    res = chord([c.sig("compat.add", 1, 1), c.sig("compat.add", 2, 2)], c.sig("compat.tsum")).apply_async()
    c.label(res.id, "body")
    if res.parent is not None:
        c.label(res.parent.id, "header")
        for child in res.parent.results:
            c.label(child.id, "member")
    out = outcome(res)
    calls = c.wait_calls(3)
    out["calls"] = sorted(calls, key=json.dumps)
    return out


def s_chord_chain_failure(c):
    """`chord([chain(add(1, 1), fail.si('broke'), add(3)), add(2, 2)], tsum())`, then the header chain ending in the failing step: the body fails with `ChordError`"""
    out = {}
    cases = (
        ("middle_step_fails", [c.sig("compat.add", 1, 1), c.sig("compat.fail", "broke").set(immutable=True), c.sig("compat.add", 3)]),
        ("last_step_fails", [c.sig("compat.add", 1, 1), c.sig("compat.fail", "broke").set(immutable=True)]),
    )
    for case, steps in cases:
        c.r.delete("compat:calls")
        res = chord([chain(*steps), c.sig("compat.add", 2, 2)], c.sig("compat.tsum")).apply_async()
        c.label(res.id, case + ":body")
        if res.parent is not None:
            c.label(res.parent.id, case + ":header")
            for i, member in enumerate(res.parent.results):
                node, depth = member, 0
                while node is not None:
                    c.label(node.id, "%s:member%d:step-%d" % (case, i, depth))  # step-0 is the chain's last
                    node, depth = node.parent, depth + 1
        got = outcome(res)
        got["header_states"] = [m.state for m in res.parent.results] if res.parent is not None else None
        got["calls"] = sorted(c.wait_calls(3, timeout=5), key=json.dumps)
        out[case] = got
    return out


def s_revoke(c):
    """`control.revoke(id)` of a task waiting for its countdown"""
    r = c.send("compat.add", [1, 1], countdown=1.5)
    c.app.control.revoke(r.id)
    out = outcome(r)
    time.sleep(2)  # the eta has passed: a worker that ignored revoke has run it
    out["calls"] = c.calls()
    return out


def s_revoke_terminate(c):
    """`control.revoke(id, terminate=True)` of a running task"""
    r = c.send("compat.sleep", [30])
    c.wait_calls(1)
    c.wait_state(r, {"STARTED"})
    c.app.control.revoke(r.id, terminate=True)
    return outcome(r)


def shape(v):
    """The shape of a reply: its keys and value types, not its values."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    return type(v).__name__


def s_inspect(c):
    """`inspect()` ping, registered, active, reserved, scheduled, revoked, query_task, stats, conf, active_queues, clock, report: the shape of each reply"""
    insp = c.app.control.inspect(destination=[c.hostname], timeout=2)
    running = c.send("compat.sleep", [2], label="running")
    waiting = c.send("compat.add", [1, 2], countdown=30, label="waiting")
    c.wait_calls(1)
    c.wait_state(running, {"STARTED"})
    time.sleep(0.5)  # the countdown task has reached the worker
    out = {}
    me = lambda reply: (reply or {}).get(c.hostname)
    out["ping"] = me(insp.ping())
    reg = me(insp.registered())
    out["registered"] = {"type": type(reg).__name__, "has_add": reg is not None and "compat.add" in reg}
    out["active"] = shape(me(insp.active()))
    out["active_ids"] = [r["id"] for r in me(insp.active()) or []]
    out["reserved"] = shape(me(insp.reserved()))
    sched = me(insp.scheduled()) or []
    out["scheduled"] = shape(sched)
    out["scheduled_ids"] = [s["request"]["id"] for s in sched]
    c.app.control.revoke(waiting.id)
    out["revoked_has"] = waiting.id in (me(insp.revoked()) or [])
    q = me(insp.query_task(running.id)) or {}
    out["query_task"] = {k: [v[0], shape(v[1])] for k, v in q.items()}
    stats = me(insp.stats()) or {}
    out["stats_keys"] = sorted(stats)
    out["stats_total"] = stats.get("total")
    conf = me(insp.conf()) or {}
    out["conf"] = {k: conf.get(k) for k in ("task_track_started", "result_extended", "task_acks_late", "accept_content")}
    out["active_queues"] = shape(me(insp.active_queues()))
    out["clock"] = shape(me(insp.clock()))
    out["report"] = shape(me(insp.report()))
    outcome(running)
    return out


def s_control(c):
    """`control` enable_events, disable_events, heartbeat, time_limit, rate_limit, pool_grow, pool_shrink: replies, and that they act"""
    ctl = c.app.control
    me = lambda reply: [r.get(c.hostname) for r in reply or [] if c.hostname in r]
    dest = [c.hostname]
    out = {}
    out["disable_events"] = me(ctl.disable_events(destination=dest, reply=True, timeout=2))
    out["disable_events_again"] = me(ctl.disable_events(destination=dest, reply=True, timeout=2))
    out["enable_events"] = me(ctl.enable_events(destination=dest, reply=True, timeout=2))
    out["heartbeat"] = me(ctl.heartbeat(destination=dest, reply=True, timeout=2))
    out["time_limit_unknown"] = me(ctl.time_limit("compat.nobody", hard=1, destination=dest, reply=True, timeout=2))
    out["rate_limit"] = me(ctl.rate_limit("compat.add", "1/s", destination=dest, reply=True, timeout=2))
    out["rate_limit_bad"] = me(ctl.rate_limit("compat.add", "fast", destination=dest, reply=True, timeout=2))
    start = time.time()
    results = [c.send("compat.add", [i, i], label="limited") for i in range(3)]
    for r in results:
        outcome(r)
    out["rate_limited_3_tasks_took_over_1s"] = time.time() - start > 1.0
    out["rate_limit_off"] = me(ctl.rate_limit("compat.add", None, destination=dest, reply=True, timeout=2))
    out["pool_grow"] = me(ctl.pool_grow(1, destination=dest, reply=True, timeout=2))
    out["pool_shrink"] = me(ctl.pool_shrink(1, destination=dest, reply=True, timeout=2))
    return out


def task_events(c, r, last):
    deadline = time.time() + 5
    while time.time() < deadline:
        if last in [e["type"] for e in c.events if e.get("uuid") == r.id]:
            break
        time.sleep(0.05)
    evs = [e for e in c.events if e.get("uuid") == r.id]
    return {
        "types": [e["type"] for e in evs],
        "fields": {e["type"]: sorted(k for k in e if k != "local_received") for e in evs},
    }


def s_events(c):
    """task events of one task as `celery events`/Flower receive them: types, order, fields"""
    r = c.send("compat.add", [7, 8])
    out = outcome(r)
    out.update(task_events(c, r, "task-succeeded"))
    return out


def s_events_failure_retry_revoke(c):
    """task events of a failing task, a retried one and a revoked one: types, order, fields, exception text"""
    failed = c.send("compat.fail", ["evented"])
    outcome(failed)
    retried = c.send("compat.flaky", [1])
    outcome(retried)
    revoked = c.send("compat.add", [1, 1], countdown=1)
    c.app.control.revoke(revoked.id)
    outcome(revoked)
    out = {
        "failed": task_events(c, failed, "task-failed"),
        "retried": task_events(c, retried, "task-succeeded"),
        "revoked": task_events(c, revoked, "task-revoked"),
    }
    # Whether the retry's task-retried or its new message's task-received
    # comes first is a race in Celery itself: compare what is not.
    types = out["retried"]["types"]
    out["retried"]["types"] = sorted(types)
    out["retried"]["order_kept"] = (
        types.index("task-started") < types.index("task-retried") < len(types) - 1 - types[::-1].index("task-started")
        < types.index("task-succeeded")
    ) if {"task-started", "task-retried", "task-succeeded"} <= set(types) else False
    out["failed_exception"] = [e.get("exception") for e in c.events if e.get("uuid") == failed.id and e["type"] == "task-failed"]
    out["revoked_flags"] = [[e.get("terminated"), e.get("expired"), e.get("signum")] for e in c.events if e.get("uuid") == revoked.id and e["type"] == "task-revoked"]
    return out


def s_control_time_limit(c):
    """`control.time_limit('compat.sleep', hard=1)`, then `compat.sleep(3)` sent without a limit of its own"""
    ctl = c.app.control
    dest = [c.hostname]
    out = {"reply": [r.get(c.hostname) for r in ctl.time_limit("compat.sleep", soft=None, hard=1, destination=dest, reply=True, timeout=2) or []]}
    out["sleep"] = outcome(c.send("compat.sleep", [3]))
    ctl.time_limit("compat.sleep", soft=None, hard=None, destination=dest, reply=True, timeout=2)
    return out


SCENARIOS = [
    ("success", s_success),
    ("failure_builtin", s_failure_builtin),
    ("failure_custom", s_failure_custom),
    ("not_registered", s_not_registered),
    ("retry_then_succeed", s_retry_then_succeed),
    ("max_retries_default", s_max_retries_default),
    ("max_retries_with_exc", s_max_retries_with_exc),
    ("max_retries_per_task", s_max_retries_per_task),
    ("time_limit", s_time_limit),
    ("track_started", s_track_started),
    ("result_extended", s_result_extended),
    ("link", s_link),
    ("link_error", s_link_error),
    ("link_message", s_link_message),
    ("chain", s_chain),
    ("chain_failure", s_chain_failure),
    ("group", s_group),
    ("chord", s_chord),
    ("chord_chain_failure", s_chord_chain_failure),
    ("revoke", s_revoke),
    ("revoke_terminate", s_revoke_terminate),
    ("inspect", s_inspect),
    ("control", s_control),
    ("control_time_limit", s_control_time_limit),
    ("events", s_events),
    ("events_failure_retry_revoke", s_events_failure_retry_revoke),
]


def listen(app, sink, ready):
    def on_event(event):
        sink.append(event)
    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": on_event})
        ready.set()
        recv.capture(limit=None, timeout=None, wakeup=False)


def normalize(obs, ctx):
    text = json.dumps(obs, sort_keys=True)
    for task_id, name in ctx.labels.items():
        text = text.replace(task_id, "<" + name + ">")
    text = text.replace(ctx.hostname, "<worker>")
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", text)
    return json.loads(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker")
    ap.add_argument("--hostname")
    ap.add_argument("--only", default="")
    ap.add_argument("--describe", action="store_true", help="print {name: docstring} and exit")
    ns = ap.parse_args()
    if ns.describe:
        print(json.dumps({name: fn.__doc__ for name, fn in SCENARIOS}, sort_keys=True))
        return
    app = Celery("django_app", broker=ns.broker, backend=ns.broker)
    app.conf.result_extended = True
    r = redis.Redis.from_url(ns.broker)
    events = []
    ready = threading.Event()
    threading.Thread(target=listen, args=(app, events, ready), daemon=True).start()
    ready.wait(10)
    only = set(filter(None, ns.only.split(",")))
    out = {}
    for name, fn in SCENARIOS:
        if only and name not in only:
            continue
        r.delete("compat:calls")
        ctx = Ctx(app, r, ns.hostname, events)
        started = time.time()
        try:
            obs = fn(ctx)
        except Exception as exc:
            obs = {"error": type(exc).__name__ + ": " + str(exc), "where": traceback.format_exc().splitlines()[-3:]}
        out[name] = normalize(obs, ctx)
        print("scenario %s: %.1fs" % (name, time.time() - started), file=sys.stderr, flush=True)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
