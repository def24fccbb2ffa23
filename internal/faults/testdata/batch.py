"""Send many Celery tasks and read their results in one process, as the
Django app would (send_task, then AsyncResult.get). Used by the fault suite
where one Python process per task would be too slow.

  batch.py BROKER_URL TIMEOUT_SECONDS < [{"task", "args", "kwargs"}, ...]
  prints [{"id", "state", "exc_type", "result"}, ...] as JSON, in order
"""
import json
import sys
import time

from celery import Celery


def main():
    broker, timeout = sys.argv[1], float(sys.argv[2])
    app = Celery("django_app", broker=broker, backend=broker)
    app.conf.task_protocol = 2
    calls = json.load(sys.stdin)
    ids = []
    with app.producer_or_acquire() as producer:
        for c in calls:
            r = app.send_task(c["task"], args=c.get("args") or [], kwargs=c.get("kwargs") or {},
                              queue="certmgr", producer=producer)
            ids.append(r.id)
    deadline = time.monotonic() + timeout
    out = []
    for i in ids:
        r = app.AsyncResult(i)
        entry = {"id": i, "state": None, "exc_type": None, "result": None}
        try:
            value = r.get(timeout=max(deadline - time.monotonic(), 0.1), propagate=False)
            entry["state"] = r.state
            if r.state == "FAILURE":
                stored = r.backend.get_task_meta(i).get("result") or {}
                entry["exc_type"] = stored.get("exc_type") if isinstance(stored, dict) else type(value).__name__
            else:
                entry["result"] = value
        except Exception as exc:
            entry["state"] = "TIMEOUT"
            entry["exc_type"] = type(exc).__name__
        out.append(entry)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
