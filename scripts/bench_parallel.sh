#!/usr/bin/env bash
# N parallel checkpoints of N small processes (N=8 by default, 64 MiB each, leave_running), all
# submitted at once, for workers = 1, 2, 4: time until all are ready, median of RUNS.
# Prints "RESULT parallel N WORKERS SECONDS" lines.
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
N=${N:-8}; RUNS=${RUNS:-3}; MIB=${MIB:-64}
WORK=/var/tmp/ckptd-bench-parallel; rm -rf "$WORK"; mkdir -p "$WORK"
SOCK=$WORK/s.sock
trap 'stop_daemon; pkill -f ckptd-bench-par-target || true; rm -rf "$WORK"' EXIT
pids=()
for i in $(seq "$N"); do hog "$MIB" ckptd-bench-par-target "$WORK/t$i.out"; pids+=("$HOG"); done
for w in 1 2 4; do
  start_daemon "$SOCK" "$WORK/state-$w" --workers "$w"
  : >"$WORK/times"
  for r in $(seq "$RUNS"); do
    t0=$(now)
    jobs=()
    for p in "${pids[@]}"; do
      jobs+=("$(api -X POST http://x/v1/checkpoints -d "{\"target\":{\"kind\":\"process\",\"pid\":$p},\"leave_running\":true}" | json 'd["job"]["id"]')")
    done
    for j in "${jobs[@]}"; do
      state=$(api "http://x/v1/jobs/$j?wait=120" | json 'd["state"]')
      [ "$state" = succeeded ] || { echo "job $j ended $state" >&2; exit 1; }
    done
    elapsed "$t0" "$(now)" >>"$WORK/times"
    for name in $(api 'http://x/v1/checkpoints?limit=1000' | json '" ".join(c["name"] for c in d["items"])'); do
      api -X DELETE "http://x/v1/checkpoints/$name" >/dev/null
    done
  done
  echo "RESULT parallel $N $w $(med <"$WORK/times")"
  stop_daemon
done
