#!/usr/bin/env bash
# Lazy restore: time from the restore request to the restored process's first new output line,
# full restore against `"lazy": true`, for a SIZE_MIB (default 1024) MiB process; alternating,
# median of RUNS. The request and the watch of the output are one Python loop (0.5 ms polls), so
# neither a shell's process starts nor a poll interval is counted.
# Prints "RESULT lazy SIZE full lazy full_job lazy_job".
# CRIU caches what it probes of the kernel in /run/criu.kdat only when /run is a tmpfs (as on any
# host systemd booted); where it is not (this VM), every CRIU run probes again, and a lazy restore
# runs two. With KDAT_PASS=1 (default when /run is not a tmpfs) the same is measured a second time
# with a tmpfs mounted over /run for the pass (unmounted after), printed as "RESULT lazy-kdat ...".
set -euo pipefail
. "$(dirname "$0")/bench_lib.sh"
SIZE_MIB=${SIZE_MIB:-1024}; RUNS=${RUNS:-3}
CKPTD=${CKPTD:-$(dirname "$0")/../target/release/ckptd}
WORK=/var/tmp/ckptd-bench-lazy; rm -rf "$WORK"; mkdir -p "$WORK"
SOCK=$WORK/s.sock
run_tmpfs=$([ "$(stat -f -c %T /run)" = tmpfs ] && echo 0 || echo 1)
KDAT_PASS=${KDAT_PASS:-$run_tmpfs}
mounted=
trap 'stop_daemon; pkill -f ckptd-bench-lazy-target || true; [ -z "$mounted" ] || umount /run; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

one() { # one full|lazy
  local out=$WORK/out pid body
  hog "$SIZE_MIB" ckptd-bench-lazy-target "$out"; pid=$HOG
  api -X POST 'http://x/v1/checkpoints?wait=true' -d "{\"target\":{\"kind\":\"process\",\"pid\":$pid},\"name\":\"l$RANDOM$RANDOM\"}" | json 'd["checkpoint"]["name"]' >"$WORK/name"
  wait "$pid" 2>/dev/null || true
  body=$([ "$1" = lazy ] && echo '{"lazy":true}' || echo '{}')
  python3 - "$SOCK" "$(cat "$WORK/name")" "$body" "$out" >"$WORK/times" <<'PY'
import os, socket, sys, time
sock, name, body, out = sys.argv[1:]
size0 = os.stat(out).st_size
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
req = (f"POST /v1/checkpoints/{name}/restore?wait=true HTTP/1.1\r\nHost: x\r\n"
       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")
t0 = time.monotonic()
s.sendall(req.encode())
s.setblocking(False)
first = job = None
data = b""
while first is None or job is None:
    if first is None and os.stat(out).st_size > size0:
        first = time.monotonic()
    if job is None:
        try:
            chunk = s.recv(1 << 16)
            if chunk:
                data += chunk
            else:
                job = time.monotonic()
                status = data.split(b" ", 2)[1]
                if status != b"200":
                    sys.exit(f"restore failed: {data.decode(errors='replace')}")
        except BlockingIOError:
            pass
    time.sleep(0.0005)
print(first - t0, job - t0)
PY
  read -r first job <"$WORK/times"
  echo "$first" >>"$WORK/$1"; echo "$job" >>"$WORK/$1-job"
  kill -9 "$pid"
  api -X DELETE "http://x/v1/checkpoints/$(cat "$WORK/name")" >/dev/null
}
pass() { # pass TAG
  : >"$WORK/full"; : >"$WORK/lazy"; : >"$WORK/full-job"; : >"$WORK/lazy-job"
  start_daemon "$SOCK" "$WORK/state"
  for i in $(seq "$RUNS"); do
    if [ $((i % 2)) -eq 1 ]; then one full; one lazy; else one lazy; one full; fi
  done
  stop_daemon
  echo "RESULT $1 $SIZE_MIB $(med <"$WORK/full") $(med <"$WORK/lazy") $(med <"$WORK/full-job") $(med <"$WORK/lazy-job")"
}
pass lazy
if [ "$KDAT_PASS" = 1 ]; then
  mount -t tmpfs -o mode=755 ckptd-bench-run /run; mounted=1
  criu check >/dev/null 2>&1 || true  # writes /run/criu.kdat
  [ -e /run/criu.kdat ] || { echo "criu wrote no /run/criu.kdat on the tmpfs" >&2; exit 1; }
  pass lazy-kdat
  umount /run; mounted=
fi
