"""Python Celery app for bench/celery and bench/rabbitmq: certmgr.ping with
Celery's defaults (the fairest setting for Python: early acks, prefetch
multiplier 4); results to BENCH_BACKEND."""
import os

from celery import Celery

app = Celery("benchapp", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BACKEND"])


@app.task(name="certmgr.ping")
def ping():
    return "pong"
