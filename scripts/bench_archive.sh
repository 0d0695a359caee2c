#!/usr/bin/env bash
# Archive throughput: `GET /v1/checkpoints/{ref}/archive` (zstd, gzip) against `tar | zstd -T0`
# and `tar | gzip -1` on the same images, alternating, median of RUNS (default 3). The target holds
# SIZE_MIB (default 512) MiB, half random bytes and half touched zero pages, so that compression
# has real work. Prints one RESULT line per compression. Run as root after `make build`.
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-512}
RUNS=${RUNS:-3}
WORK=${WORK:-/var/tmp/ckptd-bench-archive}
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
rm -rf "$WORK" && mkdir -p "$WORK"
sock="$WORK/ckptd.sock"
"$CKPTD" --socket "$sock" --state-dir "$WORK/state" 2>"$WORK/daemon.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; pkill -f ckptd-archive-target || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -s --unix-socket "$sock" http://x/v1/health >/dev/null && break; sleep 0.1; done
setsid python3 -c "
import os, sys, time
sys.argv[0] = 'ckptd-archive-target'
n = $SIZE_MIB * 1024 * 1024
m = bytearray(n)
m[: n // 2] = os.urandom(n // 2)
for i in range(n // 2, n, 4096): m[i] = 1
print('ready', flush=True)
while True: time.sleep(0.1)
" </dev/null >"$WORK/target.out" 2>&1 &
pid=$!
until grep -q ready "$WORK/target.out" 2>/dev/null; do sleep 0.1; done
dir=$(curl -sf --unix-socket "$sock" -X POST 'http://x/v1/checkpoints?wait=true' \
  -d "{\"target\":{\"kind\":\"process\",\"pid\":$pid},\"name\":\"bench\",\"leave_running\":true}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["checkpoint"]["dir"])')
size=$(du -sb "$dir" | cut -f1)
now() { date +%s.%N; }
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for c in zstd gzip; do
  : >"$WORK/api"; : >"$WORK/cli"
  case $c in zstd) by_hand="zstd -T0 -3 -q";; gzip) by_hand="gzip -1";; esac
  for i in $(seq "$RUNS"); do
    for who in api cli; do
      # Alternate which goes first.
      [ $((i % 2)) -eq 0 ] && who=$([ $who = api ] && echo cli || echo api)
      sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
      t0=$(now)
      if [ $who = api ]; then
        curl -sf --unix-socket "$sock" "http://x/v1/checkpoints/bench/archive?compression=$c" -o "$WORK/out.$c"
      else
        tar -C "$dir" -cf - . | $by_hand > "$WORK/out.$c"
      fi
      t1=$(now)
      echo "$t1 - $t0" | bc -l >>"$WORK/$who"
      [ $who = api ] && stat -c %s "$WORK/out.$c" >"$WORK/api-bytes"
    done
  done
  echo "RESULT $c $size $(med <"$WORK/api") $(med <"$WORK/cli") $(cat "$WORK/api-bytes")"
done
