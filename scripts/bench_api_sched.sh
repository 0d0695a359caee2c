#!/usr/bin/env bash
# Where the `/v1/health` tail at 1,000 requests a second goes during 1 GiB dumps (issue 31), by
# the kernel's own counters: the daemon's threads' schedstat (time run, time waiting on a run
# queue) and involuntary switches around each load, and `perf sched latency` (each task's
# scheduling delay) over 4 s of it. Idle, then while 1 GiB dumps run back to back. Not part of
# `make bench`: run by hand, `bash scripts/bench_api_sched.sh`.
# From the same recording, every wake-up of a daemon or oha thread (the two ends of a request):
# how long until it ran, and for those over 1 ms what its CPU was doing meanwhile. A CPU the
# guest kept idle (the idle task switched out) means the wake-up waited for the hypervisor to run
# the vCPU; a busy one, for the guest's scheduler. And the vCPUs' steal time (/proc/stat).
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
  local before after steal0 steal1; before=$(counters); steal0=$(awk '/^cpu / {print $9}' /proc/stat)
  ( sleep 2; perf sched record -a -q -o $WORK/$1.perf -- sleep 4 >/dev/null 2>&1 ) &
  local rec=$!
  $OHA -z 10s -c 64 -q 1000 --no-tui --output-format json --unix-socket $SOCK http://x/v1/health > $WORK/$1.json &
  local load=$!
  sleep 1; local mine theirs; mine=$(ls /proc/$D/task | tr '\n' ' '); theirs=$(ls /proc/$load/task | tr '\n' ' ')
  wait $load
  mine="$mine $(ls /proc/$D/task | tr '\n' ' ')" # and the blocking threads started since
  after=$(counters); steal1=$(awk '/^cpu / {print $9}' /proc/stat)
  wait $rec
  echo "== $1: steal time $(( (steal1 - steal0) * 1000 / $(getconf CLK_TCK) )) ms over the 10 s load"
  perf script -i $WORK/$1.perf -F tid,cpu,time,event,trace 2>/dev/null | python3 -c '
import re, sys, collections
mine, theirs = set(map(int, sys.argv[1].split())), set(map(int, sys.argv[2].split()))
tids = mine | theirs
woke, spent, slow = {}, collections.Counter(), 0
delays = {"the daemon": [], "oha": []}
ran = collections.defaultdict(list)  # cpu -> [(since, what)]: what each CPU ran, switch by switch
name = lambda comm, pid: "idle (the vCPU halted: the hypervisor must run it again)" if pid == 0 else "ckptd (its other threads)" if pid in mine else "oha" if pid in theirs else re.sub(r"[/:-]?[0-9]+(:[0-9A-Za-z]+)?$", "", comm)
for l in sys.stdin:
    m = re.match(r"\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)", l)
    if not m: continue
    cpu, t, ev, rest = int(m.group(2)), float(m.group(3)), m.group(4), m.group(5)
    if ev == "sched_waking":
        w = re.search(r"pid=(\d+) ", rest)
        if w and int(w.group(1)) in tids: woke[int(w.group(1))] = t
    elif ev == "sched_switch":
        w = re.search(r"next_comm=(.*) next_pid=(\d+)", rest)
        ran[cpu].append((t, name(w.group(1), int(w.group(2)))))
        tid = int(w.group(2))
        if tid in woke:
            t0 = woke.pop(tid); delays["the daemon" if tid in mine else "oha"].append(t - t0)
            if t - t0 > 1e-3 and tid in mine:
                # What this CPU ran from the wake-up to the switch to the woken thread.
                slow += 1; seq = ran[cpu]
                for i in range(len(seq) - 1):
                    a, b = max(seq[i][0], t0), min(seq[i + 1][0], t)
                    if b > a: spent[seq[i][1]] += b - a
        if len(ran[cpu]) > 64: del ran[cpu][:32]
for who, d in delays.items():
    d.sort(); n = len(d)
    print(f"wake-ups of {who}: {n}, until running p50 {d[n//2]*1e3:.3f} ms, p99 {d[int(n*.99)]*1e3:.3f} ms, max {d[-1]*1e3:.2f} ms, over 1 ms {sum(x > 1e-3 for x in d)}")
total = sum(spent.values())
if slow: print(f"  {slow} of the daemon over 1 ms ({total*1e3:.1f} ms in all): their CPU meanwhile ran")
for what, d in spent.most_common(8): print(f"  {d/total*100:5.1f}%  {what}")
' "$mine" "$theirs"
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
dump_loop $HOG $WORK/stop $WORK/dumps
sleep 1
measure during-dumps
touch $WORK/stop; wait $DUMPER 2>/dev/null || true; kill $HOG 2>/dev/null || true
