#!/usr/bin/env bash
# Who wakes whom during scheduled runs (issue 31): SCHEDULES schedules (default 400), each
# checkpointing its own `sleep` every minute (leave_running, keep_last 1, as in bench_scale.sh);
# `perf record -e sched:sched_wakeup` with dwarf stacks of the daemon's threads over 40 s of the
# second minute (each wake-up a daemon thread issues: of another daemon thread, or of a kernel
# worker). Prints the wake-ups a run by waker and woken (runtime: the tokio workers and the
# blocking pool; sqlite: sqlx's SQLite threads; kernel workers by name), how many crossed to the
# other vCPU, and the sites that issue them: the nearest ckptd function on the waker's stack, or
# the library's (tokio's scheduler, flume, sqlx). Also each thread kind's CPU and voluntary
# switches a run over the same window. Not part of `make bench`: run by hand,
# `bash scripts/bench_sched_wakeups.sh` (about 4 minutes, perf's unwinding included).
set -euo pipefail
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }
. "$(dirname "$0")/bench_lib.sh"
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
N=${SCHEDULES:-400}
WORK=/var/tmp/ckptd-wakeups; rm -rf "$WORK"; mkdir -p "$WORK"; SOCK=$WORK/s.sock
trap 'stop_daemon; pkill -f ckptd-wakeups-sleeper || true; rm -rf "$WORK"' EXIT
start_daemon "$SOCK" "$WORK/state"
minute_schedules "$N" ckptd-wakeups-sleeper
threads() { # "tid kind cpu_ticks voluntary_switches", a line a thread
  for t in /proc/"$daemon"/task/*; do
    echo "${t##*/} $(tr ' ' _ <"$t/comm") $(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}') $(awk '/^voluntary/ {print $2}' "$t/status")"
  done 2>/dev/null
}
# The first minute's runs have no run before to prune; record the second minute's.
sleep $((60 - $(date +%s) % 60 + 1)); sleep 58
minute=$(date -u -d '+5 sec' +%M)
sleep $((60 - $(date +%s) % 60))
threads >"$WORK/th0"
perf record -q --no-inherit --call-graph dwarf,8192 -e sched:sched_wakeup -p "$daemon" \
  -o "$WORK/w.perf" -- sleep 40 >/dev/null 2>&1
threads >"$WORK/th1"
runs=$(api "http://x/v1/jobs?limit=1000" | json "len([j for j in d['items'] if j['state'] == 'succeeded' and j['created_at'][14:16] == '$minute'])")
echo "runs in the recorded minute: $runs"
perf script -i "$WORK/w.perf" -F comm,pid,tid,cpu,time,event,trace,ip,sym >"$WORK/w.txt" 2>/dev/null
python3 - "$WORK/w.txt" "$runs" "$WORK/th0" "$WORK/th1" "$(getconf CLK_TCK)" <<'PY'
import collections, re, sys
path, runs, hz = sys.argv[1], float(sys.argv[2]), float(sys.argv[5])
kind = lambda c: "sqlite" if c.startswith("sqlx") else "runtime" if c.startswith(("tokio", "ckptd")) else c
a = {l.split()[0]: l.split() for l in open(sys.argv[3])}
cpu, sw = collections.Counter(), collections.Counter()
for l in open(sys.argv[4]):
    t, comm, c, v = l.split()
    o = a.get(t, [t, comm, 0, 0])
    cpu[kind(comm)] += int(c) - int(o[2]); sw[kind(comm)] += int(v) - int(o[3])
for k in cpu:
    print(f"{k}: {cpu[k] / hz / runs * 1e3:.2f} ms of CPU and {sw[k] / runs:.1f} voluntary switches a run")
libs = ("tokio::runtime::blocking", "tokio::process", "tokio::runtime::time", "tokio::runtime::io",
        "tokio::runtime::scheduler", "flume", "sqlx")
pairs, sites, cross, n = collections.Counter(), collections.Counter(), collections.Counter(), 0
for block in open(path).read().split("\n\n"):
    lines = [l.strip() for l in block.strip().split("\n") if l.strip()]
    m = lines and re.match(r"(.+?)\s+\d+/\d+\s+\[(\d+)\].*sched_wakeup: comm=(.+?) pid=\d+.*target_cpu=(\d+)", lines[0])
    if not m:
        continue
    n += 1
    pair = (kind(m.group(1)), re.sub(r"/[0-9u]+:\d+", "/*", kind(m.group(3))))
    syms = [l.split(None, 1)[1] for l in lines[1:] if len(l.split(None, 1)) > 1]
    site = next((re.sub(r"::\{\{closure\}\}", "", s.split(" (")[0]) for s in syms if "ckptd::" in s), None)
    site = site or next((p for s in syms for p in libs if p in s), syms[0] if syms else "?")
    pairs[pair] += 1; sites[(pair, site[:100])] += 1; cross[pair] += m.group(2) != m.group(4)
print(f"{n / runs:.1f} wake-ups a run")
for p, v in pairs.most_common(12):
    print(f"  {p[0]:>8} -> {p[1]:<16} {v / runs:5.1f} a run, {cross[p] / v:.0%} to the other vCPU")
for (p, s), v in sites.most_common(25):
    print(f"  {v / runs:5.2f} {p[0]} -> {p[1]}: {s}")
PY
