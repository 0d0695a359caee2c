# Helpers shared by the bench_*.sh scripts (sourced).
now() { date +%s.%N; }
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
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
