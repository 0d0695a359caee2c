#!/usr/bin/env bash
# `make bench`: measures ckptd against CRIU, runc and the usual tools run by hand, and writes
# BENCHMARKS.md with the commands to reproduce. Run as root after `make build` (release binaries).
# Not run by `make test`: speed is measured here, not asserted in timed tests.
#  - process checkpoint/restore vs `criu dump`+`sync` / `criu restore`, 64/512/1024 MiB (measure.sh)
#  - frozen time with images on disk vs tmpfs (bench_frozen.sh)
#  - lazy restore vs full restore, time to first progress (bench_lazy.sh)
#  - container checkpoint/restore vs `runc checkpoint`+`sync` / `runc restore` (bench_container.sh)
#  - Docker container checkpoint/restore vs `docker checkpoint create` / `docker start --checkpoint`
#    (bench_docker.sh; starts its own experimental dockerd)
#  - Podman container checkpoint/restore vs `podman container checkpoint`/`restore`, with and
#    without `--export`/`--import` (bench_podman.sh; starts its own `podman system service`)
#  - N parallel checkpoints against the worker count (bench_parallel.sh)
#  - archive export vs `tar | zstd -T0` / `tar | gzip -1` (bench_archive.sh)
#  - remotes: push and pull of a 1 GiB checkpoint against moto's S3 server, next to the archive
#    stream and `tar | zstd -T0 -3`, and the daemon's RSS growth during the push (bench_remote.sh)
#  - API throughput and latency with oha, 64 clients, 10,000-row catalog, during dumps (bench_api.sh)
#  - the daemon's idle RSS
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SIZES=${SIZES:-"64 512 1024"}
export CKPTD=$PWD/target/release/ckptd
[ -x "$CKPTD" ] || { echo "build first: make build" >&2; exit 1; }
OHA=${OHA:-/var/cache/ckptd-setup/oha/bin/oha}
if [ ! -x "$OHA" ]; then
  echo "== installing oha (the HTTP load tool; once, about 10 minutes on 2 cores)"
  cargo install --locked oha --root /var/cache/ckptd-setup/oha
fi
export OHA RUNS
# Shows a part's output as it ends and keeps its RESULT lines (not `tee /dev/stderr`, which would
# truncate a log file that stderr is redirected to).
result() { local out; out=$(cat); echo "$out" >&2; grep '^RESULT' <<<"$out"; }
process=()
for size in $SIZES; do
  echo "== process, $size MiB"
  process+=("$(SIZE_MIB=$size bash scripts/measure.sh | result)")
