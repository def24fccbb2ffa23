#!/bin/sh
# Issue 17's Lua experiment (bench/nginx/lua/main.go): Debian's nginx with
# libnginx-mod-http-lua picking certificates in Lua, against a static
# per-server baseline. Needs root (the workers read the store's keys) and the
# store bench/nginx/scale.sh mints (CERTMGR_BENCH_SIZES=100000 for the default
# 100,000 names). Installs the three Debian packages when they are missing.
#
#   bench/nginx/lua/run.sh
#   bench/nginx/lua/run.sh -names 10000 -lru 5000
set -eu
cd "$(dirname "$0")/../../.."
missing=""
for p in libnginx-mod-http-lua lua-resty-core lua-resty-lrucache; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "installing Debian packages:$missing" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
go run ./bench/nginx/lua "$@"
echo
echo "Load average (1, 5, 15 min) before / after: $load_before / $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs."
