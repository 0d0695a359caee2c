#!/usr/bin/env bash
# Live migration against a cold one, for a SIZE_MIB (default 1024) MiB process; alternating,
# median of RUNS. Two daemons on this machine: the source, and the destination in a pid
# namespace of its own (another host's pids), reached over its TCP listener on loopback.
# Live: `POST /v1/migrations?wait=true`; its downtime and total time are the job's own figures
# (freeze to the destination's word that the process runs; freeze to the last page in), and the
# wall time of the request is printed too. Cold: a checkpoint (`?wait=true`, the process ends),
# then `ckpt migrate NAME --to B --restore` (the zstd archive streamed into the destination's
# import, then restored there): the process is down for all of it, so its downtime is its total.
# Prints "RESULT migration SIZE live_down live_total live_wall cold_total".
# With KDAT=1, a tmpfs is mounted over /run first (both hosts' CRIU then keep what they probe of
# the kernel in /run/criu.kdat, as on any host systemd booted) and the line is "migration-kdat".
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
SIZE_MIB=${SIZE_MIB:-1024}; RUNS=${RUNS:-3}
# Absolute: nsenter --mount starts the destination's daemon in its init's working directory.
CKPTD=$(realpath "${CKPTD:-$(dirname "$0")/../target/release/ckptd}")
CKPT=$(realpath "${CKPT:-$(dirname "$0")/../target/release/ckpt}")
WORK=/var/tmp/ckptd-bench-migration; rm -rf "$WORK"; mkdir -p "$WORK"
SOCK=$WORK/a.sock; BSOCK=$WORK/b.sock; PORT=${PORT:-27900}
echo "bench-migration-token-0123456789" >"$WORK/token"; chmod 600 "$WORK/token"
ns=; bdaemon=; mounted=
TAG=migration
if [ "${KDAT:-0}" = 1 ]; then
  mount -t tmpfs -o mode=755 ckptd-bench-run /run; mounted=1
  criu check >/dev/null 2>&1 || true
  [ -e /run/criu.kdat ] || { echo "criu wrote no /run/criu.kdat on the tmpfs" >&2; umount /run; exit 1; }
  TAG=migration-kdat
fi
cleanup() {
  stop_daemon
  # nsenter passes no signal on: end the destination's daemon itself, then the namespace (its
  # init dies with unshare, and everything in it with its init).
  pkill -f -- "--socket $BSOCK" || true
  [ -z "$bdaemon" ] || wait "$bdaemon" 2>/dev/null || true
  [ -z "$ns" ] || { kill -9 "$ns" 2>/dev/null || true; wait "$ns" 2>/dev/null || true; }
  pkill -f ckptd-bench-mig-target || true
  [ -z "$mounted" ] || umount /run || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

start_daemon "$SOCK" "$WORK/a"
# The destination's pid namespace, held by a reaping init; its daemon entered into it.
unshare --pid --fork --mount-proc --kill-child python3 -c "
import os, time
while True:
    try: os.wait()
    except ChildProcessError: time.sleep(0.2)" &
ns=$!
init=
for _ in $(seq 100); do init=$(cat /proc/$ns/task/$ns/children 2>/dev/null | awk '{print $1}'); [ -n "$init" ] && break; sleep 0.05; done
nsenter --target "$init" --pid --mount -- "$CKPTD" --socket "$BSOCK" --state-dir "$WORK/b" \
  --tcp-listen "127.0.0.1:$PORT" --tcp-token-file "$WORK/token" 2>>"$WORK/b.log" &
bdaemon=$!
for _ in $(seq 200); do curl -s --unix-socket "$BSOCK" http://x/v1/health >/dev/null && break; sleep 0.05; done
bapi() { curl -sf --unix-socket "$BSOCK" "$@"; }

# end_on_b: ends every migrated copy on the destination (its pid namespace's processes named so).
end_on_b() {
  local p
  for p in $(pgrep -f ckptd-bench-mig-target); do
    [ "$(readlink /proc/$p/ns/pid)" = "$(readlink /proc/$init/ns/pid)" ] && kill -9 "$p" 2>/dev/null || true
  done
  sleep 0.5
}

one() { # one live|cold
  local out=$WORK/out pid t0 t1 name
  hog "$SIZE_MIB" ckptd-bench-mig-target "$out"; pid=$HOG
  sync
  if [ "$1" = live ]; then
    t0=$(now)
    api -X POST 'http://x/v1/migrations?wait=true' \
      -d "{\"target\":{\"kind\":\"process\",\"pid\":$pid},\"to\":\"127.0.0.1:$PORT\",\"token\":\"$(cat "$WORK/token")\"}" >"$WORK/job"
    t1=$(now)
    json 'd["job"]["result"]["migration"]["downtime_ms"] / 1000' <"$WORK/job" >>"$WORK/live-down"
    json 'd["job"]["result"]["migration"]["total_ms"] / 1000' <"$WORK/job" >>"$WORK/live-total"
    elapsed "$t0" "$t1" >>"$WORK/live-wall"
  else
    name=c$RANDOM$RANDOM
    t0=$(now)
    api -X POST 'http://x/v1/checkpoints?wait=true' -d "{\"target\":{\"kind\":\"process\",\"pid\":$pid},\"name\":\"$name\"}" >/dev/null
    "$CKPT" --socket "$SOCK" migrate "$name" --to "127.0.0.1:$PORT" --token-file "$WORK/token" --restore >/dev/null
    t1=$(now)
    elapsed "$t0" "$t1" >>"$WORK/cold-total"
    api -X DELETE "http://x/v1/checkpoints/$name" >/dev/null
  fi
  wait "$pid" 2>/dev/null || true
  end_on_b
  # The destination's copies of the cold runs are checkpoints there: drop them.
  for id in $(bapi 'http://x/v1/checkpoints?limit=1000' | json '" ".join(c["id"] for c in d["items"])'); do
    bapi -X DELETE "http://x/v1/checkpoints/$id" >/dev/null || true
  done
}
: >"$WORK/live-down"; : >"$WORK/live-total"; : >"$WORK/live-wall"; : >"$WORK/cold-total"
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then one live; one cold; else one cold; one live; fi
done
echo "RESULT $TAG $SIZE_MIB $(med <"$WORK/live-down") $(med <"$WORK/live-total") $(med <"$WORK/live-wall") $(med <"$WORK/cold-total")"
