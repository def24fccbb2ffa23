#!/usr/bin/env bash
# certmgr's one-command demo: a tenant's custom domain goes from "Issue SSL" to
# HTTPS on nginx, through the same Celery call the Django app makes.
#
# Starts, on loopback and under .demo/ (removed at the end): Redis (the shared
# one, database 14), a PostgreSQL database certmgr_demo, pebble-challtestsrv as
# the tenant's DNS, Pebble as Let's Encrypt, nginx, a stand-in for the app
# server, and the certmgr worker. Run it twice: it cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO="$ROOT/.demo"
DOMAIN=shop.tenant-demo.test
TARGET=custom.platform-demo.test
REDIS_URL=redis://127.0.0.1:6379/14
DB_URL=postgres://postgres@127.0.0.1:5432/certmgr_demo?sslmode=disable
HTTP_PORT=18080 HTTPS_PORT=18443 APP_PORT=18082
PEBBLE_PORT=14100 PEBBLE_MGMT=15100 PEBBLE_TLS=15101 DNS_PORT=18053 DNS_MGMT=18055 METRICS=19102
PY=/usr/bin/python3
CELERY_CLIENT="$ROOT/internal/testpeers/celery_client.py"
start=$(date +%s)

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say()  { printf '    %s\n' "$*"; }
# listeners PROTO PORT: the listening sockets on PORT (t: TCP, u: UDP), with
# their processes, one a line; nothing when the port is free.
listeners() { ss -Hln"$1"p "sport = :$2" 2>/dev/null; }
# Every port the demo needs must be free before anything starts.
command -v ss >/dev/null || { echo "demo: ss (iproute2) is needed to check the ports" >&2; exit 1; }
for spec in "HTTP_PORT t $HTTP_PORT" "HTTPS_PORT t $HTTPS_PORT" "APP_PORT t $APP_PORT" "PEBBLE_PORT t $PEBBLE_PORT" \
            "PEBBLE_MGMT t $PEBBLE_MGMT" "DNS_PORT u $DNS_PORT" "DNS_PORT t $DNS_PORT" \
            "DNS_MGMT t $DNS_MGMT" "METRICS t $METRICS"; do
  set -- $spec
  if taken=$(listeners "$2" "$3") && [ -n "$taken" ]; then
    echo "demo: port $3 ($1 in scripts/demo.sh) is taken, so nothing was started or cleaned up:" >&2
    echo "  $taken" >&2
    exit 1
  fi
done
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$DEMO/nginx/nginx.pid" ] && kill "$(cat "$DEMO/nginx/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  redis-cli -u "$REDIS_URL" FLUSHDB >/dev/null 2>&1 || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS certmgr_demo" >/dev/null 2>&1 || true
  rm -rf "$DEMO"
}
trap cleanup EXIT
trap 'echo; echo "demo failed; logs were in .demo/*.log:"; tail -n 20 "$DEMO"/*.log 2>/dev/null; exit 1' ERR
# wait_port PORT PID NAME: wait until PID (or a child of it) listens on PORT.
# Any other listener is not ours: a port taken since the start fails at once.
wait_port() {
  local port=$1 pid=$2 name=$3
  for _ in $(seq 200); do
    local l; l=$(listeners t "$port")
    # ss can list a socket before it can name its process (no "pid="
    # yet): only a listener named as another process is not ours.
    if [ -n "$l" ] && grep -q "pid=" <<<"$l"; then
      grep -Eq "pid=($pid|$(pgrep -d'|' -P "$pid" || echo "$pid"))," <<<"$l" && return 0
      echo "port $port answers, but not $name (pid $pid): $l" >&2; return 1
    fi
    kill -0 "$pid" 2>/dev/null || { echo "$name (pid $pid) exited before listening on port $port" >&2; return 1; }
    sleep 0.05
  done
  echo "$name (pid $pid) is not listening on port $port after 10 s" >&2; return 1
}

step "Installing and starting the peers (quick when present)"
scripts/setup-peers.sh
[ -x bin/certmgr ] || make -s build
cleanup; mkdir -p "$DEMO"/{nginx/conf.d,nginx/tmp,webroot,letsencrypt,pebble,app}
GOBIN=$(go env GOBIN); [ -n "$GOBIN" ] || GOBIN="$(go env GOPATH)/bin"

