#!/bin/sh
# Issue 17's benchmark: 1,000 / 10,000 / 100,000 domains on one nginx, per
# mode and per nginx version (BenchmarkScale in nginxconf/scale_bench_test.go),
# printed as a markdown table.
#
#   bench/nginx/scale.sh
#   CERTMGR_BENCH_SIZES=1000,10000 bench/nginx/scale.sh     # skip 100,000
#   BENCH='nginx-1.22.1/variable' bench/nginx/scale.sh      # a subset
#   FROM=saved-go-test-output.txt bench/nginx/scale.sh      # only reformat
#
# nginx binaries: Debian's, and an nginx with ssl_certificate_cache (>= 1.27.4)
# when one is present: $CERTMGR_TEST_NGINX, or one built under
# $HOME/.cache/certmgr-nginx/<version>/sbin/nginx (not by this repository: see
# bench/nginx/README.md). CERTMGR_BENCH_NGINX=path,path overrides the list.
# The certificates (one CA, ECDSA P-256 leafs) are minted once, in parallel,
# into $CERTMGR_BENCH_CACHE (default $HOME/.cache/certmgr-bench) and kept.
# Needs root (the test nginx's workers read the keys).
set -eu
cd "$(dirname "$0")/../.."
if [ -n "${FROM:-}" ]; then
	out=$(cat "$FROM")
else
	load_before=$(cut -d' ' -f1-3 /proc/loadavg)
	out=$(go test ./nginxconf/ -run '^$' -bench "BenchmarkScale/${BENCH:-}" -benchtime 1x -timeout 180m 2>&1) || {
		echo "$out" | grep -v '\[notice\]' >&2
		exit 1
	}
	echo "$out" | grep -E '^Benchmark|minted' >&2
	out="$out
load $load_before / $(cut -d' ' -f1-3 /proc/loadavg)"
fi
echo "$out" | awk '
/^BenchmarkScale\// {
	split($1, p, "/"); v = substr(p[2], 7); n = p[3]; sub(/-[0-9]+$/, "", n)
	delete m
	for (i = 3; i < NF; i += 2) m[$(i + 1)] = $i
	for (j = 1; j <= 3; j++) {
		pre = (j == 1 ? "ps-" : (j == 2 ? "var-" : "lua-"))
		if (m[pre "handshakes/s"] == "") continue
		dn = (j == 1 && m["ps-domains"] != "" ? m["ps-domains"] : n)
		mode = (j == 1 ? "per-server" : (j == 3 ? "lua" : (m[pre "cert-cache-max"] > 0 ? "variable+cache" : "variable")))
		hs = m[pre "handshakes/s"]; warm = m[pre "handshakes-warm/s"]
		base = m["ps-handshakes/s"]; basewarm = m["ps-handshakes-warm/s"]
		pct = sprintf("%.0f%%", 100 * hs / base)
		if (warm != "") pct = pct sprintf(" / %.0f%%", 100 * warm / basewarm)
		rows[++k] = sprintf("| %s | %s | %d | %s | %.1f | %.1f | %.0f | %d (%d + %d) | %.0f%s | %s | %.0f | %.0f | %.0f |",
			v, mode, dn, (m[pre "auto-picks"] == 1 ? "yes" : ""), m[pre "file-MB"],
			m[pre "nginx-t-ms"] / 1000, m[pre "nginx-t-maxrss-MB"],
			m[pre "issued-to-served-ms"], m[pre "regenerate-ms"], m[pre "reload-to-served-ms"],
			hs, (warm == "" ? "" : (m[pre "cache-warmup-s"] == "" ? sprintf(" / %.0f", warm) : sprintf(" / %.0f (cache warmed in %.0f s)", warm, m[pre "cache-warmup-s"]))),
			(j == 1 ? "100%" : pct),
			m[pre "master-rss-MB"], m[pre "worker-rss-MB"], m[pre "nginx-pss-MB"])
	}
}
/^load / { load = $0 }
END {
	print "| nginx | mode | domains | auto picks it | file MB | nginx -t s | nginx -t peak RSS MB | issued → served ms (regenerate + reload to served) | handshakes/s, random SNI over all names (cold / warm cache) | % of per-server, same windows | master RSS MB | worker RSS MB | nginx PSS MB |"
	print "|---|---|---:|---|---:|---:|---:|---|---|---:|---:|---:|---:|"
	for (i = 1; i <= k; i++) print rows[i]
	print ""
	print "The per-server baseline serves at most CERTMGR_BENCH_BASELINE_MAX names (10,000): its handshake rate does not depend on the number of names, and at 100,000 it would need about 10 GB here. The rows of a size ran at the same time (handshake windows alternate)."
	if (load != "") { print ""; print "Load average (1, 5, 15 min) before / after: " substr(load, 6) ", '"$(nproc)"' CPUs." }
}'
