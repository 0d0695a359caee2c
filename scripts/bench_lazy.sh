#!/usr/bin/env bash
# Lazy restore: time from the restore request to the restored process's first new output line,
# full restore against `"lazy": true`, for a SIZE_MIB (default 1024) MiB process; alternating,
# median of RUNS. Prints "RESULT lazy SIZE full lazy full_job lazy_job".
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
SIZE_MIB=${SIZE_MIB:-1024}; RUNS=${RUNS:-3}
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
WORK=/var/tmp/ckptd-bench-lazy; rm -rf "$WORK"; mkdir -p "$WORK"
SOCK=$WORK/s.sock
start_daemon "$SOCK" "$WORK/state"
trap 'stop_daemon; pkill -f ckptd-bench-lazy-target || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
: >"$WORK/full"; : >"$WORK/lazy"; : >"$WORK/full-job"; : >"$WORK/lazy-job"
one() { # one full|lazy
  local out=$WORK/out pid n0 t0 t1 t2 body
  hog "$SIZE_MIB" ckptd-bench-lazy-target "$out"; pid=$HOG
  api -X POST 'http://x/v1/checkpoints?wait=true' -d "{\"target\":{\"kind\":\"process\",\"pid\":$pid},\"name\":\"l$RANDOM$RANDOM\"}" | json 'd["checkpoint"]["name"]' >"$WORK/name"
  wait "$pid" 2>/dev/null || true
  n0=$(wc -l <"$out")
  body=$([ "$1" = lazy ] && echo '{"lazy":true}' || echo '{}')
  t0=$(now)
  api -X POST "http://x/v1/checkpoints/$(cat "$WORK/name")/restore?wait=true" -d "$body" >/dev/null &
  local req=$!
  until [ "$(wc -l <"$out")" -gt "$n0" ]; do
    # A refused request ends the wait at once, loudly.
    kill -0 "$req" 2>/dev/null || wait "$req" || { echo "restore ($1) failed" >&2; exit 1; }
    sleep 0.005
  done
  t1=$(now)
  wait $req; t2=$(now)
  elapsed "$t0" "$t1" >>"$WORK/$1"; elapsed "$t0" "$t2" >>"$WORK/$1-job"
  kill -9 "$pid"
  api -X DELETE "http://x/v1/checkpoints/$(cat "$WORK/name")" >/dev/null
}
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then one full; one lazy; else one lazy; one full; fi
done
echo "RESULT lazy $SIZE_MIB $(med <"$WORK/full") $(med <"$WORK/lazy") $(med <"$WORK/full-job") $(med <"$WORK/lazy-job")"
