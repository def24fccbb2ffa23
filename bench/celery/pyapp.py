"""Python Celery app for bench/celery: certmgr.ping with Celery's defaults
(the fairest setting for Python: early acks, prefetch multiplier 4)."""
import os

from celery import Celery

BROKER = os.environ["BENCH_BROKER"]
app = Celery("benchapp", broker=BROKER, backend=BROKER)


@app.task(name="certmgr.ping")
def ping():
    return "pong"
