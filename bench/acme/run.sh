#!/usr/bin/env bash
# Issues 50 certificates with certmgr's acme package (one after another, and 16
# at a time) and 50 with Debian's certbot certonly --webroot (one after another,
# as the Celery task ran it), against the same Pebble (PEBBLE_VA_NOSLEEP=1) and
# the same nginx serving the webroot, in one run; prints markdown rows.
# Needs pebble, pebble-challtestsrv, nginx and certbot (scripts/setup-peers.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${ACME_BENCH_CERTS:-50}
out=$(CERTMGR_BENCH_ACME=1 go test -run '^$' -bench 'BenchmarkIssue50' -benchtime "${n}x" -timeout 30m ./bench/acme 2>&1) || {
  echo "$out" >&2
  exit 1
}
# Lines look like: BenchmarkIssue50/certbot-2   50   3915744395 ns/op   195.8 wall-s
row() { echo "$out" | awk -v k="BenchmarkIssue50/$1-" 'index($1, k) == 1 { print $3, $5 }'; }
read -r seq_ns seq_wall <<<"$(row certmgr-sequential)"
read -r par_ns par_wall <<<"$(row certmgr-concurrent)"
read -r cb_ns cb_wall <<<"$(row certbot)"
if [ -z "${cb_wall:-}" ] || [ -z "${seq_wall:-}" ] || [ -z "${par_wall:-}" ]; then
  echo "$out" >&2
  echo "bench/acme: a benchmark did not run" >&2
  exit 1
fi
awk -v n="$n" -v seq_ns="$seq_ns" -v seq_wall="$seq_wall" -v par_wall="$par_wall" -v cb_ns="$cb_ns" -v cb_wall="$cb_wall" 'BEGIN {
  printf "Issuing %d certificates for distinct names against Pebble (PEBBLE_VA_NOSLEEP=1), HTTP-01 through nginx serving the webroot.\n\n", n
  printf "| tool | %d certificates, wall time | per certificate | vs certbot |\n", n
  printf "|---|---|---|---|\n"
  printf "| certbot 2.1.0 `certonly --webroot`, one process per certificate | %.1f s | %.2f s | 1× |\n", cb_wall, cb_ns / 1e9
  printf "| certmgr `acme.Manager.Issue`, one after another | %.1f s | %.2f s | %.1f× |\n", seq_wall, seq_ns / 1e9, cb_wall / seq_wall
  printf "| certmgr `acme.Manager.Issue`, 16 at a time | %.1f s | %.2f s | %.1f× |\n", par_wall, par_wall / n, cb_wall / par_wall
  printf "\nSingle-certificate latency (mean, one after another): certmgr %.2f s, certbot %.2f s.\n", seq_ns / 1e9, cb_ns / 1e9
}'
