#!/usr/bin/env bash
# Property-based API tests: schemathesis generates requests from openapi.yaml and checks every
# answer against it (no 5xx, status codes, content types and bodies as documented).
#
# The daemon runs in its own PID namespace (`unshare --pid --fork --mount-proc`), so the pids
# schemathesis makes up can only name processes of that namespace: ckptd itself (pid 1, refused as
# init) and nothing else. It is reached over its TCP listener on loopback with a bearer token.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/var/cache/ckptd-setup/venv}
CKPTD=${CKPTD:-target/debug/ckptd}
EXAMPLES=${EXAMPLES:-40}
# `make test` pins the seed so CI runs what developers ran; `make schemathesis` explores (SEED=random).
SEED=${SEED:-random}
seed_args=()
[ "$SEED" = random ] || seed_args=(--seed "$SEED")
work=$(mktemp -d /tmp/ckptd-schemathesis.XXXXXX)
pid=
# unshare --fork ignores SIGTERM while it waits; SIGKILL it, and --kill-child stops the daemon.
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
umask 077
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
unshare --pid --fork --mount-proc --kill-child=SIGTERM "$CKPTD" --socket "$work/ckptd.sock" --state-dir "$work/state" \
  --tcp-listen "127.0.0.1:$port" --tcp-token-file "$work/token" 2>"$work/daemon.log" &
pid=$!
for _ in $(seq 100); do
  curl -sf -H "Authorization: Bearer $(cat "$work/token")" "http://127.0.0.1:$port/v1/health" >/dev/null && break
  sleep 0.1
done
status=0
"$VENV/bin/schemathesis" --config-file schemathesis.toml run openapi.yaml --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $(cat "$work/token")" \
  --checks all --max-examples "$EXAMPLES" --request-timeout 30 --no-color "${seed_args[@]}" \
  --exclude-path /v1/events || status=$?
# /v1/events is an endless stream (its own test reads it: tests/tests/ops.rs).
if [ $status -ne 0 ]; then
  echo "--- daemon log (last 40 lines) ---"; tail -40 "$work/daemon.log"
fi
exit $status
