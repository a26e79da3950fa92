"""Live table of containers' memory, refreshed every second: what `kubectl top` shows, and its parts.

Columns: ANON (anonymous memory: only freeing it or a restart gives it back), FILE (page cache:
the kernel reclaims it under pressure), WSET (working set = usage − inactive file, what
kubelet and `kubectl top` report and evict on), LIMIT (memory.max), %LIMIT (working set as a
share of the limit), ANON/S (anonymous memory growth over the last --growth-window seconds, in
MiB/s: a leak shows here), EVENTS (OOM kills, limit hits and memory.high throttling so far).
Above the table, the node's memory (MemTotal, MemAvailable, MemFree from /proc/meminfo, or the
agent's /v1/node) and its memory pressure (PSI avg10: share of the last 10 s some or all tasks
waited for memory).

Where from:
  (default)        Kubernetes pods on this node, found under --root (/sys/fs/cgroup); when
                   there are none, every cgroup under the memory hierarchy instead
  --cgroup PATH    only these cgroups (absolute, or relative to the memory hierarchy); repeatable
  --all            every cgroup under the memory hierarchy
  --agent URL      a MemoryGuard agent's API (http://NODE:9732), with --token-file for its bearer token

Works on cgroup v2 and v1 (on v1 the memory hierarchy is /sys/fs/cgroup/memory).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from memoryguard.agent.cgroup import NoMemoryCgroup
from memoryguard.commands.sources import (
    MIB,
    AgentSource,
    PathSource,
    PodSource,
    Reading,
    SourceError,
    growth_bytes_per_second,
    human_bytes,
)

SORT_KEYS = ("limit", "wset", "anon", "growth", "name")
_CLEAR = "\x1b[H\x1b[2J"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    parser.add_argument(
        "--root", type=Path, default=Path("/sys/fs/cgroup"), help="cgroup root (default %(default)s)"
    )
    where.add_argument(
        "--agent", metavar="URL", help="read from a MemoryGuard agent instead of local cgroups"
    )
    parser.add_argument("--token-file", type=Path, help="file holding the bearer token for --agent")
    parser.add_argument(
        "--proc-root",
        type=Path,
        default=Path("/proc"),
        help="procfs for the node line with local cgroups (default %(default)s)",
    )
    where.add_argument(
        "--cgroup", action="append", default=[], metavar="PATH", help="only this cgroup (repeatable)"
    )
    where.add_argument("--all", action="store_true", help="every cgroup under the memory hierarchy")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    parser.add_argument(
        "--once", action="store_true", help="print one table (after one interval, for growth) and exit"
    )
    parser.add_argument("--sort", choices=SORT_KEYS, default="limit", help="order of rows (default: %%LIMIT)")
    parser.add_argument("--limit", type=int, default=0, metavar="N", help="show at most N rows")
    parser.add_argument(
        "--growth-window",
        type=float,
        default=30.0,
        help="seconds of history for ANON/S (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    if args.interval < 0:
        raise SystemExit("--interval must be ≥ 0")
    try:
        source, note = _source(args)
        live = not args.once and sys.stdout.isatty()
        start = time.monotonic()
        slot = 0
        while True:
            readings = source.read()
            # With --once, a second reading one interval later gives ANON/S something to say.
            if not (args.once and slot == 0 and args.interval > 0):
                table = render(
                    readings,
                    title=_title(source.description),
                    note=note,
                    sort=args.sort,
                    limit=args.limit,
                    node=source.node(),
                )
                print((_CLEAR if live else "") + table, flush=True)
                if args.once:
                    return 0
                if not live:
                    print(flush=True)
            # A fixed grid: refreshes do not drift, and a slow read skips a slot.
            slot = max(slot + 1, int((time.monotonic() - start) / max(args.interval, 1e-9)) + 1)
            time.sleep(max(0.0, start + slot * args.interval - time.monotonic()))
    except SourceError as exc:
        print(f"memoryguard top: {exc}", file=sys.stderr)
        return 1
    except NoMemoryCgroup as exc:
        print(f"memoryguard top: {exc}", file=sys.stderr)
        return 1


def _source(args: argparse.Namespace) -> tuple[AgentSource | PodSource | PathSource, str]:
    history = args.growth_window
    if args.agent:
        source = AgentSource(
            args.agent, token_file=args.token_file, history_seconds=history, detail="samples"
        )
        return source, ""
    proc = args.proc_root
    if args.cgroup or args.all:
        return (
            PathSource(args.root, args.cgroup, every=args.all, history_seconds=history, proc_root=proc),
            "",
        )
    pods = PodSource(args.root, history_seconds=history, proc_root=proc)
    pods.sampler.tick()
    if pods.sampler.container_count:
        return pods, ""
    fallback = PathSource(args.root, every=True, history_seconds=history, proc_root=proc)
    return (
        fallback,
        f"no Kubernetes pods under {args.root}: showing every cgroup instead (--cgroup PATH to pick)",
    )


def _title(description: str) -> str:
    return f"memoryguard top — {description} — {dt.datetime.now().strftime('%H:%M:%S')}"


def render(
    readings: Sequence[Reading],
    *,
    title: str = "",
    note: str = "",
    sort: str = "limit",
    limit: int = 0,
    node: Mapping[str, Any] | None = None,
) -> str:
    """The table (plus title, node and note lines) for these readings."""
    rows = sorted(readings, key=_sort_key(sort))
    if limit > 0:
        rows = rows[:limit]
    label_names: list[str] = list(readings[0].labels) if readings else ["CGROUP"]
    header = [*label_names, "ANON", "FILE", "WSET", "LIMIT", "%LIMIT", "ANON/S", "EVENTS"]
    table = [header]
    for r in rows:
        s = r.latest
        share = _share(r)
        growth = growth_bytes_per_second(r.history)
        table.append(
            [
                *(r.labels.get(name, "") for name in label_names),
                human_bytes(s.anon_bytes),
                human_bytes(s.file_bytes),
                human_bytes(s.working_set_bytes),
                "max" if s.max_bytes is None else human_bytes(s.max_bytes),
                "-" if share is None else f"{100 * share:.0f}%",
                "-" if growth is None else f"{growth / MIB:+.2f}",
                events_text(r),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    numeric = set(range(len(label_names), len(header) - 1))
    lines = [title] if title else []
    if node is not None:
        lines.append(node_line(node))
    if note:
        lines.append(note)
    if lines:
        lines.append("")
    for row in table:
        cells = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    if not rows:
        lines.append("(no cgroups)")
    return "\n".join(lines)


def node_line(node: Mapping[str, Any]) -> str:
    """``node memory 15.6Gi total, 9.77Gi available (63%), 5.86Gi free; PSI avg10 some 0.12% full 0.00%``."""
    meminfo = node.get("meminfo") or {}
    total, available, free = (meminfo.get(k) for k in ("MemTotal", "MemAvailable", "MemFree"))
    if isinstance(total, int) and total > 0:
        parts = [f"{human_bytes(total)} total"]
        if isinstance(available, int):
            parts.append(f"{human_bytes(available)} available ({100 * available / total:.0f}%)")
        if isinstance(free, int):
            parts.append(f"{human_bytes(free)} free")
        text = "node memory " + ", ".join(parts)
    else:
        text = "node memory unknown (/proc/meminfo unreadable)"
    pressure = node.get("pressure") or {}
    psi = [
        f"{kind} {row['avg10']:.2f}%"
        for kind in ("some", "full")
        if isinstance(row := pressure.get(kind), Mapping) and row.get("avg10") is not None
    ]
    return text + (f"; PSI avg10 {' '.join(psi)}" if psi else "; no PSI on this node")


def _share(r: Reading) -> float | None:
    s = r.latest
    return s.working_set_bytes / s.max_bytes if s.max_bytes else None


def _sort_key(sort: str) -> Callable[[Reading], tuple[Any, ...]]:
    def key(r: Reading) -> tuple[Any, ...]:
        s = r.latest
        name = tuple(r.labels.values())
        if sort == "name":
            return (name,)
        if sort == "wset":
            return (-s.working_set_bytes, name)
        if sort == "anon":
            return (-s.anon_bytes, name)
        if sort == "growth":
            growth = growth_bytes_per_second(r.history)
            return (growth is None, -(growth or 0.0), name)
        share = _share(r)
        return (share is None, -(share or 0.0), -s.working_set_bytes, name)

    return key


def events_text(r: Reading) -> str:
    """The kernel's memory event counters that are not zero, e.g. ``oom_kill=1 max=42``."""
    s = r.latest
    if r.cgroup_version == 1:
        counts = {"oom_kill": s.oom_kill, "failcnt": s.max_events}
    else:
        counts = {"oom_kill": s.oom_kill, "oom": s.oom_events, "max": s.max_events, "high": s.high_events}
        if s.swap_fail_events:
            counts["swap_fail"] = s.swap_fail_events
    text = " ".join(f"{k}={v}" for k, v in counts.items() if v)
    return text or "-"
