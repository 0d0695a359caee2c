#!/usr/bin/env bash
# How ckptd's costs grow with the catalog and with the number of schedules.
#  - Catalog of ROWS checkpoints, for each of CATALOG_SIZES (default 1000 10000 100000): the
#    daemon's start-up (to /v1/health answering, the reconciliation of every row included) and its
#    RSS then; GET /v1/checkpoints?limit=100 and GET /v1/checkpoints/{name}, 64 clients (oha) for
#    SECS seconds each; one retention pass over all ROWS (GET /v1/schedules/bench/retention, the
#    plan a pass applies, median of 5), and the RSS after all that. Prints
#    "RESULT catalog ROWS list_p50 list_p99 get_p50 get_p99 retention startup rss_kib
#    rss_after_kib" (seconds, KiB).
#  - SCHEDULES schedules (default 1000) firing every minute, each checkpointing its own small
#    process (leave_running, keep_last 1), for MINUTES minutes (default 2): how late runs start
#    after their minute, whether each minute's runs all end within it, and the daemon's own CPU
#    time (CRIU's not counted) and RSS. Prints "RESULT schedules N runs refused lag_p50 lag_p99
#    lag_max last_end_s cpu_s_per_min rss_kib".
#  - The floor of a run's cost, in the same run: `ckptd-floor` (the bench crate) does, on one
#    thread and FLOOR_RUNS times (default 1000, one minute's runs), only the system calls and
#    SQLite statements that the promises of a scheduled run require (its four transactions on a
#    copy of the schedules' catalog, the target's /proc read, a program spawned, a copy of one of
#    the run's image folders made durable, the run before removed), timed by its own CPU clock.
#    Prints "RESULT floor RUNS total_ms catalog target spawn durable prune user system" (ms a
#    run).
#  - What a hand-off between two threads costs here: `ckptd-handoff` (the bench crate), a round
#    trip through rendezvous channels on one CPU and across two. Prints "RESULT handoff" and its
#    CPU and wall microseconds (see bench/src/handoff.rs).
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
FLOOR=${FLOOR:-$(dirname "$0")/../target/release/ckptd-floor}
FLOOR_RUNS=${FLOOR_RUNS:-1000}
HANDOFF=${HANDOFF:-$(dirname "$0")/../target/release/ckptd-handoff}
OHA=${OHA:-/var/cache/ckptd-setup/oha/bin/oha}
SECS=${SECS:-5}
CATALOG_SIZES=${CATALOG_SIZES:-"1000 10000 100000"}
SCHEDULES=${SCHEDULES:-1000}
MINUTES=${MINUTES:-2}
WORK=/var/tmp/ckptd-bench-scale; rm -rf "$WORK"; mkdir -p "$WORK"
SOCK=$WORK/s.sock
trap 'stop_daemon; pkill -f ckptd-bench-scale-sleeper || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

threads() { # threads PID: "tid<TAB>name<TAB>utime+stime<TAB>voluntary switches", a line each
  for t in /proc/"$1"/task/*; do
    printf '%s\t%s\t%s\t%s\n' "${t##*/}" "$(cat "$t/comm")" \
      "$(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')" \
      "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")"
  done 2>/dev/null
}
pct() { # pct FILE P: the P-th percentile of the numbers in FILE
  sort -n "$1" | awk -v p="$2" '{a[NR]=$1} END {i=int(NR*p/100+0.999); if (i<1) i=1; print a[i]}'
}
oha_pcts() { # oha_pcts PATH: "p50 p99" of 64 clients for SECS seconds, every answer a 200
  "$OHA" -z "${SECS}s" -c 64 --no-tui --output-format json --unix-socket "$SOCK" "http://x$1" >"$WORK/oha.json"
  python3 - "$WORK/oha.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert list(d["statusCodeDistribution"]) == ["200"], d["statusCodeDistribution"]
p = d["latencyPercentiles"]
print(p["p50"], p["p99"])
PY
}

