#!/usr/bin/env bash
# Where the `/v1/health` tail at 1,000 requests a second goes during 1 GiB dumps (issue 31), by
# the kernel's own counters: the daemon's threads' schedstat (time run, time waiting on a run
# queue) and involuntary switches around each load, and `perf sched latency` (each task's
# scheduling delay) over 4 s of it. Idle, then while 1 GiB dumps run back to back. Not part of
# `make bench`: run by hand, `bash scripts/bench_api_sched.sh`.
set -euo pipefail
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }
. "$(dirname "$0")/bench_lib.sh"
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
OHA=${OHA:-/var/cache/ckptd-setup/oha/bin/oha}
WORK=/var/tmp/ckptd-sched; rm -rf $WORK; mkdir -p $WORK; SOCK=$WORK/s.sock
trap 'stop_daemon; pkill -f ckptd-sched-target || true; rm -rf $WORK' EXIT
start_daemon $SOCK $WORK/state
D=$daemon
counters() { # run_ns wait_ns nonvoluntary_switches, summed over the daemon's threads
  local r=0 w=0 n=0
  for t in /proc/$D/task/*; do
    read -r a b _ < $t/schedstat; r=$((r+a)); w=$((w+b))
    n=$((n+$(awk '/nonvoluntary_ctxt_switches/ {print $2}' $t/status)))
  done; echo "$r $w $n"; }
measure() { # NAME
  local before after; before=$(counters)
  ( sleep 2; perf sched record -a -q -o $WORK/$1.perf -- sleep 4 >/dev/null 2>&1 ) &
  local rec=$!
  $OHA -z 10s -c 64 -q 1000 --no-tui --output-format json --unix-socket $SOCK http://x/v1/health > $WORK/$1.json
  after=$(counters)
  wait $rec
  echo "== $1: perf sched latency (the kernel's scheduling delay of each task, 4 s)"
  perf sched latency -i $WORK/$1.perf --sort max 2>/dev/null | grep -E "Task|ckptd|tokio|oha|criu|kworker|jbd2|python" | head -12
  python3 - "$1" "$before" "$after" $WORK/$1.json <<'PY'
import json, sys
name, b, a, f = sys.argv[1], list(map(int, sys.argv[2].split())), list(map(int, sys.argv[3].split())), sys.argv[4]
d = json.load(open(f)); n = sum(d["statusCodeDistribution"].values())
p = d["latencyPercentiles"]
print(f"{name}: {n} requests, p50 {p['p50']*1e3:.3f} ms, p99 {p['p99']*1e3:.3f} ms; daemon threads ran {(a[0]-b[0])/n/1e3:.1f} us/request, "
      f"waited for a CPU {(a[1]-b[1])/n/1e3:.1f} us/request (total {(a[1]-b[1])/1e6:.0f} ms), {a[2]-b[2]} involuntary switches")
PY
}
measure idle
hog 1024 ckptd-sched-target $WORK/target.out
( while [ ! -e $WORK/stop ]; do
    n=$(api -X POST 'http://x/v1/checkpoints?wait=true' -d "{\"target\":{\"kind\":\"process\",\"pid\":$HOG},\"leave_running\":true}" | json 'd["checkpoint"]["name"]')
    api -X DELETE "http://x/v1/checkpoints/$n" >/dev/null
  done ) & dumper=$!
sleep 1
measure during-dumps
touch $WORK/stop; wait $dumper 2>/dev/null || true; kill $HOG 2>/dev/null || true
