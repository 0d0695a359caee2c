#!/usr/bin/env bash
# `make bench`: measures ckptd against CRIU, runc, Podman, Docker and the usual tools run by hand,
# keeps each part's RESULT lines in bench/results/PART.txt, draws the plots (bench/*.svg, with
# target/release/ckptd-plot) and writes BENCHMARKS.md from all of them, goals first. Run as root
# after `make build` (release binaries). Not run by `make test`: speed is measured here, not
# asserted in timed tests. PARTS="process container" re-runs only those parts (the others' last
# results stay); REPORT_ONLY=1 only redraws and rewrites from bench/results.
#  - process: checkpoint/restore vs `criu dump`+`sync` / `criu restore`, frozen time against CRIU's
#    own, where ckptd's time goes, at each of SIZES MiB (measure.sh)
#  - fixed: the fixed cost of a job, step by step, on a process of almost no memory (bench_fixed.sh)
#  - container: vs `runc checkpoint`+`sync` / `runc restore` at each size (bench_container.sh)
#  - docker: vs `docker checkpoint create` / `docker start --checkpoint` at each size (bench_docker.sh;
#    starts its own experimental dockerd)
#  - podman: vs `podman container checkpoint`/`restore`, with and without `--export`/`--import`,
#    at each size (bench_podman.sh; starts its own `podman system service`)
#  - containerd: vs containerd's task checkpoint (to a directory and to its content store) and
#    runc under the shim's root, at 512 MiB and 2 GiB (bench_containerd.sh; its own containerd)
#  - frozen: frozen time with images on disk vs tmpfs (bench_frozen.sh)
#  - group: a group of two 512 MiB processes vs the two checkpointed one after the other (bench_group.sh)
#  - lazy: lazy restore vs full restore, time to first progress (bench_lazy.sh)
#  - migration: live migration vs a cold `ckpt migrate`, downtime and total, at 512 MiB, 1 GiB
#    and 4 GiB, also with /run on a tmpfs where it is not (bench_migration.sh)
#  - parallel: N parallel checkpoints against the worker count (bench_parallel.sh)
#  - archive: archive export vs `tar | zstd -T0` / `tar | gzip -1` (bench_archive.sh)
#  - remote: push and pull of a 1 GiB checkpoint against moto's S3 server (bench_remote.sh)
#  - registry: push and pull of a 1 GiB Podman container's checkpoint image against `podman
#    push`/`pull` of Podman's own, to a local distribution registry (bench_registry.sh)
#  - api: latency with oha, 64 clients, 10,000-row catalog, idle and during 1 GiB dumps (bench_api.sh)
#  - scale: catalog of 1k-100k rows, 1,000 schedules each minute (bench_scale.sh)
#  - idle: the daemon's idle RSS
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SIZES=${SIZES:-"64 512 1024 4096"}
PARTS_GIVEN=${PARTS:-}
PARTS=${PARTS:-"process fixed container docker podman containerd frozen group lazy migration parallel archive remote registry api scale idle"}
RESULTS=bench/results
export CKPTD=$PWD/target/release/ckptd
PLOT=$PWD/target/release/ckptd-plot
[ -x "$CKPTD" ] && [ -x "$PLOT" ] || { echo "build first: make build" >&2; exit 1; }
OHA=${OHA:-/var/cache/ckptd-setup/oha/bin/oha}
if [ ! -x "$OHA" ]; then
  echo "== installing oha (the HTTP load tool; once, about 10 minutes on 2 cores)"
  cargo install --locked oha --root /var/cache/ckptd-setup/oha
fi
export OHA RUNS
mkdir -p "$RESULTS"
# Shows a part's output as it ends and keeps its RESULT lines (not `tee /dev/stderr`, which would
# truncate a log file that stderr is redirected to).
result() { local out; out=$(cat); echo "$out" >&2; grep '^RESULT' <<<"$out"; }
idle() {
  # Idle RSS: a fresh daemon, after start-up, doing nothing.
  local work pid
  work=$(mktemp -d)
  "$CKPTD" --socket "$work/s.sock" --state-dir "$work/state" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do curl -sf --unix-socket "$work/s.sock" http://x/v1/health >/dev/null && break; sleep 0.1; done
  sleep 1
  echo "RESULT idle $(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
  kill $pid; wait $pid 2>/dev/null || true; rm -rf "$work"
}
run_part() {
  case $1 in
    process) for size in $SIZES; do SIZE_MIB=$size bash scripts/measure.sh; done ;;
    container) for size in $SIZES; do SIZE_MIB=$size bash scripts/bench_container.sh; done ;;
    docker) for size in $SIZES; do SIZE_MIB=$size bash scripts/bench_docker.sh; done ;;
    podman) for size in $SIZES; do SIZE_MIB=$size bash scripts/bench_podman.sh; done ;;
    containerd) for size in 512 2048; do SIZE_MIB=$size bash scripts/bench_containerd.sh; done ;;
    frozen) bash scripts/bench_frozen.sh ;;
    group) bash scripts/bench_group.sh ;;
    fixed) bash scripts/bench_fixed.sh ;;
    lazy) bash scripts/bench_lazy.sh ;;
    parallel) bash scripts/bench_parallel.sh ;;
    archive) bash scripts/bench_archive.sh ;;
    remote) bash scripts/bench_remote.sh ;;
    registry) bash scripts/bench_registry.sh ;;
    migration) for size in 512 1024 4096; do SIZE_MIB=$size bash scripts/bench_migration.sh
                 [ "$(stat -f -c %T /run)" = tmpfs ] || SIZE_MIB=$size KDAT=1 bash scripts/bench_migration.sh; done ;;
    api) bash scripts/bench_api.sh ;;
    scale) bash scripts/bench_scale.sh ;;
    idle) idle ;;
    *) echo "unknown part $1" >&2; exit 1 ;;
  esac
}
if [ -z "${REPORT_ONLY:-}" ]; then
  failed=()
  for p in $PARTS; do
    echo "== $p ($(date -u +%H:%M:%S))"
    # A part that fails keeps its last results (and says so); the others still run.
    if run_part "$p" | result >"$RESULTS/$p.txt.new"; then
      # A part with a run count of its own says it (bench_fixed.sh).
      grep -q '^RESULT runs ' "$RESULTS/$p.txt.new" || echo "RESULT runs $p $RUNS" >>"$RESULTS/$p.txt.new"
      # The day it was measured: a part re-run alone (PARTS=...) says so in the report.
      echo "RESULT measured $p $(date -u +%Y-%m-%d)" >>"$RESULTS/$p.txt.new"
      mv "$RESULTS/$p.txt.new" "$RESULTS/$p.txt"
    else
      rm -f "$RESULTS/$p.txt.new"; failed+=("$p")
    fi
  done
  # The day of the last run of every part (a part's own day is its `measured` line).
  [ -n "${PARTS_GIVEN:-}" ] || date -u +%Y-%m-%d >"$RESULTS/date"
  [ ${#failed[@]} -eq 0 ] || echo "FAILED parts (their previous results kept): ${failed[*]}" >&2
fi
cat "$RESULTS"/*.txt >"$RESULTS/all"
"$PLOT" "$RESULTS/all" bench
python3 scripts/bench_report.py "$RESULTS" >BENCHMARKS.md
cat BENCHMARKS.md
