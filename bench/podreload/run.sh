#!/bin/sh
# Reload fan-out to 1, 10 and 50 simulated pods (podreload.BenchmarkFanout),
# printed as markdown rows. Run from anywhere inside the repository.
#   pod=nginx:   each pod has its own real nginx; its exec runs nginx -t and
#                nginx -s reload on it (all on this machine's CPUs).
#   pod=instant: the pod's command exits 0 at once (certmgr's own cost and
#                the in-process fake API server's).
#   pod=remote:  the command answers after 100ms without CPU, like a
#                container runtime on another node.
# Execs use WebSocket through kube-apiserver's translator (podreload/internal/fakekube).
# Target: 50 pods take at most twice as long as 1 pod.
set -eu
cd "$(dirname "$0")/../.."
benchtime="${BENCHTIME:-5x}"
out=$(go test -run '^$' -bench 'BenchmarkFanout' -benchtime "$benchtime" ./podreload/)
echo "$out" | awk '
BEGIN {
	print "| pods run | concurrency | pods | ms per reload | × 1 pod | target ≤ 2× | CPU ms (client + fake cluster) |"
	print "|---|---|---|---|---|---|---|"
}
/^BenchmarkFanout\// {
	split($1, parts, "/")
	sub("pod=", "", parts[2]); sub("concurrency=", "", parts[3])
	pods = parts[4]; sub("pods=", "", pods); sub("-[0-9]+$", "", pods)
	ms = $3 / 1e6
	key = parts[2] "/" parts[3]
	if (pods == 1) one[key] = ms
	ratio = (key in one) ? ms / one[key] : 0
	verdict = (pods == 50) ? ((ratio <= 2) ? "met" : "missed") : ""
	cpu = ""
	for (i = 4; i < NF; i++) if ($(i + 1) == "cpu-ms/op") cpu = $i
	printf "| %s | %s | %s | %.0f | %.1f | %s | %s |\n", parts[2], parts[3], pods, ms, ratio, verdict, cpu
}'
echo
echo "load average while measuring: $(cut -d" " -f1-3 /proc/loadavg), $(nproc) CPUs"
