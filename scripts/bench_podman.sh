#!/usr/bin/env bash
# A Podman container holding SIZE_MIB (default 512) MiB: ckptd (Podman's own checkpoint, exported
# by Podman's CLI on a pipe to ckptd, the archive unpacked and made durable; restore in place
# through Podman's REST API) against
# `podman container checkpoint` / `podman container restore` by hand, and by hand with
# `--export`/`--import` (uncompressed, as ckptd asks Podman for it), and that export made durable
# (`sync FILE`, as ckptd fsyncs its images before it answers); alternating, median of RUNS.
# Starts its own `podman system service` on a socket of its own. Prints "RESULT podman SIZE
# ckptd_dump podman_dump export_dump export_sync_dump ckptd_restore podman_restore import_restore".
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
SIZE_MIB=${SIZE_MIB:-512}; RUNS=${RUNS:-3}
WORK=/var/tmp/ckptd-bench-podman; rm -rf "$WORK"; mkdir -p "$WORK"
SOCK=$WORK/ckptd.sock
PODMAN_SOCK=$WORK/podman.sock
NAME=ckptd-bench-phog
service_pid=
cleanup() {
  stop_daemon; podman rm -f "$NAME" >/dev/null 2>&1 || true
  [ -n "$service_pid" ] && { kill "$service_pid"; wait "$service_pid" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT
podman system service --time=0 "unix://$PODMAN_SOCK" >"$WORK/service.log" 2>&1 &
service_pid=$!
for _ in $(seq 100); do [ -S "$PODMAN_SOCK" ] && break; sleep 0.1; done
# The image: a static C program that holds the memory and counts on stdout.
mkdir -p "$WORK/rootfs"
image_hog "$WORK/rootfs/hog"
tar -C "$WORK/rootfs" -c . | podman import -q - localhost/ckptd-bench-phog:latest >/dev/null
printf 'podman_socket = "%s"\n' "$PODMAN_SOCK" >"$WORK/ckptd.toml"
start_daemon "$SOCK" "$WORK/state" --config "$WORK/ckptd.toml"
for f in cd pd ed es cr pr ir; do : >"$WORK/$f"; done
run_hog() {
  podman rm -f "$NAME" >/dev/null 2>&1 || true
  podman run -d --name "$NAME" localhost/ckptd-bench-phog:latest /hog "$SIZE_MIB" >/dev/null
  until podman logs "$NAME" 2>/dev/null | grep -q .; do sleep 0.05; done
  settle
}
by_ckptd() {
  run_hog
  local t0 t1 t2 name
  t0=$(now)
  name=$(api -X POST 'http://x/v1/checkpoints?wait=true' -d "{\"target\":{\"kind\":\"container\",\"runtime\":\"podman\",\"id\":\"$NAME\"}}" | json 'd["checkpoint"]["name"]')
  t1=$(now)
  api -X POST "http://x/v1/checkpoints/$name/restore?wait=true" >/dev/null
  t2=$(now)
  elapsed "$t0" "$t1" >>"$WORK/cd"; elapsed "$t1" "$t2" >>"$WORK/cr"
  api -X DELETE "http://x/v1/checkpoints/$name" >/dev/null
}
by_podman() {
  run_hog
  local t0 t1 t2
  t0=$(now)
  podman container checkpoint "$NAME" >/dev/null
  t1=$(now)
  podman container restore "$NAME" >/dev/null
  t2=$(now)
  elapsed "$t0" "$t1" >>"$WORK/pd"; elapsed "$t1" "$t2" >>"$WORK/pr"
}
by_export() {
  run_hog
  local t0 t1 t2
  rm -f "$WORK/export.tar"
  t0=$(now)
  podman container checkpoint --compress none --export "$WORK/export.tar" "$NAME" >/dev/null
  t1=$(now)
  sync "$WORK/export.tar"
  elapsed "$t0" "$(now)" >>"$WORK/es"
  podman rm -f "$NAME" >/dev/null
  local t1b; t1b=$(now)
  podman container restore --import "$WORK/export.tar" >/dev/null
  t2=$(now)
  elapsed "$t0" "$t1" >>"$WORK/ed"; elapsed "$t1b" "$t2" >>"$WORK/ir"
}
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then by_ckptd; by_podman; by_export; else by_export; by_podman; by_ckptd; fi
done
echo "RESULT podman $SIZE_MIB $(med <"$WORK/cd") $(med <"$WORK/pd") $(med <"$WORK/ed") $(med <"$WORK/es") $(med <"$WORK/cr") $(med <"$WORK/pr") $(med <"$WORK/ir")"
