"""A Python Celery worker app for certmgr's tests and benchmarks.

It consumes the same queue as certmgr, with the settings a Django app would
use (acks late, JSON). Configured by environment:
  PYWORKER_BROKER   broker URL (results go to the same database)
  PYWORKER_VT       kombu visibility_timeout in seconds (default 3600)

Tasks:
  certmgr.ping               -> "pong"
  test.record(key, sleep=0)  sleeps, then RPUSHes "py:<task id>" to list key
"""
import os
import time

import redis
from celery import Celery

BROKER = os.environ["PYWORKER_BROKER"]

app = Celery("pyworker", broker=BROKER, backend=BROKER)
app.conf.broker_transport_options = {"visibility_timeout": float(os.environ.get("PYWORKER_VT", "3600"))}
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1
app.conf.task_serializer = "json"
app.conf.accept_content = ["json"]

_r = redis.Redis.from_url(BROKER)


@app.task(name="certmgr.ping")
def ping():
    return "pong"


@app.task(name="test.record", bind=True)
def record(self, key, sleep=0):
    if sleep:
        time.sleep(sleep)
    _r.rpush(key, "py:" + self.request.id)
    return "py"