step "Django's database: a tenant adds $DOMAIN (status pending)"
psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE certmgr_demo" >/dev/null
psql -q -h 127.0.0.1 -U postgres -d certmgr_demo -f internal/schema/schema.sql >/dev/null
ID=$(psql -qtA -h 127.0.0.1 -U postgres -d certmgr_demo -c \
  "INSERT INTO tenant_customdomain (domain, mode, tenant_id, status) VALUES ('$DOMAIN', 'tenant', 7, 'pending') RETURNING id" | head -n1)
say "row id $ID"

step "Tenant DNS: $DOMAIN CNAME $TARGET (pebble-challtestsrv)"
"$GOBIN/pebble-challtestsrv" -defaultIPv4 "" -defaultIPv6 "" -dnsserver 127.0.0.1:$DNS_PORT -management 127.0.0.1:$DNS_MGMT \
  -http01 "" -https01 "" -tlsalpn01 "" -doh "" >"$DEMO/challtestsrv.log" 2>&1 & pids+=($!)
wait_port $DNS_MGMT $! pebble-challtestsrv
curl -sf -d "{\"host\":\"$DOMAIN\",\"target\":\"$TARGET\"}" http://127.0.0.1:$DNS_MGMT/set-cname
curl -sf -d "{\"host\":\"$TARGET\",\"addresses\":[\"127.0.0.1\"]}" http://127.0.0.1:$DNS_MGMT/add-a

step "Let's Encrypt stand-in: Pebble on :$PEBBLE_PORT"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=demo-ca \
  -keyout "$DEMO/pebble/ca.key" -out "$DEMO/pebble/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$DEMO/pebble/key.pem" -out "$DEMO/pebble/csr.pem" 2>/dev/null
openssl x509 -req -in "$DEMO/pebble/csr.pem" -CA "$DEMO/pebble/ca.pem" -CAkey "$DEMO/pebble/ca.key" -days 1 \
  -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1') -out "$DEMO/pebble/cert.pem" 2>/dev/null
cat >"$DEMO/pebble/config.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$PEBBLE_PORT", "managementListenAddress": "127.0.0.1:$PEBBLE_MGMT",
  "certificate": "$DEMO/pebble/cert.pem", "privateKey": "$DEMO/pebble/key.pem",
  "httpPort": $HTTP_PORT, "tlsPort": $PEBBLE_TLS, "ocspResponderURL": "", "externalAccountBindingRequired": false,
  "retryAfter": {"authz": 1, "order": 1}, "keyAlgorithm": "ecdsa",
  "profiles": {"classic": {"description": "90 days", "validityPeriod": 7776000}}}}
JSON
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 "$GOBIN/pebble" -config "$DEMO/pebble/config.json" \
  -dnsserver 127.0.0.1:$DNS_PORT >"$DEMO/pebble.log" 2>&1 & pids+=($!)
wait_port $PEBBLE_PORT $! pebble

