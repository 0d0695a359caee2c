#!/usr/bin/env bash
# Issue 28's first decision, by measurement: how a containerd container's dump should go. On a
# container holding SIZE_MIB (default 512) MiB, alternating RUNS times:
#   ctr-path   containerd's task checkpoint writing the images to a directory
#              (ctr tasks checkpoint --exit --image-path DIR: runc options image_path/exit)
#   ctr-store  containerd's task checkpoint into its content store (ctr tasks checkpoint --exit)
#   runc       runc itself on the shim's container (runc --root /run/containerd/runc/NS checkpoint)
# Starts a private containerd (its own root, state and socket; no CRI plugin) and imports a
# static memory hog image (podman import + save as an OCI archive). Prints one line per run.
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
SIZE_MIB=${SIZE_MIB:-512}; RUNS=${RUNS:-3}; NS=ckptdbench
W=/var/tmp/ckptd-bench-containerd; mkdir -p "$W"
SOCK=$W/containerd.sock
cat >"$W/config.toml" <<T
version = 2
root = "$W/root"
state = "/run/ckptd-bench-containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
T
containerd --config "$W/config.toml" >"$W/containerd.log" 2>&1 &
CD=$!
C="ctr -a $SOCK -n $NS"
cleanup() {
  $C t kill -s KILL hog >/dev/null 2>&1 || true; sleep 0.3
  $C c rm hog >/dev/null 2>&1 || true
  kill $CD; wait $CD 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
if ! $C images ls -q | grep -q cdm-hog; then
  rm -rf "$W/rootfs"; mkdir -p "$W/rootfs"; image_hog "$W/rootfs/hog"
  tar -C "$W/rootfs" -c . | podman import - localhost/cdm-hog:1 >/dev/null
  podman save --format oci-archive -o "$W/hog.tar" localhost/cdm-hog:1 >/dev/null 2>&1
  $C images import --base-name localhost/cdm-hog "$W/hog.tar" >/dev/null
fi
IMG=$($C images ls -q | grep cdm-hog | head -1)
fresh() {
  $C t kill -s KILL hog >/dev/null 2>&1 || true; sleep 0.2
  $C c rm hog >/dev/null 2>&1 || true
  $C run -d "$IMG" hog /hog "$SIZE_MIB" >/dev/null
  sleep 1.5
  rm -rf "$W/img"; mkdir "$W/img"
}
for _ in $(seq "$RUNS"); do
  fresh; t0=$(now); $C t checkpoint --exit --image-path "$W/img" hog >/dev/null; t1=$(now)
  echo "ctr-path  $(elapsed "$t0" "$t1")"
  fresh; t0=$(now); $C t checkpoint --exit hog >/dev/null; t1=$(now)
  echo "ctr-store $(elapsed "$t0" "$t1")"
  $C images ls -q | grep -v cdm-hog | xargs -r $C images rm >/dev/null 2>&1 || true
  fresh; t0=$(now); runc --root "/run/containerd/runc/$NS" checkpoint --image-path "$W/img" hog; t1=$(now)
  echo "runc      $(elapsed "$t0" "$t1") ($(du -sm "$W/img" | cut -f1) MiB of images)"
done
