#!/usr/bin/env bash
# A group of two SIZE_MIB (default 512) MiB processes checkpointed together, against the same two
# checkpointed one after the other; leave_running, images on the state directory's disk. The
# group's frozen time is its stats.frozen_time_us (from the first member's SIGSTOP until both run
# again); the separate ones', CRIU's frozen_time of each, summed. Median of RUNS, alternating
# which goes first; this VM's speed drifts between runs (perf-notes.md), so the ratio is also taken
# within each pair and its median given. Prints "RESULT group SIZE separate_sum group ratio".
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
SIZE_MIB=${SIZE_MIB:-512}; RUNS=${RUNS:-3}
WORK=/var/tmp/ckptd-bench-group; rm -rf "$WORK"; mkdir -p "$WORK"
SOCK=$WORK/s.sock
trap 'stop_daemon; pkill -f ckptd-bench-group-member || true; rm -rf "$WORK"' EXIT
start_daemon "$SOCK" "$WORK/state"
hog "$SIZE_MIB" ckptd-bench-group-member-a "$WORK/a.out"; A=$HOG
hog "$SIZE_MIB" ckptd-bench-group-member-b "$WORK/b.out"; B=$HOG
: >"$WORK/separate"; : >"$WORK/group"; : >"$WORK/ratio"
# checkpoint TARGET_JSON: the checkpoint's frozen time (s), its name deleted after.
checkpoint() {
  api -X POST 'http://x/v1/checkpoints?wait=true' -d "{\"target\":$1,\"leave_running\":true}" \
    | json 'd["checkpoint"]["stats"]["frozen_time_us"] / 1e6, d["checkpoint"]["name"]' >"$WORK/r"
  read -r frozen name < <(tr -d "(),'" <"$WORK/r")
  api -X DELETE "http://x/v1/checkpoints/$name" >/dev/null
  sync
  echo "$frozen"
}
separate() {
  local a b
  a=$(checkpoint "{\"kind\":\"process\",\"pid\":$A}")
  b=$(checkpoint "{\"kind\":\"process\",\"pid\":$B}")
  python3 -c "print($a + $b)" >>"$WORK/separate"
}
group() {
  checkpoint "{\"kind\":\"group\",\"targets\":[{\"kind\":\"process\",\"pid\":$A},{\"kind\":\"process\",\"pid\":$B}]}" >>"$WORK/group"
}
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then separate; group; else group; separate; fi
  python3 -c "print($(tail -1 "$WORK/group") / $(tail -1 "$WORK/separate"))" >>"$WORK/ratio"
done
echo "RESULT group $SIZE_MIB $(med <"$WORK/separate") $(med <"$WORK/group") $(med <"$WORK/ratio")"
