#!/usr/bin/env bash
# API latency over the Unix socket with 64 concurrent clients (oha, a real load tool), for
# `GET /v1/checkpoints?limit=100` on a 10,000-row catalog and for `/v1/health`, idle and while
# 1 GiB dumps run back to back, as fast as the clients can (saturating the 2 cores) and at 1,000
# requests a second between them (ROUNDS times, default 3). Prints RESULT lines: name rps p50 p99
# max (seconds).
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
OHA=${OHA:-/var/cache/ckptd-setup/oha/bin/oha}
SECS=${SECS:-10}
ROWS=${ROWS:-10000}
WORK=/var/tmp/ckptd-bench-api; rm -rf "$WORK"; mkdir -p "$WORK"
SOCK=$WORK/s.sock
trap 'stop_daemon; pkill -f ckptd-bench-api-target || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

# The catalog: ROWS ready checkpoints (bench_lib.sh's make_catalog), the daemon restarted on it.
start_daemon "$SOCK" "$WORK/state"; stop_daemon
make_catalog "$WORK/state" "$ROWS"
start_daemon "$SOCK" "$WORK/state"
count=$(api http://x/metrics | awk '/^ckptd_catalog_checkpoints / {print $2}')
[ "$count" = "$ROWS" ] || { echo "catalog has $count rows, wanted $ROWS" >&2; exit 1; }

load() { # load NAME PATH [CLIENTS [oha args...]]
  local name=$1 path=$2 clients=${3:-64}; shift 2; [ $# -gt 0 ] && shift
  "$OHA" -z "${SECS}s" -c "$clients" --no-tui --output-format json --unix-socket "$SOCK" "$@" "http://x$path" >"$WORK/$name.json"
  python3 - "$WORK/$name.json" "$name" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d["statusCodeDistribution"]
assert list(codes) == ["200"], f"non-200 answers: {codes}"
p = d["latencyPercentiles"]
print("RESULT", sys.argv[2], round(d["summary"]["requestsPerSec"]), p["p50"], p["p99"], d["summary"]["slowest"])
PY
}
load list "/v1/checkpoints?limit=100"
# Uncached: a different page each request (one client, so each is a query, 100 row decodes and a
# serialization).
load list-uncached "/v1/checkpoints\\?limit=100&after=[1-9][0-9]{3}" 1 --rand-regex-url
load list-label "/v1/checkpoints?limit=100&label=app=a3"
load health "/v1/health"

# /v1/health while 1 GiB dumps run back to back (leave_running; each deleted after).
hog 1024 ckptd-bench-api-target "$WORK/target.out"
dump_loop "$HOG" "$WORK/stop" "$WORK/dumps"
until [ -s "$WORK/dumps" ]; do sleep 0.05; done
load health-during-dumps "/v1/health"
load list-during-dumps "/v1/checkpoints?limit=100"
# The same 64 clients sending 1,000 requests a second between them (oha -q): a load far above any
# set of dashboards, that leaves the 2 cores to the daemon, CRIU and the load tool, rather than one
# that saturates them and measures its own queue.
# ROUNDS rounds of each (this VM's run-to-run spread is of the order of the goal; the report takes
# the median).
for _ in $(seq "${ROUNDS:-3}"); do
  load health-during-dumps-1000rps "/v1/health" 64 -q 1000
  load list-during-dumps-1000rps "/v1/checkpoints?limit=100" 64 -q 1000
done
touch "$WORK/stop"; wait "$DUMPER"
echo "RESULT dumps-during-load $(wc -l <"$WORK/dumps")"