setsid sleep 100000 &
sleeper=$!
# Until it is `sleep`: a SIGTERM that reaches the forked shell before its exec is lost, and the
# `kill` below came that early when CATALOG_SIZES is empty (the wait then never ended).
until [ "$(cat "/proc/$sleeper/comm" 2>/dev/null)" = sleep ]; do sleep 0.01; done
for rows in $CATALOG_SIZES; do
  state=$WORK/state-$rows
  start_daemon "$SOCK" "$state"
  # The schedule whose retention is measured, disabled, over every row; it keeps them all (so the
  # timer's own passes delete nothing while the plan is measured).
  api -X POST http://x/v1/schedules -d "{\"name\":\"bench\",\"target\":{\"kind\":\"process\",\"pid\":$sleeper},\"cron\":\"0 0 1 1 *\",\"enabled\":false,\"retention\":{\"keep_last\":$rows}}" >/dev/null
  since=$(api http://x/v1/schedules/bench | json 'd["created_at"]')
  stop_daemon
  make_catalog "$state" "$rows" "$since"
  t0=$(now)
  start_daemon "$SOCK" "$state"
  startup=$(elapsed "$t0" "$(now)")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status")
  list=$(oha_pcts "/v1/checkpoints?limit=100")
  get=$(oha_pcts "/v1/checkpoints/bench-$(printf %06d $((rows / 2)))")
  : >"$WORK/retention"
  for _ in 1 2 3 4 5; do
    t0=$(now)
    n=$(api http://x/v1/schedules/bench/retention | json 'len(d["keep"])')
    elapsed "$t0" "$(now)" >>"$WORK/retention"
    [ "$n" -eq "$rows" ] || { echo "retention keeps $n of $rows, wanted all" >&2; exit 1; }
  done
  rss_after=$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status")
  stop_daemon
  rm -rf "$state"
  echo "RESULT catalog $rows $list $get $(med <"$WORK/retention") $startup $rss $rss_after"
done
kill "$sleeper"; wait "$sleeper" 2>/dev/null || true

# Schedules: each its own `sleep` (minute_schedules, bench_lib.sh).
start_daemon "$SOCK" "$WORK/state-schedules"
minute_schedules "$SCHEDULES" ckptd-bench-scale-sleeper
# From the next minute on, MINUTES whole minutes.
sleep $((60 - $(date +%s) % 60 + 1))
first=$(( $(date +%s) / 60 * 60 ))
cpu0=$(awk '{print $14 + $15}' "/proc/$daemon/stat")
threads "$daemon" >"$WORK/threads0"
sleep $((MINUTES * 60 - 1))
cpu1=$(awk '{print $14 + $15}' "/proc/$daemon/stat")
threads "$daemon" >"$WORK/threads1"
rss=$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status")
# Let the last minute's runs end, then read every scheduled job.
sleep 30
python3 - "$SOCK" "$first" "$MINUTES" "$SCHEDULES" >"$WORK/lag" <<'PY'
import datetime, json, socket, sys
sock, first, minutes, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def get(path):
    s = socket.socket(socket.AF_UNIX); s.connect(sock)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(1 << 20): data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])
ts = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
jobs, after = [], None
while True:
    page = get("/v1/jobs?limit=1000" + (f"&after={after}" if after else ""))
    jobs += page["items"]; after = page.get("next")
    if not after: break
lags, ends, ok = [], [], 0
for j in jobs:
    c = ts(j["created_at"])
    slot = int(c // 60 * 60)
    if not (first <= slot < first + minutes * 60) or j["kind"] != "checkpoint": continue
    lags.append(c - slot)
    if j["state"] == "succeeded":
        ok += 1; ends.append(ts(j["finished_at"]) - slot)
lags.sort()
pick = lambda p: lags[min(len(lags) - 1, int(len(lags) * p))] if lags else 0
print(ok, minutes * n - ok, pick(0.5), pick(0.99), lags[-1] if lags else 0, max(ends) if ends else 0)
PY
read -r runs refused p50 p99 lmax lastend <"$WORK/lag"
cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" -v m="$MINUTES" 'BEGIN { printf "%.2f", (b - a) / hz / m }')
echo "RESULT schedules $SCHEDULES $runs $refused $p50 $p99 $lmax $lastend $cpu $rss"
# Where that CPU went, by thread: sqlx's SQLite threads, the runtime's (its workers and blocking
# pool), and threads that ended in between (blocking threads idle for 10 s end); and the threads'
# voluntary context switches (each a sleep until woken: a hand-off) per run.
python3 - "$WORK/threads0" "$WORK/threads1" "$cpu0" "$cpu1" "$(getconf CLK_TCK)" "$MINUTES" "$runs" <<'PY'
import sys
def load(path):
    return {t: (comm, int(c), int(v)) for t, comm, c, v in (l.split("\t") for l in open(path))}
a, b = load(sys.argv[1]), load(sys.argv[2])
cpu0, cpu1, hz, minutes, runs = (float(x) for x in sys.argv[3:])
per = lambda ticks: ticks / hz / minutes
sqlite = runtime = switches = 0
for t, (comm, c, v) in b.items():
    _, c0, v0 = a.get(t, (comm, 0, 0))
    if comm.startswith("sqlx-sqlite"):
        sqlite += c - c0
    else:
        runtime += c - c0
    switches += v - v0
other = (cpu1 - cpu0) - sqlite - runtime
print(f"RESULT schedules-threads {per(sqlite):.2f} {per(runtime):.2f} {per(other):.2f} {switches / max(runs, 1):.0f}")
PY
stop_daemon
# The floor, on a copy of the catalog the schedules wrote, with one of their image folders and
# one of their targets.
mkdir "$WORK/floor"
cp "$WORK"/state-schedules/catalog.db* "$WORK/floor/"
images=$(find "$WORK/state-schedules/checkpoints" -mindepth 2 -maxdepth 2 -name stats-dump -printf '%h\n' -quit)
[ -n "$images" ] || { echo "no image folder of a scheduled run to measure the floor with" >&2; exit 1; }
"$FLOOR" "$WORK/floor/catalog.db" "$images" "${pids[0]}" "$FLOOR_RUNS" "$WORK/floor/runs"
# What one hand-off between two threads costs on this machine, on one CPU and across two.
"$HANDOFF"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
