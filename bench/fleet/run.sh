#!/usr/bin/env bash
# Fleet mode with real PostgreSQL and real nginx: store commit → served by
# every agent (p50/p99 over 20 renewals, with 1, 3 and 10 agents, each with
# its own nginx), a new agent's first sync of 10,000 certificates, and the
# tables' size for 10,000 certificates. Prints markdown rows.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${FLEET_BENCH_COMMITS:-20}
prop=$(CERTMGR_BENCH_FLEET=1 go test -run '^$' -bench 'BenchmarkPropagation' -benchtime "${n}x" -timeout 30m ./bench/fleet 2>&1) || {
  echo "$prop" >&2
  exit 1
}
cold=$(CERTMGR_BENCH_FLEET=1 go test -run '^$' -bench 'BenchmarkColdSync10k' -benchtime 1x -timeout 30m ./bench/fleet 2>&1) || {
  echo "$cold" >&2
  exit 1
}
# value of metric $2 on the line of benchmark $1
metric() { awk -v k="$1-" -v m="$2" 'index($1, k) == 1 { for (i = 3; i < NF; i++) if ($(i+1) == m) print $i }'; }
echo "Propagation: a new version of one of 20 served lineages committed to the store, until every"
echo "agent's nginx serves it (the agent records the version once nginx's new workers replaced the"
echo "old ones). Each agent has its own nginx (per-server mode, reload by signal) and its own"
echo "directory in memory; all on this machine, $n commits each, after 3 unmeasured ones."
echo
echo "| agents | p50 | p99 | max |"
echo "|---|---|---|---|"
for a in 1 3 10; do
  k="BenchmarkPropagation/agents=$a"
  printf '| %s | %s ms | %s ms | %s ms |\n' "$a" "$(echo "$prop" | metric "$k" p50-ms)" "$(echo "$prop" | metric "$k" p99-ms)" "$(echo "$prop" | metric "$k" max-ms)"
done
echo
echo "Cold sync: 10,000 served certificates in the store; a new agent with an empty directory, until"
echo "its first complete sync (every lineage written, custom-domains.conf rendered, nginx -t, reload"
echo "confirmed): $(echo "$cold" | metric BenchmarkColdSync10k sync-s) s."
echo "Table size (certmgr_* tables with indexes and TOAST) for 10,000 lineages of one version each:"
echo "$(echo "$cold" | metric BenchmarkColdSync10k tables-MiB) MiB."
echo
echo "Load average when run: $(cut -d' ' -f1-3 /proc/loadavg)."
