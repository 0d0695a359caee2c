#!/usr/bin/env bash
# Remotes: push and pull of a SIZE_MIB (default 1024) MiB checkpoint against a local S3 server
# (moto, from the set-up virtualenv: slow, about 60 MB/s up, so the push measures the server as
# much as ckptd), next to the archive stream to /dev/null and `tar | zstd -T0 -3 >/dev/null` on
# the same images, and the daemon's RSS growth during the push (sampled every 20 ms). Medians of
# RUNS (default 3), alternating the archive and tar|zstd. Prints RESULT lines. Root, after
# `make build`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
CKPTD=${CKPTD:-$PWD/target/release/ckptd}
VENV=/var/cache/ckptd-setup/venv
WORK=${WORK:-/var/tmp/ckptd-bench-remote}
rm -rf "$WORK" && mkdir -p "$WORK"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
INITIAL_NO_AUTH_ACTION_COUNT=3 "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 &
moto=$!
daemon=
trap 'stop_daemon; kill $moto 2>/dev/null; pkill -f ckptd-remote-target || true; rm -rf "$WORK"' EXIT
# A TCP connect, not a request: the server lets only its first three requests through unsigned.
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
"$VENV/bin/python" tests/support/s3tool.py setup "http://127.0.0.1:$port" bench >"$WORK/creds.json"
python3 -c "
import json; c = json.load(open('$WORK/creds.json'))
open('$WORK/creds.toml', 'w').write('access_key_id = \"%s\"\nsecret_access_key = \"%s\"\n' % (c['access_key_id'], c['secret_access_key']))"
chmod 600 "$WORK/creds.toml"
cat >"$WORK/ckptd.toml" <<CONF
[remotes.bench]
endpoint = "http://127.0.0.1:$port"
bucket = "bench"
credentials_file = "$WORK/creds.toml"
CONF
SOCK="$WORK/ckptd.sock"
start_daemon "$SOCK" "$WORK/state" --config "$WORK/ckptd.toml"
setsid python3 -c "
import os, sys, time
sys.argv[0] = 'ckptd-remote-target'
n = $SIZE_MIB * 1024 * 1024
m = bytearray(n)
m[: n // 2] = os.urandom(n // 2)
for i in range(n // 2, n, 4096): m[i] = 1
print('ready', flush=True)
while True: time.sleep(0.1)
" </dev/null >"$WORK/target.out" 2>&1 &
until grep -q ready "$WORK/target.out" 2>/dev/null; do sleep 0.1; done
pid=$(pgrep -f ckptd-remote-target | head -1)
dir=$(api -X POST 'http://x/v1/checkpoints?wait=true' \
  -d "{\"target\":{\"kind\":\"process\",\"pid\":$pid},\"name\":\"bench\",\"leave_running\":true}" |
  json 'd["checkpoint"]["dir"]')
size=$(du -sb "$dir" | cut -f1)
: >"$WORK/archive"; : >"$WORK/tar"; : >"$WORK/push"; : >"$WORK/pull"; : >"$WORK/rss"
for i in $(seq "$RUNS"); do
  for who in archive tar; do
    [ $((i % 2)) -eq 0 ] && who=$([ $who = archive ] && echo tar || echo archive)
    t0=$(now)
    if [ $who = archive ]; then
      api 'http://x/v1/checkpoints/bench/archive' -o /dev/null
    else
      tar -C "$dir" -cf - . | zstd -T0 -3 -q >/dev/null
    fi
    elapsed "$t0" "$(now)" >>"$WORK/$who"
  done
  # Push (the local images stay), sampling the daemon's RSS meanwhile.
  base=$(awk '/VmRSS/ {print $2}' /proc/$daemon/status)
  ( peak=$base; while [ ! -e "$WORK/pushed" ]; do
      r=$(awk '/VmRSS/ {print $2}' /proc/$daemon/status); [ "$r" -gt "$peak" ] && peak=$r
      echo $((peak - base)) >"$WORK/rss.now"; sleep 0.02; done ) &
  sampler=$!
  rm -f "$WORK/pushed"
  t0=$(now)
  api -X POST 'http://x/v1/checkpoints/bench/push?remote=bench&keep_local=false&wait=true' >"$WORK/push.json"
  elapsed "$t0" "$(now)" >>"$WORK/push"
  touch "$WORK/pushed"; wait $sampler
  cat "$WORK/rss.now" >>"$WORK/rss"
  object=$(json 'd["job"]["result"]["remote_copy"]["size_bytes"]' <"$WORK/push.json")
  # Pull the images back (the row stays; its local images were dropped).
  t0=$(now)
  api -X POST 'http://x/v1/remotes/bench/checkpoints/bench?wait=true' -d '{}' >/dev/null
  elapsed "$t0" "$(now)" >>"$WORK/pull"
  dir=$(api 'http://x/v1/checkpoints/bench' | json 'd["dir"]')
  api -X DELETE 'http://x/v1/remotes/bench/checkpoints/bench' >/dev/null
done
echo "RESULT remote $size $object $(med <"$WORK/archive") $(med <"$WORK/tar") $(med <"$WORK/push") $(med <"$WORK/pull") $(sort -n "$WORK/rss" | tail -1)"
