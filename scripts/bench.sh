#!/usr/bin/env bash
# Benchmarks reported in BENCHMARKS.md (`make bench`). A plain sequence of steps, each printing
# its own figures; add new steps at the end. Figures come from one run: copy them with the
# command into BENCHMARKS.md, and say whether the machine was busy.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=$(mktemp -d /dev/shm/memoryguard-bench.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "bench: $(date -u +%FT%TZ) $(uname -r) $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== agent: sampling tick and serving (/metrics, /v1/pods; 60 s at 1 Hz + polls + scrapes), 500-container node (cgroup v2, systemd driver, containerd) on tmpfs"
$PY -m tests.support.cgroup_tree --out "$WORK/node-v2" --containers 500
$PY -m memoryguard.cli sample --root "$WORK/node-v2" --repeat 300 --fill-rings --serve --serve-seconds 60 --json

echo "== agent: sampling tick, 500-container node (cgroup v1, cgroupfs driver) on tmpfs"
$PY -m tests.support.cgroup_tree --out "$WORK/node-v1" --containers 500 --version 1 --driver cgroupfs
$PY -m memoryguard.cli sample --root "$WORK/node-v1" --repeat 300 --fill-rings --json

echo "== agent: sampling tick over 500 REAL (empty) container cgroups under our own memory cgroup (needs root)"
$PY -m tests.support.real_cgroups --containers 500 -- \
  $PY -m memoryguard.cli sample --root '{root}' --repeat 300 --json || echo "skipped (needs root and a memory cgroup)"

echo "== engine: one assess + plan over a 30-minute window of 1 s samples (CPU time, with a floor)"
$PY scripts/bench_engine.py --samples 1800 --rounds 9

echo "== engine: MemoryGuard vs baselines on the trace corpus (acceptance: --lead 10)"
$PY -m memoryguard.cli bench tests/traces --lead 10

echo "== operator: decision latency, forecast line -> restart PATCH at KMock (real agents, 1 s sampling)"
$PY -m tests.operator.bench_latency --workloads 24

echo "== operator: cycle time, CPU and memory with 10 000 pods on 500 simulated nodes"
$PY -m tests.operator.bench_scale --pods 10000 --nodes 500 --seconds 60

echo "== engine: how close to memory.max a warm-up may level off before it is restarted (safe plateaus, 4 seeds)"
$PY -m tests.traces.synth.plateau_sweep --out "$WORK/plateau-sweep" --lead 10
