"""A Python Celery worker on RabbitMQ for certmgr's tests, configured as a
Django app would be (acks late, JSON, prefetch 1, rpc:// results).

Environment: AMQPWORKER_BROKER (amqp URL), AMQPWORKER_RECORD (redis URL where
test.record writes). Tasks: certmgr.ping -> "pong"; test.record(key, sleep=0)
sleeps, then RPUSHes "py:<task id>" to list key.
"""
import os
import time

import redis
from celery import Celery

app = Celery("pyworker", broker=os.environ["AMQPWORKER_BROKER"], backend="rpc://")
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1
app.conf.task_serializer = "json"
app.conf.accept_content = ["json"]

_r = redis.Redis.from_url(os.environ["AMQPWORKER_RECORD"])


@app.task(name="certmgr.ping")
def ping():
    return "pong"


@app.task(name="test.record", bind=True)
def record(self, key, sleep=0):
    if sleep:
        time.sleep(sleep)
    _r.rpush(key, "py:" + self.request.id)
    return "py"
