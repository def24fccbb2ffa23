#!/usr/bin/env bash
# Installs and starts every peer certmgr's tests and demo talk to, on a Debian
# bookworm machine of the go-svc kind (root, Go, Debian and Go module mirrors).
# Quick when everything is already there: it only checks.
#
#   Debian: nginx certbot python3-celery celery python3-redis ssl-cert kubectl, and
#           curl, openssl and time for the demo and the benchmarks,
#           python3-django-celery-results python3-psycopg2 (the django-db
#           result backend's oracle), rabbitmq-server, and
#           libnginx-mod-http-lua lua-resty-core lua-resty-lrucache (nginx's
#           lua module, for NGINX_CERT_MODE=lua; Debian's own nginx.conf then
#           loads it, the tests' nginx load it only where they mean to)
#   Go:     pebble + pebble-challtestsrv at PEBBLE_VERSION
#   Running: Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432,
#            RabbitMQ on 127.0.0.1:5672 (guest/guest)
set -euo pipefail

PEBBLE_VERSION="${PEBBLE_VERSION:-v2.10.3}"
DEB_PACKAGES=(nginx certbot python3-celery celery python3-redis ssl-cert kubectl redis-server redis-tools curl openssl time python3-django-celery-results python3-psycopg2 rabbitmq-server libnginx-mod-http-lua lua-resty-core lua-resty-lrucache)

log() { printf 'setup-peers: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  # The tests run nginx instances of their own on free ports; Debian's
  # default site on :80, if it starts, is left alone.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -f /etc/ssl/certs/ssl-cert-snakeoil.pem ]; then
  as_root make-ssl-cert generate-default-snakeoil --force-overwrite
fi

gobin="$(go env GOBIN)"; [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
want="$gobin/.pebble-$PEBBLE_VERSION"
if [ ! -x "$gobin/pebble" ] || [ ! -x "$gobin/pebble-challtestsrv" ] || [ ! -f "$want" ]; then
  log "go install pebble and pebble-challtestsrv $PEBBLE_VERSION"
  go install "github.com/letsencrypt/pebble/v2/cmd/pebble@$PEBBLE_VERSION" \
             "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@$PEBBLE_VERSION"
  touch "$want"
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis-server on 127.0.0.1:6379"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  log "starting PostgreSQL"
  if ! command -v pg_ctlcluster >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
  for _ in $(seq 100); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.1; done
fi
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"

if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  log "starting rabbitmq-server on 127.0.0.1:5672 (guest/guest)"
  as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 0.2; done
  as_root rabbitmqctl -q await_startup >/dev/null 2>&1 || true
fi

redis-cli -h 127.0.0.1 ping >/dev/null
(exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null
pg_isready -h 127.0.0.1 -p 5432 -q
/usr/bin/python3 -c 'import celery, redis, django_celery_results, psycopg2' 
log "all peers ready"
