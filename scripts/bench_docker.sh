#!/usr/bin/env bash
# A Docker container holding SIZE_MIB (default 512) MiB: ckptd (runc on Docker's container for
# the dump, Docker's start for the restore) against `docker checkpoint create` and
# `docker start --checkpoint`; alternating, median of RUNS. Starts its own experimental dockerd
# (its own data root and socket) unless one answers there. Prints
# "RESULT docker SIZE ckptd_dump docker_dump ckptd_restore docker_restore".
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
SIZE_MIB=${SIZE_MIB:-512}; RUNS=${RUNS:-3}
WORK=/var/tmp/ckptd-bench-docker; rm -rf "$WORK"; mkdir -p "$WORK"
export DOCKER_HOST=unix:///run/ckptd-test-docker.sock
SOCK=$WORK/s.sock
dockerd_pid=
cleanup() {
  stop_daemon; docker rm -f ckptd-bench-hog >/dev/null 2>&1 || true
  [ -n "$dockerd_pid" ] && { kill "$dockerd_pid"; wait "$dockerd_pid" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT
if ! docker info >/dev/null 2>&1; then
  echo '{"experimental": true}' >"$WORK/daemon.json"
  dockerd --config-file "$WORK/daemon.json" --data-root /var/lib/ckptd-test-docker \
    --exec-root /run/ckptd-test-docker --pidfile /run/ckptd-test-docker.pid \
    --host "$DOCKER_HOST" --iptables=false --bridge=none >"$WORK/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 300); do docker info >/dev/null 2>&1 && break; sleep 0.1; done
fi
# The image: a static C program that holds the memory and counts on stdout.
mkdir -p "$WORK/rootfs"
image_hog "$WORK/rootfs/hog"
tar -C "$WORK/rootfs" -c . | docker import - ckptd-bench-hog:latest >/dev/null
printf 'docker_socket = "/run/ckptd-test-docker.sock"\ndocker_runc_root = "/run/ckptd-test-docker/runtime-runc/moby"\n' >"$WORK/ckptd.toml"
start_daemon "$SOCK" "$WORK/state" --config "$WORK/ckptd.toml"
for f in cd dd cr dr; do : >"$WORK/$f"; done
run_hog() {
  docker rm -f ckptd-bench-hog >/dev/null 2>&1 || true
  docker run -d --name ckptd-bench-hog ckptd-bench-hog:latest /hog "$SIZE_MIB" >/dev/null
  until docker logs ckptd-bench-hog 2>/dev/null | grep -q .; do sleep 0.05; done
}
by_ckptd() {
  run_hog
  local t0 t1 t2 name
  t0=$(now)
  name=$(api -X POST 'http://x/v1/checkpoints?wait=true' -d '{"target":{"kind":"container","runtime":"docker","id":"ckptd-bench-hog"}}' | json 'd["checkpoint"]["name"]')
  t1=$(now)
  api -X POST "http://x/v1/checkpoints/$name/restore?wait=true" >/dev/null
  t2=$(now)
  elapsed "$t0" "$t1" >>"$WORK/cd"; elapsed "$t1" "$t2" >>"$WORK/cr"
  api -X DELETE "http://x/v1/checkpoints/$name" >/dev/null
}
by_docker() {
  run_hog
  local t0 t1 t2
  t0=$(now)
  docker checkpoint create ckptd-bench-hog cp1 >/dev/null
  t1=$(now)
  docker start --checkpoint cp1 ckptd-bench-hog >/dev/null
  t2=$(now)
  elapsed "$t0" "$t1" >>"$WORK/dd"; elapsed "$t1" "$t2" >>"$WORK/dr"
}
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then by_ckptd; by_docker; else by_docker; by_ckptd; fi
done
echo "RESULT docker $SIZE_MIB $(med <"$WORK/cd") $(med <"$WORK/dd") $(med <"$WORK/cr") $(med <"$WORK/dr")"
