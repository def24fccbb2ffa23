"""Stand-in tasks for the differential suite, run by a real Python Celery
worker. certmgr registers Go handlers of the same names and behaviour (see
standins_test.go); every task appends [name, args, kwargs] to the Redis list
compat:calls, so a scenario can see which tasks ran and with what.

Environment: PYWORKER_BROKER (broker and result backend), PYWORKER_VT.
"""
import json
import os
import time

import redis
from celery import Celery

BROKER = os.environ["PYWORKER_BROKER"]

app = Celery("compat", broker=BROKER, backend=BROKER)
app.conf.broker_transport_options = {"visibility_timeout": float(os.environ.get("PYWORKER_VT", "3600"))}
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1
app.conf.task_serializer = "json"
app.conf.result_serializer = "json"
app.conf.accept_content = ["json"]
app.conf.task_track_started = True
app.conf.result_extended = True

_r = redis.Redis.from_url(BROKER)


def _log(name, args, kwargs):
    _r.rpush("compat:calls", json.dumps([name, list(args), kwargs]))


class CompatError(Exception):
    """A project-specific exception class."""


@app.task(name="compat.add")
def add(x, y):
    _log("compat.add", [x, y], {})
    return x + y


@app.task(name="compat.tsum")
def tsum(values):
    _log("compat.tsum", [values], {})
    return sum(values)


@app.task(name="compat.echo")
def echo(*args, **kwargs):
    _log("compat.echo", args, kwargs)
    return [list(args), kwargs]


@app.task(name="compat.on_error")
def on_error(task_id):
    _log("compat.on_error", [task_id], {})
    return "handled"


@app.task(name="compat.fail")
def fail(message):
    _log("compat.fail", [message], {})
    raise ValueError(message)


@app.task(name="compat.fail_custom")
def fail_custom(message):
    _log("compat.fail_custom", [message], {})
    raise CompatError(message)


@app.task(name="compat.flaky", bind=True)
def flaky(self, times):
    _log("compat.flaky", [times], {})
    if self.request.retries < times:
        raise self.retry(countdown=0.1)
    return self.request.retries


@app.task(name="compat.retry_forever", bind=True)
def retry_forever(self):
    _log("compat.retry_forever", [], {})
    raise self.retry(countdown=0.1)


@app.task(name="compat.retry_forever_exc", bind=True)
def retry_forever_exc(self, message):
    _log("compat.retry_forever_exc", [message], {})
    raise self.retry(countdown=0.1, exc=ValueError(message))


@app.task(name="compat.retry_limited", bind=True, max_retries=1)
def retry_limited(self):
    _log("compat.retry_limited", [], {})
    raise self.retry(countdown=0.1)


@app.task(name="compat.sleep")
def sleep(seconds):
    _log("compat.sleep", [seconds], {})
    time.sleep(seconds)
    return seconds
