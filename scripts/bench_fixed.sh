#!/usr/bin/env bash
# The fixed cost of a checkpoint job: a process with almost no memory (`sleep`), checkpointed
# through ckptd's API (?wait=true) against `criu dump` + `sync` by hand, RUNS_FIXED alternating
# pairs (default 15). ckptd's time is curl's own `time_total` (connect to answer), the API
# client's view; curl's start-up (a few ms here) is timed apart, since it is the client's. The
# daemon's log (debug) dates each job's steps: queued (admission done, rows committed), started
# (the job's start committed), CRIU's run (as ckptd timed it, spawn included), done (images
# durable, target ended, row final). Run as root after `make build`.
set -euo pipefail
RUNS_FIXED=${RUNS_FIXED:-15}
WARMUP=${WARMUP:-60}
WORK=${WORK:-/var/tmp/ckptd-bench-fixed}
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
FSYNCS=${FSYNCS:-$(dirname "$0")/../target/release/ckptd-fsyncs}
. "$(dirname "$0")/bench_lib.sh"
rm -rf "$WORK" && mkdir -p "$WORK"
sock=$WORK/ckptd.sock
printf 'log = "ckptd=debug,info"\n' >"$WORK/ckptd.toml"
start_daemon "$sock" "$WORK/state" --workers 1 --config "$WORK/ckptd.toml"
trap 'stop_daemon; pkill -f ckptd-bench-fixed-target || true' EXIT
target() {
  setsid bash -c 'exec -a ckptd-bench-fixed-target sleep 100000' </dev/null >/dev/null 2>&1 &
  pid=$!
  until grep -q '^ckptd-bench-fixed-target' "/proc/$pid/cmdline" 2>/dev/null; do sleep 0.01; done
}
gone() { { wait "$pid"; } 2>/dev/null || true; }
by_ckptd() {
  target
  t0=$EPOCHREALTIME
  curl -sf -o /dev/null -w '%{time_total}\n' --unix-socket "$sock" -X POST \
    "http://x/v1/checkpoints?wait=true" \
    -d "{\"target\":{\"kind\":\"process\",\"pid\":$pid},\"name\":\"$label-$run\"}" >>"$WORK/api"
  t1=$EPOCHREALTIME
  elapsed "$t0" "$t1" >>"$WORK/wall"
  gone
}
by_hand() {
  target
  mkdir "$WORK/hand-$run"
  t0=$EPOCHREALTIME
  criu dump -t "$pid" -D "$WORK/hand-$run" -o dump.log -v4
  tm=$EPOCHREALTIME
  sync
  t1=$EPOCHREALTIME
  elapsed "$t0" "$t1" >>"$WORK/hand"
  elapsed "$tm" "$t1" >>"$WORK/sync"
  gone
  rm -rf "$WORK/hand-$run"
}
phase() { # phase NAME: "sum count" of the daemon's histogram of that phase, process targets
  curl -s --unix-socket "$sock" http://x/metrics |
    awk -v p="$1" '$1 ~ "phase_seconds_sum\\{phase=\""p"\",target=\"process\"" {s=$2}
                   $1 ~ "phase_seconds_count\\{phase=\""p"\",target=\"process\"" {n=$2}
                   END {printf "%s %s", s + 0, n + 0}'
}
mean_since() { # mean_since "SUM COUNT" "SUM COUNT": the mean of what was added in between
  echo "$1 $2" | awk '{printf "%.6f", ($4 > $2 ? ($3 - $1) / ($4 - $2) : 0)}'
}
# pairs LABEL: RUNS_FIXED alternating pairs, then one line for scripts/bench.sh: medians (s) of
# ckptd's time_total, its wall time, criu dump + sync, curl alone; the job's steps, each job's
# time less its CRIU run and the by-hand sync; the means of the durable and catalog phases.
pairs() {
  label=$1
  : >"$WORK/api"; : >"$WORK/wall"; : >"$WORK/hand"; : >"$WORK/curl"; : >"$WORK/sync"
  local from d0 c0 durable catalog steps
  from=$(stat -c %s "$WORK/state.log"); d0=$(phase durable); c0=$(phase catalog)
  for run in $(seq "$RUNS_FIXED"); do
    if [ $((run % 2)) -eq 1 ]; then by_ckptd; by_hand; else by_hand; by_ckptd; fi
    # curl's own start and end, against nothing: the client's share of the wall time.
    t0=$EPOCHREALTIME; curl -s --unix-socket "$WORK/none.sock" http://x/ >/dev/null 2>&1 || true; t1=$EPOCHREALTIME
    elapsed "$t0" "$t1" >>"$WORK/curl"
  done
  durable=$(mean_since "$d0" "$(phase durable)"); catalog=$(mean_since "$c0" "$(phase catalog)")
  # Each job's steps from the log (one worker: the jobs do not overlap), from this pass on.
  steps=$(python3 - "$WORK/state.log" "$from" "$WORK/api" "$WORK/sync" <<'PY'
import re, sys, datetime, statistics
rows, q = [], {}
with open(sys.argv[1], "rb") as f:
    f.seek(int(sys.argv[2]))
    lines = f.read().decode(errors="replace").splitlines()
for line in lines:
    m = re.match(r"(\S+?)Z\s+\S+\s+(.*)", line)
    if not m:
        continue
    t = datetime.datetime.fromisoformat(m.group(1)).timestamp()
    text = m.group(2)
    if "checkpoint queued" in text:
        q = {"queued": t}
    elif "job started" in text and "queued" in q:
        q["started"] = t
    elif "criu::run: finished" in text and "started" in q:
        q["criu"] = int(re.search(r"elapsed_us=(\d+)", text).group(1)) / 1e6
        q["criu_end"] = t
    elif "job succeeded" in text and "criu_end" in q:
        rows.append((q["started"] - q["queued"], q["criu_end"] - q["criu"] - q["started"],
                     q["criu"], t - q["criu_end"], t - q["queued"]))
        q = {}
med = lambda i: statistics.median(r[i] for r in rows)
# Each job's own time: curl's time_total less that job's CRIU run (the jobs in order, one
# worker), against the by-hand `sync`: the fixed cost without CRIU's run-to-run spread.
api = [float(x) for x in open(sys.argv[3])]
assert len(api) == len(rows), (len(api), len(rows))
own = statistics.median(a - r[2] for a, r in zip(api, rows))
sync = statistics.median(float(x) for x in open(sys.argv[4]))
print(" ".join("%.6f" % med(i) for i in range(5)), "%.6f %.6f" % (own, sync))
PY
)
  echo "$label, median of $RUNS_FIXED: ckptd (curl's time_total) $(med <"$WORK/api") s, wall with curl's start $(med <"$WORK/wall") s; criu dump + sync $(med <"$WORK/hand") s; curl alone $(med <"$WORK/curl") s"
  echo "job steps (medians, s): queued->started, started->CRIU, CRIU, CRIU->done, queued->done; ckptd's time less its CRIU run, the by-hand sync: $steps; durable (mean) $durable, catalog (mean) $catalog"
  echo "RESULT $label $(med <"$WORK/api") $(med <"$WORK/wall") $(med <"$WORK/hand") $(med <"$WORK/curl") $steps $durable $catalog"
}
# A daemon just started: its catalog's WAL grows with every commit (each fsync then commits the
# file's new size to the filesystem's journal too).
pairs fixed
echo "RESULT runs fixed $RUNS_FIXED"
# The same after WARMUP more jobs (each checkpoint deleted, untimed): past SQLite's first WAL
# checkpoint (1,000 pages, about 25 jobs here), the WAL's file is written over in place, as
# through most of a daemon's life.
for w in $(seq "$WARMUP"); do
  target
  curl -sf -o /dev/null --unix-socket "$sock" -X POST "http://x/v1/checkpoints?wait=true" \
    -d "{\"target\":{\"kind\":\"process\",\"pid\":$pid},\"name\":\"w$w\"}"
  curl -sf -o /dev/null --unix-socket "$sock" -X DELETE "http://x/v1/checkpoints/w$w"
  gone
