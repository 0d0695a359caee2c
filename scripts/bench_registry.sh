#!/usr/bin/env bash
# Registries: push and pull of a SIZE_MIB (default 1024) MiB Podman container's checkpoint image
# against `podman push` / `podman pull` of Podman's own checkpoint image of the same container
# (`podman container checkpoint --create-image`), to a distribution registry (`docker-registry`,
# filesystem storage) on loopback. Before every push the registry starts again with empty
# storage, so that neither side finds its blobs already there. ckptd's pull lands on a second
# daemon (and is made durable, as every ckptd pull is); Podman's pull goes into an empty storage
# of its own (`--root`), as on a node that never had the image. Alternating, medians of RUNS (default 3). Prints
# "RESULT registry SIZE ckptd_push podman_push ckptd_pull podman_pull layer_bytes podman_layer_bytes".
# Root, after `make build`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
CKPTD=${CKPTD:-$PWD/target/release/ckptd}
WORK=/var/tmp/ckptd-bench-registry
rm -rf "$WORK" && mkdir -p "$WORK"
NAME=ckptd-bench-rhog
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HOST=127.0.0.1:$port
cat >"$WORK/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/storage
  delete:
    enabled: true
http:
  addr: $HOST
YML
registry=
service_pid=
daemon=
b_daemon=
registry_up() {
  [ -n "$registry" ] && { kill "$registry"; wait "$registry" 2>/dev/null || true; }
  rm -rf "$WORK/storage"
  docker-registry serve "$WORK/registry.yml" >>"$WORK/registry.log" 2>&1 &
  registry=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
}
cleanup() {
  stop_daemon
  [ -n "$b_daemon" ] && { kill "$b_daemon"; wait "$b_daemon" 2>/dev/null || true; }
  [ -n "$registry" ] && { kill "$registry"; wait "$registry" 2>/dev/null || true; }
  podman rm -f "$NAME" "$NAME-p" >/dev/null 2>&1 || true
  podman rmi -f localhost/ckptd-bench-rimg:1 "$HOST/bench/podman:1" >/dev/null 2>&1 || true
  [ -n "$service_pid" ] && { kill "$service_pid"; wait "$service_pid" 2>/dev/null || true; }
  umount -R "$WORK/pull-root" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
registry_up
podman system service --time=0 "unix://$WORK/podman.sock" >"$WORK/service.log" 2>&1 &
service_pid=$!
for _ in $(seq 100); do [ -S "$WORK/podman.sock" ] && break; sleep 0.1; done
mkdir -p "$WORK/rootfs"
image_hog "$WORK/rootfs/hog"
tar -C "$WORK/rootfs" -c . | podman import -q - localhost/ckptd-bench-rhog:latest >/dev/null
cat >"$WORK/ckptd.toml" <<CONF
podman_socket = "$WORK/podman.sock"
[registries.bench]
url = "http://$HOST"
repository = "bench/ckptd"
plain_http = true
CONF
SOCK=$WORK/a.sock
start_daemon "$SOCK" "$WORK/a" --config "$WORK/ckptd.toml"
"$CKPTD" --socket "$WORK/b.sock" --state-dir "$WORK/b" --config "$WORK/ckptd.toml" 2>>"$WORK/b.log" &
b_daemon=$!
for _ in $(seq 200); do curl -s --unix-socket "$WORK/b.sock" http://x/v1/health >/dev/null && break; sleep 0.05; done
b() { curl -sf --unix-socket "$WORK/b.sock" "$@"; }

# The same container twice: one checkpointed by ckptd, one by Podman into an image.
for n in "$NAME" "$NAME-p"; do
  podman rm -f "$n" >/dev/null 2>&1 || true
  podman run -d --name "$n" localhost/ckptd-bench-rhog:latest /hog "$SIZE_MIB" >/dev/null
  until podman logs "$n" 2>/dev/null | grep -q .; do sleep 0.05; done
done
api -X POST 'http://x/v1/checkpoints?wait=true' \
  -d "{\"name\":\"rhog\",\"target\":{\"kind\":\"container\",\"runtime\":\"podman\",\"id\":\"$NAME\"}}" >/dev/null
podman container checkpoint --create-image localhost/ckptd-bench-rimg:1 "$NAME-p" >/dev/null
for f in cpush ppush cpull ppull; do : >"$WORK/$f"; done
by_ckptd() {
  registry_up
  local t0 t1 t2 id
  t0=$(now)
  api -X POST "http://x/v1/checkpoints/rhog/push?remote=bench&tag=r&wait=true" >/dev/null
  t1=$(now)
  b -X POST 'http://x/v1/remotes/bench/checkpoints/r?wait=true' >"$WORK/pulled.json"
  t2=$(now)
  elapsed "$t0" "$t1" >>"$WORK/cpush"; elapsed "$t1" "$t2" >>"$WORK/cpull"
  id=$(json 'd["checkpoint"]["id"]' <"$WORK/pulled.json")
  b -X DELETE "http://x/v1/checkpoints/$id" >/dev/null
  api http://x/v1/checkpoints/rhog | json '[l for l in d["locations"] if l["kind"] == "remote"][0]["size_bytes"]' >"$WORK/layer"
  # Forget the copy (the registry is emptied before the next push anyway).
  api -X DELETE "http://x/v1/remotes/bench/checkpoints/r" >/dev/null || true
}
by_podman() {
  registry_up
  local t0 t1 t2
  podman rmi -f "$HOST/bench/podman:1" >/dev/null 2>&1 || true
  t0=$(now)
  podman push -q --tls-verify=false localhost/ckptd-bench-rimg:1 "docker://$HOST/bench/podman:1"
  t1=$(now)
  # Into a storage of its own, empty: the local image holds the same layer, which a pull into
  # the machine's storage would find there and not download (44 ms).
  rm -rf "$WORK/pull-root" "$WORK/pull-run"
  podman --root "$WORK/pull-root" --runroot "$WORK/pull-run" pull -q --tls-verify=false \
    "$HOST/bench/podman:1" >/dev/null
  t2=$(now)
  elapsed "$t0" "$t1" >>"$WORK/ppush"; elapsed "$t1" "$t2" >>"$WORK/ppull"
  skopeo inspect --raw --tls-verify=false "docker://$HOST/bench/podman:1" | json 'd["layers"][0]["size"]' >"$WORK/player"
  podman rmi -f "$HOST/bench/podman:1" >/dev/null 2>&1 || true
}
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then by_ckptd; by_podman; else by_podman; by_ckptd; fi
done
echo "RESULT registry $SIZE_MIB $(med <"$WORK/cpush") $(med <"$WORK/ppush") $(med <"$WORK/cpull") $(med <"$WORK/ppull") $(cat "$WORK/layer") $(cat "$WORK/player")"
