"""Python Celery configured as a Django app would be, for certmgr's broker tests.

Run with Debian's /usr/bin/python3 (python3-celery 5.2). Options are JSON:

  celery_options.py send --broker URL --backend URL --options JSON --task NAME
      [--queue Q] [--args JSON] [--arg-bytes N] [--priority N] [--count N]
      prints one task id per line
  celery_options.py get --broker URL --backend URL --options JSON --id ID [--timeout S]
      prints {"state", "result", "exc_type", "message"} as JSON
  celery_options.py call --broker URL --backend URL --task NAME [--args JSON] [--timeout S]
      send_task then AsyncResult.get() in one process (rpc://); prints as get
  celery_options.py chord --broker URL --backend URL [--timeout S]
      chord([test.add(1, 2), test.add(3, 4)])(test.sum()) and the body's
      AsyncResult.get() in one process; prints as get, or state "REFUSED"
      with the exception when Celery refuses to start the chord
  celery_options.py ping --broker URL --options JSON [--timeout S]
      prints the replies of `celery inspect ping` as JSON
"""
import argparse
import json
import sys

from celery import Celery


def make_app(ns):
    app = Celery("django_app", broker=ns.broker, backend=ns.backend or ns.broker)
    app.conf.broker_transport_options = json.loads(ns.options)
    app.conf.result_backend_transport_options = json.loads(ns.backend_options)
    app.conf.result_extended = False
    if ns.max_priority:
        from kombu import Exchange, Queue
        app.conf.task_queues = [Queue("certmgr", Exchange("certmgr"), routing_key="certmgr",
                                      queue_arguments={"x-max-priority": ns.max_priority})]
    return app


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["send", "get", "ping", "call", "chord"])
    ap.add_argument("--broker", required=True)
    ap.add_argument("--backend")
    ap.add_argument("--options", default="{}")
    ap.add_argument("--backend-options", default="{}")
    ap.add_argument("--task")
    ap.add_argument("--queue", default="certmgr")
    ap.add_argument("--args", default="[]")
    ap.add_argument("--priority", type=int)
    ap.add_argument("--max-priority", type=int, default=0, help="declare the queue with x-max-priority")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--countdown", type=float)
    ap.add_argument("--arg-bytes", type=int, default=0, help="append one argument of this many bytes")
    ap.add_argument("--id")
    ap.add_argument("--timeout", type=float, default=30)
    ns = ap.parse_args()
    app = make_app(ns)
    if ns.cmd == "send":
        opts = {"queue": ns.queue}
        if ns.priority is not None:
            opts["priority"] = ns.priority
        if ns.countdown is not None:
            opts["countdown"] = ns.countdown
        args = json.loads(ns.args)
        if ns.arg_bytes:
            args.append("x" * ns.arg_bytes)
        with app.producer_or_acquire() as producer:
            for _ in range(ns.count):
                print(app.send_task(ns.task, args=args, producer=producer, **opts).id)
    elif ns.cmd in ("get", "call", "chord"):
        if ns.cmd == "chord":
            from celery import chord
            header = [app.signature("test.add", args=(1, 2), queue=ns.queue),
                      app.signature("test.add", args=(3, 4), queue=ns.queue)]
            try:
                r = chord(header)(app.signature("test.sum", queue=ns.queue))
            except Exception as exc:
                print(json.dumps({"id": None, "state": "REFUSED", "result": None,
                                  "exc_type": type(exc).__name__, "message": str(exc)}))
                return
        elif ns.cmd == "call":
            # Send and wait in one process: what rpc:// needs (results come
            # back to this process's reply queue only).
            args = json.loads(ns.args)
            opts = {"queue": ns.queue}
            r = app.send_task(ns.task, args=args, **opts)
        else:
            r = app.AsyncResult(ns.id)
        out = {"id": r.id, "state": None, "result": None, "exc_type": None, "message": None}
        try:
            value = r.get(timeout=ns.timeout, propagate=False)
        except Exception as exc:
            out.update(state="TIMEOUT", exc_type=type(exc).__name__, message=str(exc))
            print(json.dumps(out))
            return
        out["state"] = r.state
        if isinstance(value, BaseException):
            out["exc_type"] = type(value).__name__
            out["message"] = str(value)
        else:
            out["result"] = value
        print(json.dumps(out))
    else:
        print(json.dumps(app.control.inspect(timeout=ns.timeout).ping() or {}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