done
pairs fixed-warm
# A restore's own time, on the same warm daemon: RUNS_FIXED checkpoints of a `sleep` (untimed),
# each restored (?wait=true, timed by curl) and the restored process ended; the restore's CRIU
# run as ckptd logs it. By hand a restore is `criu restore` alone, so what is left is ckptd's.
: >"$WORK/restore"
from=$(stat -c %s "$WORK/state.log")
for run in $(seq "$RUNS_FIXED"); do
  target
  curl -sf -o /dev/null --unix-socket "$sock" -X POST "http://x/v1/checkpoints?wait=true" \
    -d "{\"target\":{\"kind\":\"process\",\"pid\":$pid},\"name\":\"r$run\"}"
  gone
  curl -sf -o /dev/null -w '%{time_total}\n' --unix-socket "$sock" -X POST \
    "http://x/v1/checkpoints/r$run/restore?wait=true" -d '{}' >>"$WORK/restore"
  kill -9 "$pid"
  while [ -e "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; do sleep 0.01; done
done
python3 - "$WORK/state.log" "$from" "$WORK/restore" <<'PY'
import re, sys, statistics
with open(sys.argv[1], "rb") as f:
    f.seek(int(sys.argv[2]))
    lines = f.read().decode(errors="replace").splitlines()
criu = [int(re.search(r"elapsed_us=(\d+)", l).group(1)) / 1e6 for l in lines
        if "criu::run: finished" in l and " restore " in l]
api = [float(x) for x in open(sys.argv[3])]
assert len(api) == len(criu), (len(api), len(criu))
print("restore, median of %d: ckptd (curl's time_total) %.6f s, its CRIU run %.6f s" %
      (len(api), statistics.median(api), statistics.median(criu)))
# RESULT fixed-restore: medians (s) of the restore's time_total, its CRIU run, and each
# restore's time less its own CRIU run.
print("RESULT fixed-restore %.6f %.6f %.6f" % (statistics.median(api), statistics.median(criu),
      statistics.median(a - c for a, c in zip(api, criu))))
PY
# Two ways of making these images durable, on copies of one of the checkpoints just taken:
# each file fsynced, or one syncfs (ckptd-fsyncs, the bench crate).
images=$(dirname "$(ls -d "$WORK"/state/checkpoints/*/pstree.img | head -1)")
mkdir -p "$WORK/fsyncs"
"$FSYNCS" "$images" "${FSYNC_ROUNDS:-40}" "$WORK/fsyncs"
