#!/usr/bin/env bash
# By hand (not part of `make bench`): does `criu restore` run faster into memory just freed than
# into memory this VM has returned to its host (virtio-balloon free page reporting, `settle` in
# bench_lib.sh)? One `criu dump` of a process holding SIZE_MIB (default 4096) MiB, then PAIRS
# (default 3) pairs of restores of the same images, alternating which goes first: "warm" right
# after a helper touched and freed SIZE_MIB, "cold" 3 s after the same free. Prints each
# restore's wall time. Run as root; BENCHMARKS.md ("Restores faster than CRIU's own").
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
SIZE_MIB=${SIZE_MIB:-4096}; PAIRS=${PAIRS:-3}
W=/var/tmp/ckptd-restore-memory; rm -rf "$W"; mkdir -p "$W/img"
trap 'rm -rf "$W"' EXIT
# touch_mem: touches SIZE_MIB MiB and frees it (exits).
touch_mem() { python3 -c "
m = bytearray($SIZE_MIB * 1024 * 1024)
for i in range(0, len(m), 4096): m[i] = 1
"; }
gone() { while [ -e "/proc/$1" ] && ! grep -q ') Z' "/proc/$1/stat" 2>/dev/null; do sleep 0.05; done; }
setsid python3 -c "
import time
m = bytearray($SIZE_MIB * 1024 * 1024)
for i in range(0, len(m), 4096): m[i] = 1
print('ready', flush=True)
while True: time.sleep(0.1)
" </dev/null >"$W/t.out" 2>&1 &
pid=$!; disown
until grep -q ready "$W/t.out" 2>/dev/null; do sleep 0.1; done
criu dump -t "$pid" -D "$W/img" -o dump.log -v4
sync; gone "$pid"; sleep 3
one() {
  touch_mem
  [ "$1" = cold ] && sleep 3
  local t0 t1
  t0=$(now)
  criu restore -D "$W/img" -o restore.log -v4 --restore-detached
  t1=$(now)
  kill -9 "$pid"; gone "$pid"; while [ -e "/proc/$pid" ]; do sleep 0.05; done
  echo "$1 $(elapsed "$t0" "$t1")"
  sleep 3
}
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) -eq 1 ]; then one warm; one cold; else one cold; one warm; fi
done
