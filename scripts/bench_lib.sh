# Helpers shared by the bench_*.sh scripts (sourced).
now() { date +%s.%N; }
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mean() { awk '{s += $1} END {print s / NR}'; }
elapsed() { echo "$2 - $1" | bc -l; }
# start_daemon SOCKET STATE_DIR [ARGS...]: starts $CKPTD, waits for /v1/health, sets $daemon.
start_daemon() {
  local sock=$1 state=$2; shift 2
  "$CKPTD" --socket "$sock" --state-dir "$state" "$@" 2>>"$state.log" &
  daemon=$!
  for _ in $(seq 200); do curl -s --unix-socket "$sock" http://x/v1/health >/dev/null && return; sleep 0.05; done
  echo "ckptd did not start: $(tail -5 "$state.log")" >&2; exit 1
}
stop_daemon() { kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
# hog MIB NAME OUT: starts a Python process holding MIB MiB of touched memory that prints a line
# every 50 ms, as a child of this shell (so that `wait` reaps it: this machine's init reaps
# orphans late, and a restore in place needs the pid free); sets HOG once it is ready.
hog() {
  rm -f "$3"
  setsid python3 -c "
import sys, time
sys.argv[0] = '$2'
m = bytearray($1 * 1024 * 1024)
for i in range(0, len(m), 4096): m[i] = 1
i = 0
while True:
    print(i, flush=True); i += 1; time.sleep(0.05)
" </dev/null >"$3" 2>&1 &
  HOG=$!
  until [ -s "$3" ]; do sleep 0.02; done
}
# image_hog PATH: builds the containers' image program at PATH: a static C program that holds
# ARGV[1] MiB of touched memory and counts on stdout every 200 ms.
image_hog() {
  local src; src=$(mktemp --suffix .c)
  cat >"$src" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    size_t n = (size_t)atol(argv[1]) << 20;
    char *m = malloc(n);
    for (size_t i = 0; i < n; i += 4096) m[i] = 1;
    for (long i = 0;; i++) { printf("%ld\n", i); fflush(stdout); usleep(200000); }
}
C
  gcc -O2 -static -o "$1" "$src"; rm -f "$src"
}
wait_gone() { while [ -e "/proc/$1" ]; do sleep 0.01; done; }
api() { curl -sf --unix-socket "$SOCK" "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# dump_loop PID STOP COUNT: checkpoints process PID (leave_running, ?wait=true) and deletes the
# checkpoint, back to back, until file STOP exists, appending a line to file COUNT for each; one
# Python process over one connection, so that the load's own processes (a curl and a Python for
# each request) do not compete with what is measured for the CPU. Runs in the background; sets
# DUMPER.
dump_loop() {
  python3 - "$SOCK" "$1" "$2" "$3" <<'PY' &
import http.client, json, os, socket, sys
sock, pid, stop, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sock)
def call(c, method, path, body=None):
    c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    r = c.getresponse(); data = r.read()
    assert r.status < 300, f"{method} {path}: {r.status} {data[:300]!r}"
    return json.loads(data) if data else None
c = Unix("x")
while not os.path.exists(stop):
    d = call(c, "POST", "/v1/checkpoints?wait=true", json.dumps({"target": {"kind": "process", "pid": pid}, "leave_running": True}))
    with open(count, "a") as f: f.write("x\n")
    call(c, "DELETE", "/v1/checkpoints/" + d["checkpoint"]["name"])
PY
  DUMPER=$!
}
# phases TARGET: the mean seconds of each checkpoint phase (ckptd_checkpoint_phase_seconds) of the
# daemon at $SOCK for TARGET (process, runc, docker, podman), as "dump durable release catalog".
phases() {
  api http://x/metrics | awk -v t="$1" '
    /^ckptd_checkpoint_phase_seconds_(sum|count)/ && index($0, "target=\"" t "\"") {
      match($0, /phase="[a-z]+"/); p = substr($0, RSTART + 7, RLENGTH - 8)
      if ($0 ~ /_sum/) s[p] = $2; else c[p] = $2
    }
    END { printf "%.4f %.4f %.4f %.4f\n", s["dump"]/c["dump"], s["durable"]/c["durable"], s["release"]/c["release"], s["catalog"]/c["catalog"] }'
}
# make_catalog STATE ROWS [SINCE]: writes ROWS ready checkpoints, with real (empty) directories,
# straight into the SQLite catalog a daemon made in STATE (stopped now), named bench-00000...,
# labelled app=a0..a9 and schedule=bench, created after SINCE (an RFC 3339 time; default
# 2026-11-27T10:00:00Z), one millisecond apart.
make_catalog() {
  python3 - "$1" "$2" "${3:-2026-11-27T10:00:00Z}" <<'PY'
import datetime, json, os, sqlite3, sys, uuid
state, rows = sys.argv[1], int(sys.argv[2])
since = datetime.datetime.fromisoformat(sys.argv[3].replace("Z", "+00:00"))
db = sqlite3.connect(os.path.join(state, "catalog.db"))
opts = json.dumps({"leave_running": True, "tcp_established": False, "ext_unix_sk": False, "file_locks": False, "shell_job": False})
batch = []
for i in range(rows):
    cid = str(uuid.uuid4())
    d = os.path.join(state, "checkpoints", cid)
    os.mkdir(d)
    at = (since + datetime.timedelta(milliseconds=i + 1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    batch.append((cid, f"bench-{i:06d}", "process", 1000 + i % 5000, None,
                  json.dumps({"kind": "process", "pid": 1000 + i % 5000}), "ready",
                  at, at, d, 4096 * (i % 97),
                  opts, json.dumps({"app": f"a{i % 10}", "schedule": "bench"}), "4.2.1"))
db.executemany("INSERT INTO checkpoints (id, name, target_kind, target_pid, target_id, target, status, created_at, completed_at, dir, size_bytes, options, labels, criu_version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
db.commit()
PY
}
# settle: both sides' dumps start from the same memory: this VM returns free memory to its host (virtio
# balloon free page reporting, 2 s after it is freed), and the first touch of memory the host
# took back is several times slower (measured: 4 GiB written into the page cache in 12 s cold,
# 3 s right after 4 GiB were freed). Without this, whichever side ran right after a large free
# got warm memory and the other cold. Clean caches dropped, then time for the report.
settle() { sync; echo 3 >/proc/sys/vm/drop_caches; sleep 3; }
# minute_schedules N NAME: schedules s1..sN (1,000 a minute in bench_scale.sh), each
# checkpointing its own `sleep` every minute (leave_running, keep_last 1), the sleeps named NAME
# (for pkill); their pids in `pids`. One target each: a checkpoint holds its target busy.
minute_schedules() {
  pids=()
  for _ in $(seq "$1"); do
    setsid -w bash -c "exec -a $2 sleep 100000" </dev/null >/dev/null 2>&1 &
    pids+=($!)
  done
  for i in $(seq "$1"); do
    api -X POST http://x/v1/schedules -d "{\"name\":\"s$i\",\"target\":{\"kind\":\"process\",\"pid\":${pids[$((i - 1))]}},\"cron\":\"* * * * *\",\"options\":{\"leave_running\":true},\"retention\":{\"keep_last\":1}}" >/dev/null
  done
}
