"""Python Celery app for bench/rabbitmq: certmgr.ping on RabbitMQ with results
in Redis, Celery's defaults otherwise (early acks, prefetch multiplier 4)."""
import os

from celery import Celery

app = Celery("benchapp", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BACKEND"])


@app.task(name="certmgr.ping")
def ping():
    return "pong"
