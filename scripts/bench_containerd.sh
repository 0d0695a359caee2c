#!/usr/bin/env bash
# containerd containers (issue 28): ckptd against the by-hand ways, on a container holding
# SIZE_MIB (default 512) MiB (a static C program); alternating, median of RUNS. Starts a private
# containerd (its own root, state and socket; no CRI plugin). The dumps, each made durable (sync
# of the images) as ckptd makes its own:
#   ckptd      POST /v1/checkpoints?wait=true (containerd's task checkpoint, image_path)
#   ctr-path   ctr tasks checkpoint --exit --image-path DIR, then sync
#   ctr-store  ctr tasks checkpoint --exit (into containerd's content store)
#   runc       runc --root /run/containerd/runc/NS checkpoint --image-path DIR, then sync
# and ckptd's restore in place (containerd 1.6's ctr restores only from its content store).
# Prints "RESULT containerd SIZE ckptd ctr_path ctr_store runc ckptd_restore".
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
SIZE_MIB=${SIZE_MIB:-512}; RUNS=${RUNS:-3}; NS=ckptdbench
W=/var/tmp/ckptd-bench-containerd; mkdir -p "$W"
CSOCK=$W/containerd.sock
SOCK=$W/s.sock
cat >"$W/config.toml" <<T
version = 2
root = "$W/root"
state = "/run/ckptd-bench-containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CSOCK"
T
containerd --config "$W/config.toml" >"$W/containerd.log" 2>&1 &
CD=$!
C="ctr -a $CSOCK -n $NS"
gone() {
  $C t kill -s KILL hog >/dev/null 2>&1 || true; sleep 0.2
  $C t delete -f hog >/dev/null 2>&1 || true
  $C c rm hog >/dev/null 2>&1 || true
}
cleanup() { stop_daemon; gone; kill $CD; wait $CD 2>/dev/null || true; rm -rf "$W/state" "$W/img"; }
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$CSOCK" ] && break; sleep 0.1; done
if ! $C images ls -q | grep -q cdm-hog; then
  rm -rf "$W/rootfs"; mkdir -p "$W/rootfs"; image_hog "$W/rootfs/hog"
  tar -C "$W/rootfs" -c . | podman import - localhost/cdm-hog:1 >/dev/null
  podman save --format oci-archive -o "$W/hog.tar" localhost/cdm-hog:1 >/dev/null 2>&1
  $C images import --base-name localhost/cdm-hog "$W/hog.tar" >/dev/null
fi
IMG=$($C images ls -q | grep cdm-hog | head -1)
rm -rf "$W/state"
start_daemon "$SOCK" "$W/state" --containerd-socket "$CSOCK" --containerd-namespace "$NS"
fresh() {
  gone
  $C run -d --log-uri "file://$W/hog.log" "$IMG" hog /hog "$SIZE_MIB" >/dev/null
  sleep 1.5
  rm -rf "$W/img"; mkdir "$W/img"
}
for f in ck cp cs ru cr; do : >"$W/$f"; done
by_ckptd() {
  fresh
  local t0 t1 t2 name
  t0=$(now)
  name=$(api -X POST 'http://x/v1/checkpoints?wait=true' -d '{"target":{"kind":"container","runtime":"containerd","id":"hog"}}' | json 'd["checkpoint"]["name"]')
  t1=$(now)
  api -X POST "http://x/v1/checkpoints/$name/restore?wait=true" >/dev/null
  t2=$(now)
  elapsed "$t0" "$t1" >>"$W/ck"; elapsed "$t1" "$t2" >>"$W/cr"
  api -X DELETE "http://x/v1/checkpoints/$name" >/dev/null
}
by_hand() {
  local t0 t1
  fresh; t0=$(now); $C t checkpoint --exit --image-path "$W/img" hog >/dev/null; sync -f "$W/img"; t1=$(now)
  elapsed "$t0" "$t1" >>"$W/cp"
  fresh; t0=$(now); $C t checkpoint --exit hog >/dev/null; t1=$(now)
  elapsed "$t0" "$t1" >>"$W/cs"
  $C images ls -q | grep -v cdm-hog | xargs -r $C images rm >/dev/null 2>&1 || true
  fresh; t0=$(now); runc --root "/run/containerd/runc/$NS" checkpoint --image-path "$W/img" hog; sync -f "$W/img"; t1=$(now)
  elapsed "$t0" "$t1" >>"$W/ru"
}
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then by_ckptd; by_hand; else by_hand; by_ckptd; fi
done
# Then the means of ckptd's checkpoint phases (dump durable release catalog) and the mean ckptd
# checkpoint, which they add up to with the rest (HTTP, admission, the pause, the job's rows).
echo "RESULT containerd $SIZE_MIB $(med <"$W/ck") $(med <"$W/cp") $(med <"$W/cs") $(med <"$W/ru") $(med <"$W/cr") $(phases containerd) $(mean <"$W/ck")"
