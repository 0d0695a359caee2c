#!/usr/bin/env bash
# A runc container holding SIZE_MIB (default 512) MiB: ckptd checkpoint (request to ready, images
# fsynced, container removed) and restore in place, against `runc checkpoint` + `sync` and
# `runc restore -d` by hand; alternating, median of RUNS. Prints
# "RESULT container SIZE ckptd_dump runc_dump ckptd_restore runc_restore", and for each dump
# (issue 31) what the kernel and CRIU did during it: "RESULT container-run SIZE SIDE RUN SECONDS
# DIRTY WRITEBACK DIRTY_PEAK WRITEBACK_PEAK MEMWRITE_S PAGES_WRITTEN FREEZER", the page counts
# from /proc/vmstat (at the start, and the most seen; sampled every 50 ms), CRIU's page write
# from its stats-dump, and the container's freezer states in the order seen (`-` once the
# cgroup is gone).
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
STATS=${STATS:-$(dirname "$0")/../target/release/ckptd-stats}
SIZE_MIB=${SIZE_MIB:-512}; RUNS=${RUNS:-3}
WORK=/var/tmp/ckptd-bench-container; rm -rf "$WORK"; mkdir -p "$WORK"
SOCK=$WORK/s.sock
ID=ckptd-bench-ct
trap 'stop_daemon; runc delete -f $ID 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The bundle: busybox-static plus a static C program that holds the memory and counts into /out.log.
B=$WORK/bundle; mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/dev" "$B/rootfs/sys" "$B/rootfs/tmp"
cp /bin/busybox "$B/rootfs/bin/busybox"; ln -s busybox "$B/rootfs/bin/sh"
cat >"$WORK/hog.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    size_t n = (size_t)atol(argv[1]) << 20;
    char *m = malloc(n);
    for (size_t i = 0; i < n; i += 4096) m[i] = 1;
    FILE *f = fopen("/out.log", "a");
    for (long i = 0;; i++) { fprintf(f, "%ld\n", i); fflush(f); usleep(50000); }
}
C
gcc -O2 -static -o "$B/rootfs/hog" "$WORK/hog.c"
(cd "$B" && runc spec)
python3 - "$B/config.json" "$SIZE_MIB" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False; c["process"]["args"] = ["/hog", sys.argv[2]]; c["root"]["readonly"] = False
json.dump(c, open(p, "w"))
PY
run_ct() {
  rm -f "$B/rootfs/out.log"
  (cd "$B" && runc run -d $ID </dev/null >/dev/null 2>&1)
  until [ -s "$B/rootfs/out.log" ]; do sleep 0.02; done
}
# watch_dump: in the background until `unwatch`, samples the dirty and writeback page counts
# and the container's freezer state every 50 ms into $WORK/watch (builtins only: no process
# started per sample).
watch_dump() {
  local pid state
  pid=$(runc state $ID | json 'd["pid"]')
  state=/sys/fs/cgroup/freezer$(awk -F: '$2 == "freezer" {print $3}' "/proc/$pid/cgroup")/freezer.state
  (
    trap exit TERM
    exec 3<> <(:)  # a pipe no one writes: `read -t` on it is a sleep without a process
    while :; do
      while read -r k v; do case $k in nr_dirty) d=$v ;; nr_writeback) w=$v ;; esac; done </proc/vmstat
      f=-; [ -r "$state" ] && read -r f <"$state" 2>/dev/null || true
      echo "$d $w $f"
      read -rt 0.05 -u 3 || true
    done
  ) >"$WORK/watch" &
  watcher=$!
}
# unwatch SIDE RUN SECONDS MEMWRITE_US PAGES: stops the sampler, prints the dump's
# `RESULT container-run` line.
unwatch() {
  kill "$watcher"; wait "$watcher" 2>/dev/null || true
  awk -v size="$SIZE_MIB" -v side="$1" -v run="$2" -v t="$3" -v mw="$4" -v pages="$5" '
    NR == 1 { d0 = $1; w0 = $2 }
    { if ($1 > dm) dm = $1; if ($2 > wm) wm = $2; if ($3 != last) { seen = seen (seen ? ">" : "") $3; last = $3 } }
    END { printf "RESULT container-run %s %s %s %s %d %d %d %d %.3f %d %s\n", size, side, run, t, d0, w0, dm, wm, mw / 1e6, pages, seen }' "$WORK/watch"
}
start_daemon "$SOCK" "$WORK/state"
for f in cd cr rd rr; do : >"$WORK/$f"; done
by_ckptd() {
  run_ct
  settle
  local name
  watch_dump
  # As curl times it (time_total): curl's own start is the client's (scripts/measure.sh).
  api -o "$WORK/answer" -w '%{time_total}\n' -X POST 'http://x/v1/checkpoints?wait=true' \
    -d "{\"target\":{\"kind\":\"container\",\"id\":\"$ID\"}}" >>"$WORK/cd"
  unwatch ckptd "$i" "$(tail -1 "$WORK/cd")" \
    $(json 'd["checkpoint"]["stats"]["memwrite_time_us"], d["checkpoint"]["stats"]["pages_written"]' <"$WORK/answer")
  name=$(json 'd["checkpoint"]["name"]' <"$WORK/answer")
  api -o /dev/null -w '%{time_total}\n' -X POST "http://x/v1/checkpoints/$name/restore?wait=true" >>"$WORK/cr"
  runc delete -f $ID; api -X DELETE "http://x/v1/checkpoints/$name" >/dev/null
}
by_hand() {
  run_ct
  local d=$WORK/img t0 t1 t2
  rm -rf "$d"
  settle
  watch_dump
  t0=$(now)
  runc checkpoint --image-path "$d" --work-path "$d" $ID; sync
  t1=$(now)
  unwatch runc "$i" "$(elapsed "$t0" "$t1")" $("$STATS" "$d" | awk '{print $2, $3}')
  runc restore -d --image-path "$d" --work-path "$d" --bundle "$B" $ID </dev/null >/dev/null 2>&1
  t2=$(now)
  elapsed "$t0" "$t1" >>"$WORK/rd"; elapsed "$t1" "$t2" >>"$WORK/rr"
  runc delete -f $ID
}
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then by_ckptd; by_hand; else by_hand; by_ckptd; fi
done
echo "RESULT container $SIZE_MIB $(med <"$WORK/cd") $(med <"$WORK/rd") $(med <"$WORK/cr") $(med <"$WORK/rr") $(phases runc)"