step "nginx on :$HTTP_PORT and :$HTTPS_PORT, app server on :$APP_PORT"
echo "hello from the tenant's app" >"$DEMO/app/index.html"
(cd "$DEMO/app" && exec $PY -m http.server $APP_PORT --bind 127.0.0.1) >"$DEMO/app.log" 2>&1 & pids+=($!)
wait_port $APP_PORT $! "the app server"
cat >"$DEMO/nginx/nginx.conf" <<NGINX
$( [ "$(id -u)" = 0 ] && echo "user root;" )
worker_processes 1;
pid $DEMO/nginx/nginx.pid;
error_log $DEMO/nginx/error.log;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $DEMO/nginx/tmp/body; proxy_temp_path $DEMO/nginx/tmp/proxy;
    fastcgi_temp_path $DEMO/nginx/tmp/fcgi; uwsgi_temp_path $DEMO/nginx/tmp/uwsgi; scgi_temp_path $DEMO/nginx/tmp/scgi;
    include $DEMO/nginx/conf.d/*.conf;
}
NGINX
export CELERY_BROKER_URL=$REDIS_URL MIDSUMMER_DB_URL=$DB_URL CUSTOM_DOMAIN_CNAME_TARGET=$TARGET \
  CUSTOM_DOMAIN_ALLOW_PRIVATE_SUFFIXES=test \
  CUSTOM_DOMAIN_DNS_SERVERS=127.0.0.1:$DNS_PORT ACME_DIRECTORY_URL=https://127.0.0.1:$PEBBLE_PORT/dir \
  ACME_CA_BUNDLE=$DEMO/pebble/ca.pem ACME_EMAIL=ops@platform-demo.test ACME_WEBROOT=$DEMO/webroot \
  LETSENCRYPT_DIR=$DEMO/letsencrypt NGINX_CONF_PATH=$DEMO/nginx/conf.d/custom-domains.conf \
  NGINX_MAIN_CONF=$DEMO/nginx/nginx.conf NGINX_PREFIX=$DEMO/nginx NGINX_BINARY=/usr/sbin/nginx \
  NGINX_UPSTREAM=127.0.0.1:$APP_PORT NGINX_HTTP_PORT=$HTTP_PORT NGINX_HTTPS_PORT=$HTTPS_PORT NGINX_LISTEN_ADDRESS=127.0.0.1 \
  CERTMGR_HTTP_ADDR=127.0.0.1:$METRICS CERTMGR_LOG_FORMAT=json
bin/certmgr regen-nginx --no-reload | sed 's/^/    /'
/usr/sbin/nginx -p "$DEMO/nginx" -c "$DEMO/nginx/nginx.conf"
for _ in $(seq 100); do [ -s "$DEMO/nginx/nginx.pid" ] && break; sleep 0.05; done
wait_port $HTTPS_PORT "$(cat "$DEMO/nginx/nginx.pid")" nginx

step "certmgr worker consuming queue certmgr"
bin/certmgr worker --concurrency 2 >"$DEMO/worker.log" 2>&1 & pids+=($!)
wait_port $METRICS $! "certmgr worker"

step "Tenant clicks Verify DNS: certmgr verify-dns --domain $DOMAIN"
bin/certmgr verify-dns --domain $DOMAIN | sed 's/^/    /'

step "Django: send_task('tenant.tasks.issue_custom_domain_task', args=[$ID], queue='certmgr')"
TASK=$($PY "$CELERY_CLIENT" send --broker $REDIS_URL --task tenant.tasks.issue_custom_domain_task --args "[$ID]")
say "task id $TASK"
step "AsyncResult('$TASK').get()"
$PY "$CELERY_CLIENT" get --broker $REDIS_URL --id "$TASK" --timeout 60 | $PY -m json.tool | sed 's/^/    /'

step "The row the tenant UI reads"
psql -h 127.0.0.1 -U postgres -d certmgr_demo -c \
  "SELECT domain, status, cert_expires_at, last_error FROM tenant_customdomain WHERE id = $ID" | sed 's/^/    /'

step "certmgr certificates"
bin/certmgr certificates | sed 's/^/    /'

step "curl https://$DOMAIN:$HTTPS_PORT/ (Pebble's root trusted)"
curl -sk "https://127.0.0.1:$PEBBLE_MGMT/roots/0" >"$DEMO/pebble-root.pem"
curl -sS --resolve "$DOMAIN:$HTTPS_PORT:127.0.0.1" --cacert "$DEMO/pebble-root.pem" "https://$DOMAIN:$HTTPS_PORT/" | sed 's/^/    /'
echo | openssl s_client -connect 127.0.0.1:$HTTPS_PORT -servername $DOMAIN 2>/dev/null \
  | openssl x509 -noout -subject -issuer -enddate | sed 's/^/    /'

step "Django deletes the row, then send_task('tenant.tasks.remove_custom_domain_task', args=['$DOMAIN'])"
psql -q -h 127.0.0.1 -U postgres -d certmgr_demo -c "DELETE FROM tenant_customdomain WHERE id = $ID"
TASK=$($PY "$CELERY_CLIENT" send --broker $REDIS_URL --task tenant.tasks.remove_custom_domain_task --args "[\"$DOMAIN\"]")
$PY "$CELERY_CLIENT" get --broker $REDIS_URL --id "$TASK" --timeout 60 | $PY -m json.tool | sed 's/^/    /'
step "curl https://$DOMAIN:$HTTPS_PORT/ again: the default server answers 421"
code=$(curl -sk -o /dev/null -w '%{http_code}' --resolve "$DOMAIN:$HTTPS_PORT:127.0.0.1" "https://$DOMAIN:$HTTPS_PORT/" || true)
say "HTTP $code"
[ "$code" = 421 ] || [ "$code" = 000 ]

step "Done in $(( $(date +%s) - start )) s; cleaning up"
