"""Send Celery tasks and read their results exactly as the Django app does.

Run with Debian's /usr/bin/python3 (python3-celery 5.2). Used by certmgr's Go
tests through testpeers.Celery, by the demo and by the benchmarks.

  celery_client.py send --broker URL [--backend URL] --task NAME [--queue Q]
      [--args JSON] [--kwargs JSON] [--countdown S] [--priority N]
      [--expires S] [--protocol 1|2] [--count N]        prints one task id per line
  celery_client.py get --broker URL [--backend URL] --id ID [--timeout S]
      prints {"state", "result", "exc_type", "message", "traceback"} as JSON
"""
import argparse
import json
import sys

from celery import Celery


def make_app(ns):
    app = Celery("django_app", broker=ns.broker, backend=ns.backend or ns.broker)
    app.conf.task_protocol = ns.protocol
    app.conf.result_extended = False
    return app


def cmd_send(app, ns):
    options = {}
    if ns.queue:
        options["queue"] = ns.queue
    if ns.countdown is not None:
        options["countdown"] = ns.countdown
    if ns.priority is not None:
        options["priority"] = ns.priority
    if ns.expires is not None:
        options["expires"] = ns.expires
    args = json.loads(ns.args)
    kwargs = json.loads(ns.kwargs)
    with app.producer_or_acquire() as producer:
        for _ in range(ns.count):
            r = app.send_task(ns.task, args=args, kwargs=kwargs, producer=producer, **options)
            print(r.id)
    sys.stdout.flush()


def cmd_get(app, ns):
    r = app.AsyncResult(ns.id)
    out = {"state": None, "result": None, "exc_type": None, "message": None, "traceback": None}
    try:
        value = r.get(timeout=ns.timeout, propagate=False)
    except Exception as exc:  # celery.exceptions.TimeoutError and broker errors
        out["state"] = "TIMEOUT"
        out["exc_type"] = type(exc).__name__
        out["message"] = str(exc)
        print(json.dumps(out))
        return
    out["state"] = r.state
    if r.state == "FAILURE" or isinstance(value, BaseException):
        meta = r.backend.get_task_meta(ns.id)
        stored = meta.get("result") or {}
        out["exc_type"] = stored.get("exc_type") if isinstance(stored, dict) else type(value).__name__
        out["raised_type"] = type(value).__name__
        out["message"] = str(value)
        out["traceback"] = r.traceback
    else:
        out["result"] = value
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["send", "get"])
    ap.add_argument("--broker", required=True)
    ap.add_argument("--backend")
    ap.add_argument("--protocol", type=int, default=2)
    ap.add_argument("--task")
    ap.add_argument("--queue", default="certmgr")
    ap.add_argument("--args", default="[]")
    ap.add_argument("--kwargs", default="{}")
    ap.add_argument("--countdown", type=float)
    ap.add_argument("--priority", type=int)
    ap.add_argument("--expires", type=float)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--id")
    ap.add_argument("--timeout", type=float, default=30)
    ns = ap.parse_args()
    app = make_app(ns)
    if ns.cmd == "send":
        cmd_send(app, ns)
    else:
        cmd_get(app, ns)


if __name__ == "__main__":
    main()
