"""Drain N certmgr.ping tasks (results stored) with certmgr's Go worker and
with Debian's Python Celery worker (solo, prefork -c 1), one after the other on
a private redis-server; print one markdown table row per system.

Run through run.sh (it builds the Go worker). Needs /usr/bin/python3 with
python3-celery and python3-redis, and redis-server.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

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


def enqueue(url, n):
    app = Celery("producer", broker=url, backend=url)
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task("certmgr.ping", queue="certmgr", producer=producer)


def run_one(name, cmd, env, url, n, timeout):
    r = redis.Redis.from_url(url)
    r.flushdb()
    enqueue(url, n)
    assert r.llen("certmgr") == n, "enqueue failed"

    done = []
    sub = r.pubsub()
    sub.psubscribe("celery-task-meta-*")
    for _ in range(3):  # wait for the subscription to be live
        if sub.get_message(timeout=1):
            break

    def listen():
        for m in sub.listen():
            if m["type"] == "pmessage" and b'"SUCCESS"' in m["data"]:
                done.append(time.monotonic())
                if len(done) >= n:
                    return

    th = threading.Thread(target=listen, daemon=True)
    th.start()

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=HERE)
    peak = 0
    deadline = time.monotonic() + timeout
    while len(done) < n and time.monotonic() < deadline and proc.poll() is None:
        peak = max(peak, rss_kb(proc.pid))
        time.sleep(0.05)
    peak = max(peak, rss_kb(proc.pid))
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err = proc.stderr.read().decode(errors="replace")[-2000:]
    if len(done) < n:
        print(f"{name}: only {len(done)} of {n} results before timeout\n{err}", file=sys.stderr)
        return None
    elapsed = done[-1] - done[0]
    rate = (n - 1) / elapsed if elapsed > 0 else float("inf")
    return name, n, elapsed, rate, peak / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--go-worker", required=True, help="path of the built bench worker")
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=4, help="Go worker concurrency")
    ap.add_argument("--timeout", type=float, default=300)
    ns = ap.parse_args()

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-celery-")
    rs = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        env = dict(os.environ, BENCH_BROKER=url, BENCH_CONCURRENCY=str(ns.concurrency), PYTHONPATH=HERE)
        py = ["/usr/bin/python3", "-m", "celery", "-A", "pyapp", "worker", "-Q", "certmgr",
              "--without-mingle", "--without-gossip", "-l", "warning"]
        systems = [
            (f"certmgr (Go, concurrency {ns.concurrency})", [ns.go_worker]),
            ("Python Celery 5.2 solo", py + ["-P", "solo"]),
            ("Python Celery 5.2 prefork -c 1", py + ["-P", "prefork", "-c", "1"]),
        ]
        rows = []
        for name, cmd in systems:
            res = run_one(name, cmd, env, url, ns.n, ns.timeout)
            if res:
                rows.append(res)
        print("| worker | tasks | drain s | tasks/s | peak RSS MB |")
        print("|---|---:|---:|---:|---:|")
        for name, n, elapsed, rate, mb in rows:
            print(f"| {name} | {n} | {elapsed:.2f} | {rate:.0f} | {mb:.1f} |")
        if len(rows) == 3:
            go, solo = rows[0], rows[1]
            print(f"\ncertmgr vs Python solo: {go[3] / solo[3]:.1f}x throughput, "
                  f"{go[4] / solo[4]:.2f}x memory")
    finally:
        rs.terminate()
        rs.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
