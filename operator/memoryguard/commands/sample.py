"""Run timed sampling ticks over a cgroup tree and report their cost (for benchmarks).

Each measured tick is paired with a *floor*: a bare Python loop that opens and reads exactly
the files that tick reads, the way it opens them (``os.open`` relative to the cgroup's
directory descriptor, ``os.read``, ``os.close``; nothing parsed or stored) — the least any
Python sampler could spend. The ratio of the two medians says how much the
agent adds on top of the kernel and the file system, and holds up on a busy machine better
than absolute times do. CPU time per tick divided by the interval is the share of one core
the agent needs at that rate.

With ``--fill-rings`` the sampler first runs enough ticks on a fake clock to fill every ring
(30 minutes of samples by default) so the resident memory reported is the agent's steady state.
The agent's HTTP and metrics modules are imported first, so RSS counts what a real agent loads.

    memoryguard sample --root /dev/shm/node --repeat 200 --fill-rings --json
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

# What `memoryguard agent` loads besides the sampler (aiohttp, prometheus-client, ...).
AGENT_MODULES = ("memoryguard.agent.main", "memoryguard.agent.server", "memoryguard.agent.metrics")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", type=Path, default=Path("/sys/fs/cgroup"), help="cgroup root (default %(default)s)"
    )
    parser.add_argument("--repeat", type=int, default=100, help="measured ticks (default %(default)s)")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.0,
        help="seconds to wait between measured ticks; 0 runs them back to back (default %(default)s)",
    )
    parser.add_argument(
        "--retention", type=float, default=1800.0, help="ring retention in seconds (default 1800)"
    )
    parser.add_argument(
        "--fill-rings", action="store_true", help="fill every ring first (fake clock), then measure"
    )
    parser.add_argument(
        "--no-agent-imports", action="store_true", help="do not import the agent's server modules"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise SystemExit("--repeat must be ≥ 1")
    loaded = [] if args.no_agent_imports else _import_agent_modules()

    from memoryguard.agent.sampler import Sampler

    clock = _FakeClock(time.time(), step_seconds=1.0)
    sampler = Sampler(args.root, clock=clock, retention_seconds=args.retention)
    sampler.tick()  # discovery, and the first full read of every cgroup
    clock.advance()
    fill_ticks = 0
    if args.fill_rings:
        fill_ticks = math.ceil(args.retention)  # one tick per fake second fills fine and coarse tiers
        for _ in range(fill_ticks):
            sampler.tick()
            clock.advance()

    tick_wall: list[float] = []
    tick_cpu: list[float] = []
    floor_wall: list[float] = []
    floor_cpu: list[float] = []
    files = 0
    for i in range(args.repeat):
        opens = sampler.planned_opens(sampler.tick_no)
        files += len(opens)
        # Alternate which goes first, so neither always reads the files the other just warmed.
        if i % 2:
            _time_floor(opens, floor_wall, floor_cpu)
            _time_tick(sampler, tick_wall, tick_cpu)
        else:
            _time_tick(sampler, tick_wall, tick_cpu)
            _time_floor(opens, floor_wall, floor_cpu)
        clock.advance()
        if args.interval > 0:
            time.sleep(args.interval)

    status = _proc_status()
    report: dict[str, Any] = {
        "root": str(args.root),
        "cgroup_version": sampler.cgroup_version,
        "containers": sampler.container_count,
        "pods": sampler.pod_count,
        "ticks": args.repeat,
        "files_per_tick": files / args.repeat,
        "tick_seconds": _stats(tick_wall),
        "floor_tick_seconds": _stats(floor_wall),
        "ratio_median_to_floor": _ratio(tick_wall, floor_wall),
        "tick_cpu_seconds": _stats(tick_cpu),
        "floor_cpu_seconds": _stats(floor_cpu),
        "ratio_median_cpu_to_floor_cpu": _ratio(tick_cpu, floor_cpu),
        "cpu_seconds_per_tick": statistics.fmean(tick_cpu),
        "cpu_share_of_one_core_at_1hz": statistics.fmean(tick_cpu) / 1.0,
        "rss_bytes": status.get("VmRSS"),
        "rss_peak_bytes": status.get("VmHWM"),
        "ring_bytes": sampler.ring_bytes(),
        "rings_filled": args.fill_rings,
        "fill_ticks": fill_ticks,
        "agent_modules_loaded": loaded,
        "errors": dict(sampler.errors),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_text(report))
    return 0


class _FakeClock:
    def __init__(self, start: float, *, step_seconds: float) -> None:
        self.t = start
        self.step_seconds = step_seconds

    def __call__(self) -> float:
        return self.t

    def advance(self) -> None:
        self.t += self.step_seconds


def _import_agent_modules() -> list[str]:
    loaded = []
    for name in AGENT_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # a module being rewritten elsewhere must not stop the benchmark
            continue
        loaded.append(name)
    return loaded


def _time_tick(sampler: Any, wall: list[float], cpu: list[float]) -> None:
    c0 = time.thread_time()
    w0 = time.perf_counter()
    sampler.tick()
    wall.append(time.perf_counter() - w0)
    cpu.append(time.thread_time() - c0)


def _time_floor(opens: list[tuple[int | None, str]], wall: list[float], cpu: list[float]) -> None:
    flags = os.O_RDONLY | os.O_CLOEXEC
    c0 = time.thread_time()
    w0 = time.perf_counter()
    for dir_fd, name in opens:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError:
            continue
        os.read(fd, 8192)  # the sampler's read size
        os.close(fd)
    wall.append(time.perf_counter() - w0)
    cpu.append(time.thread_time() - c0)


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def _ratio(values: list[float], floor: list[float]) -> float | None:
    base = statistics.median(floor)
    return statistics.median(values) / base if base > 0 else None


def _proc_status() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if key in ("VmRSS", "VmHWM") and len(parts) == 2 and parts[1] == "kB":
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _text(r: dict[str, Any]) -> str:
    ms = 1000.0
    tick, floor = r["tick_seconds"], r["floor_tick_seconds"]
    rss = r["rss_bytes"]
    lines = [
        f"{r['containers']} containers in {r['pods']} pods (cgroup v{r['cgroup_version']}), "
        f"{r['ticks']} ticks, {r['files_per_tick']:.0f} files per tick",
        f"tick   median {tick['median'] * ms:.2f} ms  p90 {tick['p90'] * ms:.2f} ms  "
        f"max {tick['max'] * ms:.2f} ms",
        f"floor  median {floor['median'] * ms:.2f} ms  ratio {r['ratio_median_to_floor']:.2f} "
        f"(CPU ratio {r['ratio_median_cpu_to_floor_cpu']:.2f})",
        f"CPU {r['cpu_seconds_per_tick'] * ms:.2f} ms per tick = "
        f"{r['cpu_share_of_one_core_at_1hz'] * 100:.2f} % of one core at 1 Hz",
        f"RSS {rss / 2**20:.1f} MiB" if rss else "RSS unknown",
        f"rings {r['ring_bytes'] / 2**20:.1f} MiB ({'filled' if r['rings_filled'] else 'not filled'})",
        f"errors {r['errors']}",
    ]
    return "\n".join(lines)
