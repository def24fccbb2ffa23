#!/bin/sh
# Regeneration cost of nginxconf against real nginx at 1,000 and 10,000
# domains, in each NGINX_CERT_MODE (per-server, variable, lua), printed as a
# markdown table.
#
#   bench/nginx/run.sh            # all six runs (about 12 minutes on 2 cores)
#   BENCH=per-server/1000 bench/nginx/run.sh
#   FROM=saved-go-test-output.txt bench/nginx/run.sh   # only reformat
#
# Needs nginx (Debian's nginx-light or nginx package) and root, because the
# test nginx's workers read the generated private keys. Each run: vetting
# (cold: a fresh Vetter reads and parses every certificate; warm: the cached
# pass a regeneration normally does), render, write (candidate with fsync,
# then rename), nginx -t on the candidate, reload until new workers serve it
# (reload-cmd: until `nginx -s reload` returns, which parses the whole
# configuration itself; "reload by signal": NGINX_RELOAD_METHOD=signal), and
# nginx's memory after the reload.
# The issue's target: certmgr's own part (render + write) at most 10% of
# nginx -t on the same file; "with vet" adds the cached certificate check.
set -eu
cd "$(dirname "$0")/../.."
pattern="BenchmarkNginx/${BENCH:-}"
if [ -n "${FROM:-}" ]; then
	out=$(cat "$FROM") # reformat a saved `go test -bench` output
else
	out=$(go test ./nginxconf/ -run '^$' -bench "$pattern" -benchtime 1x -timeout 60m 2>&1) || {
		echo "$out" | grep -v '\[notice\]' >&2
		exit 1
	}
	# The raw lines too, for benchstat.
	echo "$out" | grep '^Benchmark' >&2
fi
echo "$out" | awk '
/^BenchmarkNginx\// {
	split($1, p, "/"); mode = p[2]; n = p[3]; sub(/-[0-9]+$/, "", n)
	delete m
	for (i = 3; i < NF; i += 2) m[$(i + 1)] = $i
	t = m["nginx-t-ms"]
	rows[++k] = sprintf("| %s | %s | %.1f | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f | %.0f (%.0f) | %.0f | %.0f | %.0f |",
		mode, n, m["file-MB"], m["vet-cold-ms"], m["vet-ms"], m["render-ms"], m["write-ms"], t,
		100 * (m["render-ms"] + m["write-ms"]) / t, 100 * (m["vet-ms"] + m["render-ms"] + m["write-ms"]) / t,
		m["reload-ms"], m["reload-cmd-ms"], m["reload-signal-ms"], m["master-rss-MB"], m["nginx-pss-MB"])
}
END {
	print "| mode | domains | file MB | vet cold ms | vet ms | render ms | write ms | nginx -t ms | render+write % of nginx -t | with vet % | reload ms (cmd) | reload by signal ms | master RSS MB | nginx PSS MB |"
	print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for (i = 1; i <= k; i++) print rows[i]
}'
# Issue 17: 1,000 / 10,000 / 100,000 domains, per mode and nginx version.
if [ -z "${FROM:-}" ] && [ -z "${BENCH:-}" ]; then
	echo
	echo "### 1,000 / 10,000 / 100,000 domains, per mode and nginx version (\`bench/nginx/scale.sh\`)"
	echo
	bench/nginx/scale.sh
fi
