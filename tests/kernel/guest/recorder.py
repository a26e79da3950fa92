"""Plain trace recorder for the kernel rig (stdlib only; runs inside the guest).

    recorder.py CGROUP_DIR ROWS_CSV --max-seconds N [--tail-seconds N]

Appends one row a second in the trace format of DESIGN.md ("Trace files") until the cgroup
has had no process for ``--tail-seconds`` or ``--max-seconds`` have passed, or the cgroup is
removed. It writes the header and rows (the scenario puts the metadata on top: it needs the
outcome). One process per scenario: under TCG every fork costs, a shell loop of awk calls
could not keep a one-second tick with several scenarios in one guest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

COLUMNS = [
    "t",
    "anon",
    "file",
    "inactive_file",
    "active_file",
    "inactive_anon",
    "active_anon",
    "shmem",
    "kernel",
    "swapcached",
    "current",
    "max",
    "high",
    "swap_current",
    "swap_max",
    "oom_kill",
    "oom_events",
    "high_events",
    "max_events",
    "swap_fail_events",
    "pgmajfault",
    "psi_some_avg10",
    "psi_full_avg10",
    "alive",
]
STAT_COLUMNS = (
    "anon",
    "file",
    "inactive_file",
    "active_file",
    "inactive_anon",
    "active_anon",
    "shmem",
    "kernel",
    "swapcached",
    "pgmajfault",
)


def read_keyed(path: Path) -> dict[str, str]:
    pairs = (line.split(maxsplit=1) for line in path.read_text().splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def read_pressure(path: Path) -> dict[str, str]:
    # "some avg10=0.00 avg60=0.00 avg300=0.00 total=0"
    result = {}
    for line in path.read_text().splitlines():
        kind, *fields = line.split()
        for field in fields:
            key, _, value = field.partition("=")
            result[f"{kind}_{key}"] = value
    return result


def sample(cgroup: Path, t_seconds: float) -> tuple[list[str], bool]:
    stat = read_keyed(cgroup / "memory.stat")
    events = read_keyed(cgroup / "memory.events")
    swap_events = read_keyed(cgroup / "memory.swap.events")
    pressure = read_pressure(cgroup / "memory.pressure")
    alive = read_keyed(cgroup / "cgroup.events").get("populated") == "1"
    row = {
        "t": f"{t_seconds:.2f}",
        **{key: stat.get(key, "0") for key in STAT_COLUMNS},
        "current": (cgroup / "memory.current").read_text().strip(),
        "max": (cgroup / "memory.max").read_text().strip(),
        "high": (cgroup / "memory.high").read_text().strip(),
        "swap_current": (cgroup / "memory.swap.current").read_text().strip(),
        "swap_max": (cgroup / "memory.swap.max").read_text().strip(),
        "oom_kill": events.get("oom_kill", "0"),
        "oom_events": events.get("oom", "0"),
        "high_events": events.get("high", "0"),
        "max_events": events.get("max", "0"),
        "swap_fail_events": swap_events.get("fail", "0"),
        "psi_some_avg10": pressure.get("some_avg10", "0.00"),
        "psi_full_avg10": pressure.get("full_avg10", "0.00"),
        "alive": "1" if alive else "0",
    }
    return [row[c] for c in COLUMNS], alive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("cgroup", type=Path)
    parser.add_argument("rows", type=Path)
    parser.add_argument("--max-seconds", type=int, required=True)
    parser.add_argument("--tail-seconds", type=int, default=3)
    args = parser.parse_args()
    start = time.monotonic()
    dead_ticks = 0
    with args.rows.open("w", buffering=1) as out:
        out.write(",".join(COLUMNS) + "\n")
        for tick in range(args.max_seconds):
            try:
                row, alive = sample(args.cgroup, time.monotonic() - start)
            except FileNotFoundError:
                break  # the cgroup was removed
            out.write(",".join(row) + "\n")
            dead_ticks = 0 if alive else dead_ticks + 1
            if dead_ticks >= args.tail_seconds:
                break
            # Sleep to the next whole second after start: a slow tick must not shift the rest.
            time.sleep(max(0.05, start + tick + 1 - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
