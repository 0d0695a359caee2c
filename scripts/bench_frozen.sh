#!/usr/bin/env bash
# How long a SIZE_MIB (default 1024) MiB process stays frozen (CRIU's own statistics) when its
# images go to the disk (the state directory) and when they go to tmpfs (/dev/shm), i.e. what a
# tmpfs staging area could save; median of RUNS. Prints "RESULT frozen SIZE disk tmpfs".
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
SIZE_MIB=${SIZE_MIB:-1024}; RUNS=${RUNS:-3}
WORK=/var/tmp/ckptd-bench-frozen; rm -rf "$WORK"; mkdir -p "$WORK"
SHM=/dev/shm/ckptd-bench-frozen; rm -rf "$SHM"; mkdir -p "$SHM"
SOCK=$WORK/s.sock
trap 'stop_daemon; pkill -f ckptd-bench-frozen-target || true; rm -rf "$WORK" "$SHM"' EXIT
start_daemon "$SOCK" "$WORK/state"
hog "$SIZE_MIB" ckptd-bench-frozen-target "$WORK/out"
: >"$WORK/disk"; : >"$WORK/tmpfs"
one() {
  local extra=$([ "$1" = tmpfs ] && echo ",\"checkpoint_dir\":\"$SHM\"")
  api -X POST 'http://x/v1/checkpoints?wait=true' -d "{\"target\":{\"kind\":\"process\",\"pid\":$HOG},\"leave_running\":true$extra}" \
    | json 'd["checkpoint"]["stats"]["frozen_time_us"] / 1e6, d["checkpoint"]["name"]' >"$WORK/r"
  read -r frozen name < <(tr -d "(),'" <"$WORK/r")
  echo "$frozen" >>"$WORK/$1"
  api -X DELETE "http://x/v1/checkpoints/$name" >/dev/null
}
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then one disk; one tmpfs; else one tmpfs; one disk; fi
done
echo "RESULT frozen $SIZE_MIB $(med <"$WORK/disk") $(med <"$WORK/tmpfs")"
