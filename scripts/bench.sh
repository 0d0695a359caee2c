#!/usr/bin/env bash
# `make bench`: measures ckptd against CRIU run by hand and writes BENCHMARKS.md.
#  - checkpoint (request to ready, images fsynced) vs `criu dump` + `sync`, and restore vs
#    `criu restore`, same filesystem, alternating runs, median of RUNS (default 3), for 64 MiB,
#    512 MiB and 1 GiB processes (scripts/measure.sh);
#  - the frozen time CRIU itself reports;
#  - archive export (zstd, gzip) against `tar | zstd -T0` / `tar | gzip -1` (scripts/bench_archive.sh);
#  - the daemon's idle RSS.
# Run as root after `make build`. Not run by `make test`: speed is measured here, not asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SIZES=${SIZES:-"64 512 1024"}
CKPTD=target/release/ckptd
[ -x "$CKPTD" ] || { echo "build first: make build" >&2; exit 1; }
results=()
for size in $SIZES; do
  echo "== $size MiB, $RUNS runs each"
  line=$(SIZE_MIB=$size RUNS=$RUNS CKPTD=$CKPTD bash scripts/measure.sh | tee /dev/stderr | grep '^RESULT')
  results+=("$line")
done

echo "== archives"
archive=$(RUNS=$RUNS CKPTD=$CKPTD bash scripts/bench_archive.sh | tee /dev/stderr | grep '^RESULT')

# Idle RSS: a fresh daemon, after start-up, doing nothing.
work=$(mktemp -d)
"$CKPTD" --socket "$work/s.sock" --state-dir "$work/state" 2>/dev/null &
pid=$!
for _ in $(seq 100); do curl -sf --unix-socket "$work/s.sock" http://x/v1/health >/dev/null && break; sleep 0.1; done
sleep 1
rss_kib=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
kill $pid; wait $pid 2>/dev/null || true; rm -rf "$work"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
secs() { awk -v a="$1" 'BEGIN { printf "%.3f s", a }'; }
{
  echo "# Benchmarks"
  echo
  echo "Measured by \`make bench\` ($(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r),"
  echo "$(criu --version | head -1 | sed 's/Version: /CRIU /'), images on $(df --output=fstype /var/tmp | tail -1) under /var/tmp)."
  echo "Each number is the median of $RUNS runs; ckptd and CRIU by hand alternate which goes first."
  echo "The target is a Python process holding the given memory, every page touched."
  echo
  echo "| memory | ckptd checkpoint (request to ready, fsynced) | \`criu dump\` + \`sync\` | ratio | frozen (CRIU stats) | ckptd restore | \`criu restore\` | ratio |"
  echo "|---|---|---|---|---|---|---|---|"
  for r in "${results[@]}"; do
    read -r _ size ad cd fr ar cr <<<"$r"
    echo "| $size MiB | $(secs "$ad") | $(secs "$cd") | $(ratio "$ad" "$cd") | $(secs "$fr") | $(secs "$ar") | $(secs "$cr") | $(ratio "$ar" "$cr") |"
  done
  echo
  echo "## Archives"
  echo
  echo "\`GET /v1/checkpoints/{ref}/archive\` (streamed over the socket by curl, sha256 of every file"
  echo "computed on the way) against tar piped into the compressor by hand, same images (a 512 MiB"
  echo "process, half random bytes), page cache dropped before each run, median of $RUNS."
  echo
  echo "| compression | images | ckptd archive | by hand | ratio | ckptd throughput | archive size |"
  echo "|---|---|---|---|---|---|---|"
  while read -r _ c size api cli bytes; do
    hand=$([ "$c" = zstd ] && echo '`tar \| zstd -T0 -3`' || echo '`tar \| gzip -1`')
    echo "| $c (by hand: $hand) | $((size / 1048576)) MiB | $(secs "$api") | $(secs "$cli") | $(ratio "$api" "$cli") | $(awk -v s="$size" -v t="$api" 'BEGIN { printf "%.0f MB/s", s / t / 1e6 }') | $((bytes / 1048576)) MiB |"
  done <<<"$archive"
  echo
  echo "ckptd's zstd is level 3 with one worker per core, like \`zstd -T0 -3\`; its gzip is flate2's fast"
  echo "level (1), compared with single-threaded \`gzip -1\` (pigz is not installed here)."
  echo
  echo "Daemon idle RSS: $((rss_kib / 1024)) MiB ($rss_kib KiB)."
  echo
  echo "Notes: ckptd fsyncs each image file and the directory; the by-hand baseline uses a global"
  echo "\`sync\`, which also flushes everything else dirty, so ckptd can come out ahead. Restores by"
  echo "hand start only once the old pids are free; this machine's init reaps orphans late, which"
  echo "ckptd waits out by itself (\`restore_pid_wait_secs\`). This VM is noisy: single runs vary"
  echo "by 2x or more."
  echo
  echo "Reproduce: \`sudo make build && sudo make bench\` (\`RUNS=5 SIZES=\"1024\"\` to vary)."
  echo "Not yet measured (issue 8): containers vs runc by hand, parallel scaling, API latency under"
  echo "load, lazy restore, staging to tmpfs."
} > BENCHMARKS.md
cat BENCHMARKS.md
