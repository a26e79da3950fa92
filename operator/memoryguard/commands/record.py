"""Record one cgroup's memory, once per interval, as a trace file (CSV; see docs/traces.md).

Every file of the cgroup is read every interval (v2 or v1, whichever it is) and one row is
written and flushed, so an interrupted recording keeps what it had. ``t`` counts seconds from
the first row. ``alive`` is 1 while any process lives in the cgroup or below it. Recording
stops after ``--seconds``, on Ctrl-C, ``--linger`` seconds after the last process exited, or
when the cgroup disappears — then a last row repeats the last reading with ``alive`` 0, since
that is when the workload was gone.

    memoryguard record /sys/fs/cgroup/kubepods.slice/…/cri-containerd-<id>.scope -o leak.csv \\
        --seconds 600 --meta workload="node leak.js" --meta runtime_heap_limit_bytes=100663296
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from memoryguard import __version__
from memoryguard.agent.cgroup import (
    ALL_TIERS,
    CgroupProbe,
    NoMemoryCgroup,
    detect_hierarchy,
    layout_for,
    read_file,
)
from memoryguard.engine.model import Sample

# The columns of DESIGN.md's trace contract, then the ones this recorder adds.
COLUMNS = (
    "t",
    "anon",
    "file",
    "inactive_file",
    "active_file",
    "shmem",
    "kernel",
    "current",
    "max",
    "high",
    "oom_kill",
    "pgmajfault",
    "psi_some_avg10",
    "alive",
    "swap_current",
    "swap_max",
    "events_high",
    "events_max",
    "events_oom",
    "swap_events_fail",
    "psi_full_avg10",
)
_META_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cgroup", help="cgroup directory: absolute, or relative to the memory hierarchy under --root"
    )
    parser.add_argument("-o", "--output", required=True, help="trace file to write ('-' for stdout)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="stop after this long (default: until stopped)"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between rows (default %(default)s)"
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=5.0,
        help="keep recording this long after the last process exited (default %(default)s)",
    )
    parser.add_argument(
        "--root", type=Path, default=Path("/sys/fs/cgroup"), help="cgroup root (default %(default)s)"
    )
    parser.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="header line '# KEY: VALUE' (repeatable), e.g. runtime_heap_limit_bytes=100663296",
    )


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise SystemExit("--interval must be > 0")
    meta = _parse_meta(args.meta)
    path = resolve_cgroup(args.cgroup, args.root)
    version = cgroup_version(path)
    probe = CgroupProbe(path, layout_for(version))
    errors: dict[str, int] = {}
    if not probe.read(ALL_TIERS, errors) or not probe.complete:
        raise SystemExit(f"cannot read memory files in {path} ({errors})")
    started_at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    header = {
        "recorded_by": f"memoryguard record {__version__}",
        "cgroup": str(path),
        "cgroup_version": str(version),
        "interval_seconds": f"{args.interval:g}",
        "started_at": started_at,
        **meta,
    }
    out: TextIO = sys.stdout if args.output == "-" else open(args.output, "w", newline="")  # noqa: SIM115
    try:
        rows, reason = record(
            probe, out, header, seconds=args.seconds, interval=args.interval, linger=args.linger
        )
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"record: {rows} rows to {args.output} ({reason})", file=sys.stderr)
    return 0


def record(
    probe: CgroupProbe,
    out: TextIO,
    header: dict[str, str],
    *,
    seconds: float | None,
    interval: float,
    linger: float,
    clock: Any = time.monotonic,
    sleep: Any = time.sleep,
) -> tuple[int, str]:
    """Write the header and one row per interval until a stop condition; (rows, why it stopped)."""
    for key, value in header.items():
        out.write(f"# {key}: {value}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    errors: dict[str, int] = {}
    start = clock()
    rows = 0
    slot = 0
    dead_since: float | None = None
    last: Sample | None = None
    reason = "done"
    try:
        while True:
            elapsed = clock() - start
            if seconds is not None and slot and elapsed >= seconds - 1e-9:
                reason = f"{seconds:g} seconds recorded"
                break
            if slot and not probe.read(ALL_TIERS, errors):  # slot 0 uses the caller's first read
                if last is not None:
                    writer.writerow(trace_row(elapsed, last, alive=False))
                    rows += 1
                reason = "the cgroup disappeared"
                break
            alive = has_processes(probe.path)
            if probe.complete:  # a malformed read writes no row rather than a made-up one
                last = probe.sample(elapsed)
                writer.writerow(trace_row(elapsed, last, alive=alive))
                out.flush()
                rows += 1
            if alive:
                dead_since = None
            elif dead_since is None:
                dead_since = elapsed
            if dead_since is not None and elapsed - dead_since >= linger:
                reason = "no process left in the cgroup"
                break
            # Fixed grid (start + k × interval): rows do not drift; an overrun skips slots.
            now = clock() - start
            slot = max(slot + 1, math.floor(now / interval) + 1)
            sleep(max(0.0, slot * interval - now))
    except KeyboardInterrupt:
        reason = "interrupted"
    out.flush()
    return rows, reason


def trace_row(t_seconds: float, s: Sample, *, alive: bool) -> list[str]:
    return [
        f"{t_seconds:.3f}",
        str(s.anon_bytes),
        str(s.file_bytes),
        _opt(s.inactive_file_bytes),
        _opt(s.active_file_bytes),
        _opt(s.shmem_bytes),
        _opt(s.kernel_bytes),
        _opt(s.current_bytes),
        _limit(s.max_bytes),
        _limit(s.high_bytes),
        str(s.oom_kill),
        str(s.pgmajfault),
        _pct(s.psi_some_avg10),
        "1" if alive else "0",
        _opt(s.swap_current_bytes),
        _limit(s.swap_max_bytes),
        str(s.high_events),
        str(s.max_events),
        str(s.oom_events),
        str(s.swap_fail_events),
        _pct(s.psi_full_avg10),
    ]


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def _limit(value: int | None) -> str:
    return "max" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def has_processes(path: str | Path) -> bool:
    """Whether any process lives in the cgroup or below it (v2: ``cgroup.events`` populated)."""
    try:
        events = read_file(f"{path}/cgroup.events")
    except OSError:
        events = b""
    if events:
        return b"populated 1" in events
    for dirpath, _, _ in os.walk(path):
        try:
            if read_file(f"{dirpath}/cgroup.procs").strip():
                return True
        except OSError:
            continue
    return False


def resolve_cgroup(name: str, root: Path) -> Path:
    """An absolute cgroup directory, or one relative to the memory hierarchy under ``root``."""
    path = Path(name)
    if not path.is_absolute():
        try:
            path = detect_hierarchy(root).memory_root / path
        except NoMemoryCgroup as exc:
            raise SystemExit(str(exc)) from exc
    if not path.is_dir():
        raise SystemExit(f"no such cgroup directory: {path}")
    return path


def cgroup_version(path: Path) -> int:
    """Which memory interface the directory offers: v2 (memory.current) or v1 (memory.usage_in_bytes)."""
    v2_root = (path / "memory.stat").exists() and (path / "cgroup.controllers").exists()
    if (path / "memory.current").exists() or v2_root:
        return 2
    if (path / "memory.usage_in_bytes").exists():
        return 1
    raise SystemExit(f"{path} has no memory controller files (memory.current or memory.usage_in_bytes)")


def _parse_meta(items: Sequence[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _META_KEY.match(key) or "\n" in value:
            raise SystemExit(f"--meta expects KEY=VALUE with KEY of letters, digits, '_', '.', '-': {item!r}")
        meta[key] = value.strip()
    return meta
