#!/usr/bin/env bash
# The renewal scan: every stored certificate read and judged for renewal.
# Fills a certbot-layout store with N lineages (default 10,000), then times
# `certmgr certificates --json` (reads each lineage, decides due or not) and
# Debian's `certbot certificates` on the same store, in the same run, and
# reports wall time and peak RSS of each. Prints markdown.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${RENEWAL_BENCH_CERTS:-10000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -x bin/certmgr ] || make -s build
go run ./bench/renewal/gen -dir "$tmp/store" -n "$n"

measure() { # prints "seconds maxrss_kb"
  /usr/bin/time -f '%e %M' -o "$tmp/time" "$@" >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; return 1; }
  cat "$tmp/time"
}
read -r cm_s cm_kb <<<"$(LETSENCRYPT_DIR="$tmp/store" measure bin/certmgr certificates --json)"
cm_listed=$(grep -c '"name":' "$tmp/out")
cm_due=$(grep -c '"renewal_due": true' "$tmp/out")
read -r cb_s cb_kb <<<"$(measure certbot certificates --config-dir "$tmp/store" --work-dir "$tmp/work" --logs-dir "$tmp/logs")"
cb_listed=$(grep -c 'Certificate Name:' "$tmp/out")

awk -v n="$n" -v cm_s="$cm_s" -v cm_kb="$cm_kb" -v cb_s="$cb_s" -v cb_kb="$cb_kb" \
    -v cm_listed="$cm_listed" -v cm_due="$cm_due" -v cb_listed="$cb_listed" 'BEGIN {
  printf "A store of %d certbot-layout lineages (90-day ECDSA certificates issued 0 to 89 days ago).\n\n", n
  printf "| tool | listed | wall time | peak RSS | vs certbot |\n|---|---|---|---|---|\n"
  printf "| certbot 2.1.0 `certificates` | %d | %.2f s | %.0f MB | 1× |\n", cb_listed, cb_s, cb_kb / 1024
  printf "| certmgr `certificates --json` (renewal decision per lineage, %d due) | %d | %.2f s | %.0f MB | %.1f× faster |\n", cm_due, cm_listed, cm_s, cm_kb / 1024, cb_s / (cm_s > 0 ? cm_s : 0.01)
}'
