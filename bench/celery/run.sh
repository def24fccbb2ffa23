#!/bin/sh
# Drain 5,000 certmgr.ping tasks (results stored) with certmgr's Go worker and
# with Debian's Python Celery worker (solo, prefork -c 1) on a private
# redis-server; prints a markdown table row per system.
#   bench/celery/run.sh [-n 5000] [--concurrency 4]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
(cd "$root" && go build -o "$bin/worker" ./bench/celery/worker)
exec /usr/bin/python3 "$here/bench.py" --broker redis --go-worker "$bin/worker" "$@"
