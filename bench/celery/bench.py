"""Drain N certmgr.ping tasks (results stored) with certmgr's Go worker and
with Debian's Python Celery worker (solo, prefork -c 1), one after the other in
the same run; print one markdown table row per system.

--broker redis (bench/celery/run.sh): broker and results on a private
redis-server. --broker rabbitmq (bench/rabbitmq/run.sh): each system on a
fresh virtual host of the local RabbitMQ (127.0.0.1:5672, guest/guest),
results to the private redis-server. A drain starts when the worker takes its
first message and ends when every result is stored.

Run through run.sh (it builds the Go worker). Needs /usr/bin/python3 with
python3-celery and python3-redis, and redis-server (and rabbitmqctl for
--broker rabbitmq).
"""
import argparse
import contextlib
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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pid):
    """RSS of pid and all its descendants, in kB."""
    total = 0
    pids = [pid]
    seen = set()
    while pids:
        p = pids.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def cpu_s(pid):
    """User+system CPU seconds of pid and its descendants (live ones)."""
    total = 0
    pids, seen = [pid], set()
    tick = os.sysconf("SC_CLK_TCK")
    while pids:
        p = pids.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


class RedisBroker:
    """The private redis-server is the broker too: the queue is a list, and
    Python acks early, so a drain also waits for kombu's unacked hash."""

    title = "worker"
    poll, sleep = 0, 0.005  # reading a list length is cheap: at every turn

    def __init__(self, backend):
        self.url = backend
        self.r = redis.Redis.from_url(backend)

    @contextlib.contextmanager
    def fresh(self):
        self.r.flushdb()
        yield self.url

    def queued(self):
        return self.r.llen("certmgr")

    def drained(self, queued):
        # Python acks early, before storing the result.
        return queued == 0 and self.r.hlen("unacked") == 0


class RabbitBroker:
    """A fresh virtual host of the local RabbitMQ per system."""

    title = "worker (RabbitMQ broker, Redis results)"
    poll, sleep = 0.05, 0.01  # a passive queue declare is a round trip: less often

    def __init__(self, backend):
        self.backend = backend
        self.app = None

    @contextlib.contextmanager
    def fresh(self):
        vhost = "certmgr-bench-" + uuid.uuid4().hex[:8]
        rabbitmqctl("add_vhost", vhost)
        try:
            rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
            url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
            self.app = Celery("producer", broker=url, backend=self.backend)
            yield url
        finally:
            rabbitmqctl("delete_vhost", vhost)

    def queued(self):
        with self.app.connection_for_write() as conn:
            _, n, _ = conn.default_channel.queue_declare("certmgr", passive=True)
            return n

    def drained(self, queued):
        return True  # every result stored means every message was handled


def rabbitmqctl(*args):
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, stdout=subprocess.DEVNULL)


BROKERS = {"redis": (RedisBroker, 5000, "4,8"), "rabbitmq": (RabbitBroker, 2000, "4")}


def enqueue(broker_url, backend, n):
    app = Celery("producer", broker=broker_url, backend=backend)
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task("certmgr.ping", queue="certmgr", producer=producer)


def run_one(name, cmd, env, broker, backend, n, timeout):
    r = redis.Redis.from_url(backend)
    with broker.fresh() as url:
        r.flushdb()
        enqueue(url, backend, n)
        assert broker.queued() == n, "enqueue failed"

        proc = subprocess.Popen(cmd, env=dict(env, BENCH_BROKER=url, BENCH_BACKEND=backend),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=HERE)
        peak, t0, t1 = 0, None, None
        deadline = time.monotonic() + timeout
        last_rss = last_poll = 0.0
        queued = n
        while time.monotonic() < deadline and proc.poll() is None:
            now = time.monotonic()
            if now - last_rss > 0.05:
                peak = max(peak, rss_kb(proc.pid))
                last_rss = now
            if now - last_poll >= broker.poll:
                queued, last_poll = broker.queued(), now
                if t0 is None and queued < n:
                    t0, cpu0 = now, cpu_s(proc.pid)  # the worker took its first message
            if t0 is not None and broker.drained(queued) and count_results(r) >= n:
                t1, cpu1 = time.monotonic(), cpu_s(proc.pid)
                break
            time.sleep(broker.sleep)
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


def count_results(r):
    return sum(1 for _ in r.scan_iter(match="celery-task-meta-*", count=5000))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--go-worker", required=True, help="path of the built bench worker")
    ap.add_argument("--broker", choices=sorted(BROKERS), default="redis")
    ap.add_argument("-n", type=int, help="tasks per system (default 5000 on redis, 2000 on rabbitmq)")
    ap.add_argument("--concurrency",
                    help="Go worker concurrencies to run, comma-separated (default 4,8 on redis, 4 on rabbitmq; "
                         "4 is the default of certmgr worker)")
    ap.add_argument("--timeout", type=float, default=300)
    ns = ap.parse_args()
    kind, default_n, default_conc = BROKERS[ns.broker]
    n, concurrency = ns.n or default_n, ns.concurrency or default_conc

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-celery-")
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
        broker = kind(backend)
        env = dict(os.environ, PYTHONPATH=HERE)
        py = ["/usr/bin/python3", "-m", "celery", "-A", "pyapp", "worker", "-Q", "certmgr",
              "--without-mingle", "--without-gossip", "-l", "warning"]
        systems = [(f"certmgr (Go, concurrency {c})", [ns.go_worker], dict(env, BENCH_CONCURRENCY=c))
                   for c in concurrency.split(",")]
        systems += [
            ("Python Celery 5.2 solo", py + ["-P", "solo"], env),
            ("Python Celery 5.2 prefork -c 1", py + ["-P", "prefork", "-c", "1"], env),
        ]
        rows = [res for name, cmd, cenv in systems
                if (res := run_one(name, cmd, cenv, broker, backend, n, ns.timeout))]
        print(f"| {broker.title} | tasks | drain s | tasks/s | peak RSS MB | worker CPU µs/task |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, count, elapsed, rate, mb, cpu in rows:
            print(f"| {name} | {count} | {elapsed:.2f} | {rate:.0f} | {mb:.1f} | {cpu:.0f} |")
        solo = next((r for r in rows if "solo" in r[0]), None)
        for go in rows:
            if not go[0].startswith("certmgr") or solo is None:
                continue
            print(f"\n{go[0]} vs Python solo: {go[3] / solo[3]:.1f}x throughput, "
                  f"{go[4] / solo[4]:.2f}x memory, {solo[5] / go[5]:.1f}x less CPU per task")
    finally:
        rs.terminate()
        rs.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
