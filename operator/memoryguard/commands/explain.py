"""One-screen diagnosis of a pod's containers or of one cgroup, with MemoryGuard's verdict.

This is seed 000's `watch kubectl exec … cat memory.stat` script in one command: usage against
the limit, swap, the memory.stat breakdown, memory.events, swap events, memory.high and PSI —
then the trend over what was observed and the engine's verdict in plain words: page cache the
kernel (or memory.reclaim) can free, anonymous growth that only a restart fixes, throttling at
memory.high, or swap exhausted.

Locally it watches the cgroups for --seconds (30; the verdict needs at least 20 samples) and
then prints; with --agent it asks a MemoryGuard agent for the last --window seconds and prints
at once.

  memoryguard explain 94eb36cd-29e1-478b-b365-4cb5dfc7d6fb
  memoryguard explain kubepods.slice/…/cri-containerd-<id>.scope --seconds 60
  memoryguard explain 94eb36cd-… --agent http://node-a:9732 --token-file token
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memoryguard.agent.cgroup import (
    ALL_TIERS,
    CgroupProbe,
    NoMemoryCgroup,
    detect_hierarchy,
    layout_for,
    normalized_stat,
)
from memoryguard.agent.discovery import POD_UID_PATTERN, discover
from memoryguard.commands.sources import (
    AgentSource,
    Reading,
    SourceError,
    growth_bytes_per_second,
    human_bytes,
)
from memoryguard.engine import Assessment, Policy, Sample, Verdict, assess

MIB = 1024 * 1024
BREAKDOWN_KEYS = (
    "anon",
    "file",
    "shmem",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "kernel",
    "slab_reclaimable",
    "swapcached",
    "zswap",
    "zswapped",
)
HEADLINES: dict[Verdict, str] = {
    Verdict.PAGE_CACHE_PRESSURE: "PAGE CACHE — the kernel (or memory.reclaim) can free it; no restart needed",
    Verdict.ANON_GROWTH: "ANON GROWTH — reclaim cannot free it; only a restart (or a fix) will",
    Verdict.THROTTLED_HIGH: "THROTTLED AT memory.high — the process stalls in reclaim",
    Verdict.SWAP_EXHAUSTED: "SWAP EXHAUSTED — anon can no longer be swapped out: a stall or OOM kill is next",
    Verdict.BOUNDED: "BOUNDED — memory swings but does not trend up",
    Verdict.HEALTHY: "HEALTHY — no memory trouble in sight",
    Verdict.INSUFFICIENT_DATA: "NOT ENOUGH DATA — watch longer",
}


@dataclass
class Observed:
    """One cgroup's readings over the observation, and its kernel dicts at the end."""

    title: str
    samples: list[Sample]
    entry: dict[str, Any] = field(default_factory=dict)  # stat, events, swap_events, pressure, limits
    cgroup_version: int = 2

    @classmethod
    def from_reading(cls, reading: Reading, title: str) -> Observed:
        """An agent's (or any source's) reading, with its memory.stat in v2 key names."""
        version = reading.cgroup_version or 2
        entry = dict(reading.entry)
        entry["stat"] = normalized_stat(version, entry.get("stat") or {})
        return cls(title, reading.history, entry, version)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", help="pod UID, or cgroup directory (absolute, or relative to the memory hierarchy)"
    )
    parser.add_argument(
        "--root", type=Path, default=Path("/sys/fs/cgroup"), help="cgroup root (default %(default)s)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to watch locally (default 30)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings (default 1)")
    parser.add_argument(
        "--agent", metavar="URL", help="ask a MemoryGuard agent instead of reading local cgroups"
    )
    parser.add_argument("--token-file", type=Path, help="file holding the bearer token for --agent")
    parser.add_argument(
        "--window", type=float, default=600.0, help="history to ask the agent for (default 600 s)"
    )
    parser.add_argument(
        "--runtime-heap-limit",
        type=int,
        metavar="BYTES",
        help="the runtime's own heap cap when below memory.max (e.g. Node.js --max-old-space-size in bytes)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        observed = from_agent(args) if args.agent else watch_locally(args)
    except (SourceError, NoMemoryCgroup) as exc:
        print(f"memoryguard explain: {exc}", file=sys.stderr)
        return 1
    print(render_all(observed, now_seconds=time.time(), runtime_heap_limit_bytes=args.runtime_heap_limit))
    return 0


# --- getting readings ---------------------------------------------------------------------


def watch_locally(args: argparse.Namespace) -> list[Observed]:
    if args.interval <= 0 or args.seconds < 0:
        raise SystemExit("--interval must be > 0 and --seconds ≥ 0")
    hierarchy = detect_hierarchy(args.root)
    targets = _local_targets(args.target, hierarchy.memory_root)
    layout = layout_for(hierarchy.version)
    probes = [(title, CgroupProbe(path, layout)) for title, path in targets]
    series: list[list[Sample]] = [[] for _ in probes]
    errors: dict[str, int] = {}
    readings = math.floor(args.seconds / args.interval + 1e-9) + 1  # 0.3 / 0.1 is 2.999…
    if readings > 1:
        print(
            f"watching {len(probes)} cgroup(s) for {args.seconds:g} s (Ctrl-C to stop early)…",
            file=sys.stderr,
            flush=True,
        )
    start = time.monotonic()
    try:
        for k in range(readings):
            if k:
                time.sleep(max(0.0, start + k * args.interval - time.monotonic()))
            t = time.time()
            for (_, probe), samples in zip(probes, series, strict=True):
                if probe.read(ALL_TIERS, errors) and probe.complete:
                    samples.append(probe.sample(t))
    except KeyboardInterrupt:
        pass
    observed = []
    for (title, probe), samples in zip(probes, series, strict=True):
        if not samples:
            continue
        entry = {
            "stat": normalized_stat(hierarchy.version, probe.stat()),
            "events": probe.events(),
            "swap_events": probe.swap_events(),
            "pressure": probe.pressure(),
            "limits": probe.limits(),
        }
        observed.append(Observed(title, samples, entry, hierarchy.version))
    if not observed:
        raise SourceError(f"could not read the memory of {args.target} ({errors or 'no containers'})")
    observed.sort(key=lambda o: -o.samples[-1].working_set_bytes)
    return observed


def _local_targets(target: str, memory_root: Path) -> list[tuple[str, Path]]:
    if POD_UID_PATTERN.match(target):
        found = discover(memory_root)
        pod = found.pods.get(target)
        if pod is None:
            raise SourceError(f"pod {target} has no cgroup under {memory_root} (not on this node?)")
        containers = [c for (uid, _), c in found.containers.items() if uid == target]
        if not containers:
            return [(f"pod {target} ({pod.qos})", Path(pod.path))]
        return [
            (f"pod {target} ({pod.qos}) container {c.container_id[:13]} [{c.runtime}]", Path(c.path))
            for c in containers
        ]
    path = Path(target)
    if not path.is_absolute():
        path = memory_root / path
    if not path.is_dir():
        raise SourceError(f"{target} is neither a pod UID nor a cgroup directory (looked for {path})")
    return [(f"cgroup {path}", path)]


def from_agent(args: argparse.Namespace) -> list[Observed]:
    if not POD_UID_PATTERN.match(args.target):
        raise SourceError("with --agent, the target must be a pod UID")
    source = AgentSource(args.agent, token_file=args.token_file, history_seconds=args.window)
    readings = source.read([args.target])
    if not readings:
        raise SourceError(f"the agent at {args.agent} has no pod {args.target}")
    out = [
        Observed.from_reading(
            r, f"pod {r.labels['POD-UID']} ({r.labels['QOS']}) container {r.labels['CONTAINER']}"
        )
        for r in readings
    ]
    out.sort(key=lambda o: -o.samples[-1].working_set_bytes)
    return out


# --- the screen ---------------------------------------------------------------------------


def render_all(
    observed: Sequence[Observed], *, now_seconds: float, runtime_heap_limit_bytes: int | None = None
) -> str:
    """One screen per cgroup, separated by a rule."""
    screens = (
        render(o, now_seconds=now_seconds, runtime_heap_limit_bytes=runtime_heap_limit_bytes)
        for o in observed
    )
    return ("\n\n" + "-" * 72 + "\n\n").join(screens)


def render(observed: Observed, *, now_seconds: float, runtime_heap_limit_bytes: int | None = None) -> str:
    """The diagnosis screen of one cgroup (usable with any samples and kernel dicts)."""
    samples = observed.samples
    s = samples[-1]
    e = observed.entry
    lines = [observed.title, ""]
    limit = s.max_bytes
    usage = (
        f"{human_bytes(s.usage_bytes)} of {human_bytes(limit)}"
        if limit
        else f"{human_bytes(s.usage_bytes)}, no limit"
    )
    if limit:
        usage += f" ({100 * s.usage_bytes / limit:.1f}%)"
    swap_max = "max (unlimited)" if s.swap_max_bytes is None else human_bytes(s.swap_max_bytes)
    lines += [
        "=== USAGE ===",
        f"  usage (memory.current)   {usage}",
        f"  working set              {human_bytes(s.working_set_bytes)}  (usage − inactive_file)",
        "",
        "=== SWAP ===",
        f"  swap used                {human_bytes(s.swap_current_bytes)}",
        f"  swap max                 {swap_max}",
        "",
        "=== BREAKDOWN ===",
    ]
    stat = dict(e.get("stat") or {})
    if "kernel" not in stat and s.kernel_bytes is not None:  # v1 keeps it outside memory.stat
        stat["kernel"] = s.kernel_bytes
    shown = [k for k in BREAKDOWN_KEYS if k in stat]
    lines += [f"  {k:<24} {stat[k] / MIB:>10.2f} MiB" for k in shown] or ["  (memory.stat unavailable)"]
    lines += ["", "=== EVENTS ==="]
    lines += _counters(e.get("events"), "no memory.events")
    lines += ["", "=== SWAP EVENTS ==="]
    lines += _counters(
        e.get("swap_events"), "no swap events file" if observed.cgroup_version == 2 else "none on cgroup v1"
    )
    lines += ["", "=== MEMORY.HIGH ==="]
    if observed.cgroup_version == 1:
        lines.append("  none on cgroup v1")
    else:
        lines.append(f"  {'max (no throttling)' if s.high_bytes is None else human_bytes(s.high_bytes)}")
        if s.high_events:
            lines.append(f"  throttled {s.high_events} times so far (memory.events high)")
    pressure = e.get("pressure") or {}
    if pressure:
        lines += ["", "=== PRESSURE (PSI) ==="]
        for kind in ("some", "full"):
            row = pressure.get(kind)
            if row:
                lines.append(
                    f"  {kind:<5} avg10 {row.get('avg10', 0):6.2f}%  avg60 {row.get('avg60', 0):6.2f}%  "
                    f"avg300 {row.get('avg300', 0):6.2f}%"
                )
    lines += ["", "=== TREND ===", *_trend(samples)]
    assessment = assess(
        samples, Policy.default(), now_seconds=now_seconds, runtime_heap_limit_bytes=runtime_heap_limit_bytes
    )
    lines += ["", "=== VERDICT ===", *verdict_lines(assessment)]
    return "\n".join(lines)


def _counters(values: Mapping[str, int] | None, missing: str) -> list[str]:
    if not values:
        return [f"  {missing}"]
    return [f"  {k:<24} {v}" for k, v in values.items()]


def _trend(samples: Sequence[Sample]) -> list[str]:
    span = samples[-1].t_seconds - samples[0].t_seconds
    if len(samples) < 2 or span <= 0:
        return ["  one reading only: a trend needs more (--seconds locally, --window from an agent)"]
    lines = [
        f"  over {span:.1f} s ({len(samples)} readings):"
        if span < 10
        else f"  over {span:.0f} s ({len(samples)} readings):"
    ]
    for label, attribute in (
        ("anon", "anon_bytes"),
        ("file", "file_bytes"),
        ("working set", "working_set_bytes"),
    ):
        first = getattr(samples[0], attribute)
        last = getattr(samples[-1], attribute)
        rate = growth_bytes_per_second(samples, attribute)
        per_min = "" if rate is None else f"  ({rate * 60 / MIB:+.1f} MiB/min)"
        lines.append(f"  {label:<24} {human_bytes(first)} → {human_bytes(last)}{per_min}")
    return lines


def verdict_lines(a: Assessment) -> list[str]:
    lines = [f"  {HEADLINES.get(a.verdict, a.verdict.value)}", f"  {a.evidence}"]
    fc = a.forecast
    if fc is not None and fc.eta_seconds is not None:
        lines.append(f"  forecast: {fc.limit_label} reached in about {_duration(fc.eta_seconds)}")
    if a.reclaimable_bytes and a.verdict in (Verdict.PAGE_CACHE_PRESSURE, Verdict.THROTTLED_HIGH):
        lines.append(f"  reclaimable page cache: {human_bytes(a.reclaimable_bytes)}")
    lines += [f"  note: {note}" for note in a.notes]
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
