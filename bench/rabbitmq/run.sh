#!/bin/sh
# Drain N certmgr.ping tasks from RabbitMQ (results to a private redis-server)
# with certmgr's Go worker and with Debian's Python Celery worker, one after
# the other in the same run, each on a fresh virtual host of the local
# RabbitMQ (127.0.0.1:5672, guest/guest); prints a markdown table. The
# script is bench/celery's, with --broker rabbitmq.
#   bench/rabbitmq/run.sh [-n 2000] [--concurrency 4]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
(cd "$root" && go build -o "$bin/worker" ./bench/celery/worker)
exec /usr/bin/python3 "$root/bench/celery/bench.py" --broker rabbitmq --go-worker "$bin/worker" "$@"
