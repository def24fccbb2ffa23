"""RabbitMQ intake: drain N certmgr.ping tasks (results to Redis) with certmgr's
Go worker and with Python Celery 5.2 (solo, and prefork -c 1), each on its own
fresh vhost of the local RabbitMQ, in the same run. Run through run.sh.

A drain starts when the worker takes its first message and ends when every
result is stored.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import redis
from celery import Celery

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "celery"))
from bench import cpu_s, free_port, rss_kb  # noqa: E402  (bench/celery/bench.py)


def rabbitmqctl(*args):
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, stdout=subprocess.DEVNULL)


def ready_count(app):
    with app.connection_for_write() as conn:
        _, n, _ = conn.default_channel.queue_declare("certmgr", passive=True)
        return n


def run_one(name, cmd, env, backend, n, timeout):
    vhost = "certmgr-bench-" + uuid.uuid4().hex[:8]
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        broker = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
        r = redis.Redis.from_url(backend)
        r.flushdb()
        app = Celery("producer", broker=broker, backend=backend)
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                app.send_task("certmgr.ping", queue="certmgr", producer=producer)
        assert ready_count(app) == n, "enqueue failed"

        proc = subprocess.Popen(cmd, env=dict(env, BENCH_BROKER=broker, BENCH_BACKEND=backend),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=HERE)
        peak, t0, t1 = 0, None, None
        deadline = time.monotonic() + timeout
        last = 0.0
        while time.monotonic() < deadline and proc.poll() is None:
            now = time.monotonic()
            if now - last > 0.05:
                peak = max(peak, rss_kb(proc.pid))
                last = now
                if t0 is None and ready_count(app) < n:
                    t0, cpu0 = now, cpu_s(proc.pid)
            if t0 is not None and count_results(r) >= n:
                t1, cpu1 = time.monotonic(), cpu_s(proc.pid)
                break
            time.sleep(0.01)
        peak = max(peak, rss_kb(proc.pid))
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err = proc.stderr.read().decode(errors="replace")[-2000:]
        if t1 is None:
            print(f"{name}: only {count_results(r)} of {n} results before timeout\n{err}", file=sys.stderr)
            return None
        return name, n, t1 - t0, n / (t1 - t0), peak / 1024, (cpu1 - cpu0) / n * 1e6
    finally:
        rabbitmqctl("delete_vhost", vhost)


def count_results(r):
    return sum(1 for _ in r.scan_iter(match="celery-task-meta-*", count=5000))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--go-worker", required=True)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--concurrency", default="4")
    ap.add_argument("--timeout", type=float, default=300)
    ns = ap.parse_args()
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-rabbitmq-")
    rs = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    backend = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            try:
                redis.Redis.from_url(backend).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        env = dict(os.environ, PYTHONPATH=HERE)
        py = ["/usr/bin/python3", "-m", "celery", "-A", "pyapp", "worker", "-Q", "certmgr",
              "--without-mingle", "--without-gossip", "-l", "warning"]
        systems = [(f"certmgr (Go, concurrency {c})", [ns.go_worker], dict(env, BENCH_CONCURRENCY=c))
                   for c in ns.concurrency.split(",")]
        systems += [("Python Celery 5.2 solo", py + ["-P", "solo"], env),
                    ("Python Celery 5.2 prefork -c 1", py + ["-P", "prefork", "-c", "1"], env)]
        rows = [res for name, cmd, cenv in systems if (res := run_one(name, cmd, cenv, backend, ns.n, ns.timeout))]
        print("| worker (RabbitMQ broker, Redis results) | tasks | drain s | tasks/s | peak RSS MB | worker CPU µs/task |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, n, elapsed, rate, mb, cpu in rows:
            print(f"| {name} | {n} | {elapsed:.2f} | {rate:.0f} | {mb:.1f} | {cpu:.0f} |")
        solo = next((r for r in rows if "solo" in r[0]), None)
        for go in rows:
            if go[0].startswith("certmgr") and solo:
                print(f"\n{go[0]} vs Python solo: {go[3] / solo[3]:.1f}x throughput, "
                      f"{go[4] / solo[4]:.2f}x memory, {solo[5] / go[5]:.1f}x less CPU per task")
    finally:
        rs.terminate()
        rs.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
