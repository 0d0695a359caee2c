#!/usr/bin/env bash
# Times a checkpoint and a restore of a process holding SIZE_MIB (default 1024) MiB of touched
# memory through ckptd's API (request to answer as curl times it, ?wait=true: images durable,
# row ready) against `criu dump` + `sync` and `criu restore` run by hand, on the same
# filesystem. Alternates the two, RUNS times (default 5), and prints each run and the medians. Each run also times the disk's own
# limit: a durable `dd` of the same bytes (conv=fdatasync) into the same directory. Run as root
# after `make build`.
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-5}
WORK=${WORK:-/var/tmp/ckptd-measure}
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
. "$(dirname "$0")/bench_lib.sh"
rm -rf "$WORK" && mkdir -p "$WORK"
sock="$WORK/ckptd.sock"
"$CKPTD" --socket "$sock" --state-dir "$WORK/state" --workers 1 2>"$WORK/daemon.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; pkill -f "ckptd-measure-target" || true' EXIT
for _ in $(seq 100); do curl -s --unix-socket "$sock" http://x/v1/health >/dev/null && break; sleep 0.1; done

start_target() {
  setsid python3 -c "
import time, sys
sys.argv[0] = 'ckptd-measure-target'
m = bytearray($SIZE_MIB * 1024 * 1024)
for i in range(0, len(m), 4096): m[i] = 1
print('ready', flush=True)
while True: time.sleep(0.1)
" </dev/null >"$WORK/target.out" 2>&1 &
  local pid=$!
  until grep -q ready "$WORK/target.out" 2>/dev/null; do sleep 0.1; done
  echo "$pid"
}
# Until the pid is free again: the killed target is an orphan, and this machine's init may reap
# it late. Both restores start only then, so neither is timed waiting for a zombie.

: >"$WORK/api-dump"; : >"$WORK/api-restore"; : >"$WORK/criu-dump"; : >"$WORK/criu-restore"; : >"$WORK/frozen"; : >"$WORK/criu-frozen"; : >"$WORK/dd"
# The disk's limit for the same bytes: written and made durable, nothing else.
run_dd() {
  t0=$(now)
  dd if=/dev/zero of="$WORK/dd.out" bs=1M count="$SIZE_MIB" conv=fdatasync status=none
  t1=$(now)
  rm -f "$WORK/dd.out"; sync
  awk "BEGIN{print $t1 - $t0}" >>"$WORK/dd"
}
run_ckptd() {
  pid=$(start_target)
  # curl's own time_total (connect to answer): its start-up (a few ms) is the client's, and
  # the by-hand line has no client.
  curl -sf -o "$WORK/answer" -w '%{time_total}\n' --unix-socket "$sock" -X POST \
    "http://x/v1/checkpoints?wait=true" \
    -d "{\"target\":{\"kind\":\"process\",\"pid\":$pid},\"name\":\"m$run\"}" >>"$WORK/api-dump"
  python3 -c 'import json,sys; print(json.load(sys.stdin)["checkpoint"]["stats"]["frozen_time_us"]/1e6)' <"$WORK/answer" >>"$WORK/frozen"
  wait_gone "$pid"
  curl -sf -o /dev/null -w '%{time_total}\n' --unix-socket "$sock" -X POST \
    "http://x/v1/checkpoints/m$run/restore?wait=true" >>"$WORK/api-restore"
  kill -9 "$pid"; while [ -e "/proc/$pid" ]; do sleep 0.05; done
  curl -sf --unix-socket "$sock" -X DELETE "http://x/v1/checkpoints/m$run"
}

run_by_hand() {
  pid=$(start_target)
  img="$WORK/by-hand-$run"; mkdir "$img"
  t0=$(now)
  criu dump -t "$pid" -D "$img" -o dump.log -v4 --display-stats >"$WORK/stats" && sync
  t1=$(now)
  wait_gone "$pid"
  t2=$(now)
  criu restore -D "$img" -o restore.log -v4 --restore-detached
  t3=$(now)
  kill -9 "$pid"; while [ -e "/proc/$pid" ]; do sleep 0.05; done
  rm -rf "$img"
  awk '/^Frozen time:/ { print $3 / 1e6 }' "$WORK/stats" >>"$WORK/criu-frozen"
  awk "BEGIN{print $t1 - $t0}" >>"$WORK/criu-dump"; awk "BEGIN{print $t3 - $t2}" >>"$WORK/criu-restore"
}

for run in $(seq "$RUNS"); do
  # Alternate which goes first, so neither always meets a warmer or colder page cache.
  if [ $((run % 2)) -eq 1 ]; then run_ckptd; run_by_hand; else run_by_hand; run_ckptd; fi
  run_dd
  echo "run $run: ckptd dump $(tail -1 "$WORK/api-dump") s, restore $(tail -1 "$WORK/api-restore") s; criu dump+sync $(tail -1 "$WORK/criu-dump") s, restore $(tail -1 "$WORK/criu-restore") s"
done
echo "median of $RUNS, ${SIZE_MIB} MiB on $(df --output=source,fstype "$WORK" | tail -1):"
echo "  checkpoint: ckptd $(med <"$WORK/api-dump") s   criu dump + sync $(med <"$WORK/criu-dump") s   (frozen per CRIU: $(med <"$WORK/frozen") s)"
echo "  restore:    ckptd $(med <"$WORK/api-restore") s   criu restore     $(med <"$WORK/criu-restore") s"
# One line for scripts/bench.sh: size, medians (s): ckptd dump, criu dump+sync, frozen, ckptd restore,
# criu restore, frozen by hand; then the means of ckptd's checkpoint phases (dump durable release
# catalog) and the mean ckptd checkpoint, which the phases add up to (with the rest).
SOCK=$sock
echo "RESULT disk $SIZE_MIB $(med <"$WORK/dd")"
echo "RESULT process $SIZE_MIB $(med <"$WORK/api-dump") $(med <"$WORK/criu-dump") $(med <"$WORK/frozen") $(med <"$WORK/api-restore") $(med <"$WORK/criu-restore") $(med <"$WORK/criu-frozen") $(phases process) $(mean <"$WORK/api-dump")"
