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

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=HERE)
    peak = 0
    t0 = t1 = None
    deadline = time.monotonic() + timeout
    last_rss = 0.0
    while time.monotonic() < deadline and proc.poll() is None:
        now = time.monotonic()
        if now - last_rss > 0.05:
            peak = max(peak, rss_kb(proc.pid))
            last_rss = now
        queued = r.llen("certmgr")
        if t0 is None and queued < n:
            t0 = now  # the worker took its first message
            cpu0 = cpu_s(proc.pid)
        # Done when the queue is drained, nothing is unacknowledged, and
        # every result is stored (Python acks early, before storing).
        if queued == 0 and r.hlen("unacked") == 0 and count_results(r) >= n:
            t1 = time.monotonic()
            cpu1 = cpu_s(proc.pid)
            break
        time.sleep(0.005)
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
    elapsed = t1 - t0
    return name, n, elapsed, n / elapsed, peak / 1024, (cpu1 - cpu0) / n * 1e6


def count_results(r):
    return sum(1 for _ in r.scan_iter(match="celery-task-meta-*", count=5000))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--go-worker", required=True, help="path of the built bench worker")
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--concurrency", default="4,8",
                    help="Go worker concurrencies to run, comma-separated (4 is the default of certmgr worker)")
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
        env = dict(os.environ, BENCH_BROKER=url, PYTHONPATH=HERE)
        py = ["/usr/bin/python3", "-m", "celery", "-A", "pyapp", "worker", "-Q", "certmgr",
              "--without-mingle", "--without-gossip", "-l", "warning"]
        systems = [(f"certmgr (Go, concurrency {c})", [ns.go_worker], dict(env, BENCH_CONCURRENCY=c))
                   for c in ns.concurrency.split(",")]
        systems += [
            ("Python Celery 5.2 solo", py + ["-P", "solo"], env),
            ("Python Celery 5.2 prefork -c 1", py + ["-P", "prefork", "-c", "1"], env),
        ]
        rows = []
        for name, cmd, cenv in systems:
            res = run_one(name, cmd, cenv, url, ns.n, ns.timeout)
            if res:
                rows.append(res)
        print("| worker | tasks | drain s | tasks/s | peak RSS MB | worker CPU µs/task |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, n, elapsed, rate, mb, cpu in rows:
            print(f"| {name} | {n} | {elapsed:.2f} | {rate:.0f} | {mb:.1f} | {cpu:.0f} |")
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