done
echo "== frozen time, disk vs tmpfs"; frozen=$(bash scripts/bench_frozen.sh | result)
echo "== lazy restore"; lazy=$(bash scripts/bench_lazy.sh | result)
echo "== container"; container=$(bash scripts/bench_container.sh | result)
echo "== docker"; dockerb=$(bash scripts/bench_docker.sh | result)
echo "== podman"; podmanb=$(bash scripts/bench_podman.sh | result)
echo "== parallel"; parallel=$(bash scripts/bench_parallel.sh | result)
echo "== archives"; archive=$(bash scripts/bench_archive.sh | result)
echo "== remotes"; remoteb=$(bash scripts/bench_remote.sh | result)
echo "== API"; apilat=$(bash scripts/bench_api.sh | result)

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
ms() { awk -v a="$1" 'BEGIN { printf "%.2f ms", a * 1000 }'; }
{
  echo "# Benchmarks"
  echo
  echo "Measured by \`make bench\` ($(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r),"
  echo "$(criu --version | head -1 | sed 's/Version: /CRIU /'), $(runc --version | head -1), images on"
  echo "$(df --output=fstype /var/tmp | tail -1) under /var/tmp). Medians of $RUNS runs; ckptd and the by-hand"
  echo "command alternate which goes first. This VM is noisy: single runs vary by 2x or more."
  echo
  echo "Reproduce: \`sudo make build && sudo make bench\` (\`RUNS=5 SIZES=\"1024\"\` to vary; each part"
  echo "is also a script of its own in scripts/bench_*.sh)."
  echo
  echo "## Process checkpoint and restore against CRIU by hand"
  echo
  echo "A Python process holding the memory, every page touched. ckptd: request to answer with"
  echo "\`?wait=true\` (images fsynced, catalog row ready). By hand: \`criu dump\` + \`sync\`, \`criu restore\`."
  echo
  echo "| memory | ckptd checkpoint | \`criu dump\` + \`sync\` | ratio | frozen (CRIU stats) | ckptd restore | \`criu restore\` | ratio |"
  echo "|---|---|---|---|---|---|---|---|"
  for r in "${process[@]}"; do
    read -r _ size ad cd fr ar cr <<<"$r"
    echo "| $size MiB | $(secs "$ad") | $(secs "$cd") | $(ratio "$ad" "$cd") | $(secs "$fr") | $(secs "$ar") | $(secs "$cr") | $(ratio "$ar" "$cr") |"
  done
  echo
  echo "Target: overhead over raw CRIU <= 5% at 512 MiB. ckptd fsyncs each image file and the"
  echo "directory; the by-hand baseline uses a global \`sync\`, so ckptd can come out ahead."
  echo
  echo "## Containers against runc by hand"
  echo
  read -r _ _ size cd rd cr rr <<<"$container"
  echo "A runc container (busybox rootfs, a static C program holding $size MiB). ckptd: checkpoint"
  echo "(pause, \`runc checkpoint --leave-running\`, fsync, rename, \`runc delete\`), restore in place."
  echo "By hand: \`runc checkpoint\` + \`sync\`, \`runc restore -d\`."
  echo
  echo "| | ckptd | runc by hand | ratio |"
  echo "|---|---|---|---|"
  echo "| checkpoint | $(secs "$cd") | $(secs "$rd") | $(ratio "$cd" "$rd") |"
  echo "| restore | $(secs "$cr") | $(secs "$rr") | $(ratio "$cr" "$rr") |"
  echo
  echo "The checkpoint's extra cost is the durability promise: runc kills a container as soon as"
  echo "its dump ends, before its images are on disk, so ckptd freezes the container first, dumps it"
  echo "with \`--leave-running\`, fsyncs, and only then deletes it (two more runc runs)."
  echo
  echo "## Docker containers against Docker"
  echo
  read -r _ _ size cd dd cr dr <<<"$dockerb"
  echo "A Docker container (a static C program holding $size MiB), Docker 20.10 experimental."
  echo "ckptd dumps with runc on Docker's own container (\`docker_runc_root\`) and restores through"
  echo "\`POST /containers/{id}/start?checkpoint=\`; by hand: \`docker checkpoint create\`,"
  echo "\`docker start --checkpoint\`."
  echo
  echo "| | ckptd | Docker | ratio |"
  echo "|---|---|---|---|"
  echo "| checkpoint | $(secs "$cd") | $(secs "$dd") | $(ratio "$cd" "$dd") |"
  echo "| restore | $(secs "$cr") | $(secs "$dr") | $(ratio "$cr" "$dr") |"
  echo
  echo "Where Docker's time goes: containerd turns a checkpoint into an image in its content store"
  echo "(CRIU's images tarred and sha256-hashed), and Docker unpacks it again into its checkpoints"
  echo "directory; a start from a checkpoint tars that directory back into the content store and"
  echo "containerd unpacks it once more for runc. ckptd's checkpoint skips all of it (runc writes"
  echo "straight into the checkpoint's directory; Docker still sees the pause and the kill). Its"
  echo "restore must go through Docker to keep Docker's state true, so it pays Docker's price, plus"
  echo "linking the images into Docker's directory (a copy here, where /var/tmp and Docker's root"
  echo "are on different filesystems; a hard link when they share one)."
  echo
  echo "## Podman containers against Podman by hand"
  echo
  read -r _ _ size pcd ppd ped pes pcr ppr pir <<<"$podmanb"
  echo "A Podman container (a static C program holding $size MiB), Podman 4.3.1 with runc. ckptd"
  echo "checkpoints through Podman's REST API (\`checkpoint?export=true\`, the archive unpacked and"
  echo "fsynced) and restores in place through it; by hand: \`podman container checkpoint\` /"
  echo "\`restore\`, and \`--export\` (uncompressed) / \`--import\`, the export also made durable."
  echo
  echo "| | ckptd | by hand | ratio | by hand, --export | ratio | --export + sync | ratio |"
  echo "|---|---|---|---|---|---|---|---|"
  echo "| checkpoint | $(secs "$pcd") | $(secs "$ppd") | $(ratio "$pcd" "$ppd") | $(secs "$ped") | $(ratio "$pcd" "$ped") | $(secs "$pes") | $(ratio "$pcd" "$pes") |"
  echo "| restore | $(secs "$pcr") | $(secs "$ppr") | $(ratio "$pcr" "$ppr") | $(secs "$pir") (--import) | $(ratio "$pcr" "$pir") | | |"
  echo
  echo "Where ckptd's checkpoint time goes: Podman's REST export writes the archive to a temporary"
  echo "file and only then sends it (about 0.5 s more than the CLI's \`--export\` for 512 MiB,"
  echo "measured with curl alone); ckptd's unpacking and fsync add 0.2-0.6 s. A checkpoint"
  echo "by hand without \`--export\` leaves the images only in Podman's own directory, where the"
  echo "next checkpoint of the container replaces them; ckptd keeps each one."
  echo
  echo "## Frozen time: disk or tmpfs"
  echo
  read -r _ _ size disk tmpfs <<<"$frozen"
  echo "How long a $size MiB process stays frozen (CRIU's \`frozen_time\`) with its images written to"
  echo "the disk-backed state directory or to tmpfs (\`checkpoint_dir\` on /dev/shm):"
  echo
  echo "| images on | frozen |"
  echo "|---|---|"
  echo "| disk (ext4, page cache) | $(secs "$disk") |"
  echo "| tmpfs | $(secs "$tmpfs") |"
  echo
  echo "CRIU's writes land in the page cache either way; the freeze is bounded by copying memory,"
  echo "not by the disk, and ckptd fsyncs only after CRIU has let the target go. A tmpfs staging"
  echo "area followed by a durable copy would add a copy and save nothing here, so ckptd does not"
  echo "offer one. (With \`vm.dirty_bytes\` lowered to 64 MiB, both took about 2.5 s: tmpfs pages are"
  echo "throttled like the rest.)"
  echo
  echo "## Lazy restore"
  echo
  read -r _ _ size full lz fullj lazyj <<<"$lazy"
  echo "A $size MiB process: time from the restore request to the restored process's first new"
  echo "output line, and to the end of the job (all memory in)."
  echo
  echo "| restore | first progress | job ended |"
  echo "|---|---|---|"
  echo "| full | $(secs "$full") | $(secs "$fullj") |"
  echo "| \`\"lazy\": true\` | $(secs "$lz") | $(secs "$lazyj") |"
  echo
  echo "## Parallel checkpoints"
  echo
  echo "8 processes of 64 MiB checkpointed at once (\`leave_running\`), all submitted together; time"
  echo "until all are ready, by worker count:"
  echo
  echo "| workers | all 8 ready |"
  echo "|---|---|"
  while read -r _ _ n w t; do echo "| $w | $(secs "$t") |"; done <<<"$parallel"
  echo
  echo "With 2 cores, CRIU's own CPU use bounds the gain from more workers."
  echo
  echo "## API under load"
  echo
  echo "oha, 64 concurrent clients over the Unix socket for 10 s, a catalog of 10,000 checkpoints;"
  echo "\"during dumps\": a 1 GiB process checkpointed back to back while the load runs."
  echo
  echo "| request | requests/s | p50 | p99 | slowest |"
  echo "|---|---|---|---|---|"
  while read -r _ name rps p50 p99 max; do
    [ "$name" = dumps-during-load ] && { dumps=$rps; continue; }
    echo "| $name | $rps | $(ms "$p50") | $(ms "$p99") | $(ms "$max") |"
  done <<<"$apilat"
  echo
  echo "\`list\`: \`GET /v1/checkpoints?limit=100\`; \`list-label\`: with \`label=app=a3\`;"
  echo "\`list-uncached\`: one client, a different page each time (every request a query, 100 row"
  echo "decodes and a serialization). Lists are served from a cache of serialized answers that any"
  echo "write to the checkpoints table invalidates (measured before the cache: the query, row decoding and JSON"
  echo "encoding cost ~0.7 ms a request, which capped the list at ~1,700 requests/s and p99 at 45 ms). $dumps"
  echo "1 GiB dumps completed during the \"during dumps\" runs; no request waits on a dump."
  echo "Target: list p99 <= 5 ms; the empty \`/v1/health\` shows the floor of 64 clients on 2 cores."
  echo
  echo "## Archives"
  echo
  echo "\`GET /v1/checkpoints/{ref}/archive\` (streamed over the socket by curl, sha256 of every file"
  echo "computed on the way) against tar piped into the compressor by hand, same images (a 512 MiB"
  echo "process, half random bytes), page cache dropped before each run."
  echo
  echo "| compression | images | ckptd archive | by hand | ratio | ckptd throughput | archive size |"
  echo "|---|---|---|---|---|---|---|"
  while read -r _ c size api cli bytes; do
    hand=$([ "$c" = zstd ] && echo '`tar \| zstd -T0 -3`' || echo '`tar \| gzip -1`')
    echo "| $c (by hand: $hand) | $((size / 1048576)) MiB | $(secs "$api") | $(secs "$cli") | $(ratio "$api" "$cli") | $(awk -v s="$size" -v t="$api" 'BEGIN { printf "%.0f MB/s", s / t / 1e6 }') | $((bytes / 1048576)) MiB |"
  done <<<"$archive"
  echo
  echo "ckptd's zstd is level 3 with one worker per core, like \`zstd -T0 -3\`, plus the sha256 of"
  echo "every byte; its gzip is flate2's fast level against single-threaded \`gzip -1\`."
  echo
  echo "## Remotes"
  echo
  echo "A 1 GiB process (half random bytes, half touched zero pages) pushed to and pulled from moto's"
  echo "S3 server on 127.0.0.1 (\`scripts/bench_remote.sh\`), warm page cache; the archive stream to"
  echo "/dev/null and \`tar | zstd -T0 -3 >/dev/null\` on the same images for comparison. moto"
  echo "itself takes about 60 MB/s in and 270 MB/s out here, so push and pull measure the server"
  echo "as much as ckptd; the RSS growth is the daemon's, whatever the server's speed."
  echo
  echo "| images | object | archive stream | tar \\| zstd by hand | ratio | push | pull | daemon RSS growth during push |"
  echo "|---|---|---|---|---|---|---|---|"
  while read -r _ _ size object arch tarz push pull rss; do
    echo "| $((size / 1048576)) MiB | $((object / 1048576)) MiB | $(secs "$arch") | $(secs "$tarz") | $(ratio "$arch" "$tarz") | $(secs "$push") | $(secs "$pull") | $((rss / 1024)) MiB |"
  done <<<"$remoteb"
  echo
  echo "## Idle"
  echo
  echo "Daemon idle RSS: $((rss_kib / 1024)) MiB ($rss_kib KiB); target <= 30 MiB."
} > BENCHMARKS.md
cat BENCHMARKS.md
