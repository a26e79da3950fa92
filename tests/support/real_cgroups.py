"""A node's worth of REAL (empty) pod and container cgroups, under this process's own memory cgroup.

The synthetic tree of ``cgroup_tree`` is plain files on tmpfs: reading them costs what tmpfs
costs. The kernel's cgroup files are generated at every read (``memory.stat`` walks the
cgroup's counters), so a benchmark on real cgroups shows what the sampler costs on a node.
This creates ``kubepods/<qos>/pod<uid>/<id>`` (cgroupfs driver layout) with empty cgroups —
no processes — under ``<own memory cgroup>/mg-bench-<random>``, runs a command with ``{root}``
replaced by that directory, and removes every cgroup it made, whatever happens.

    python -m tests.support.real_cgroups --containers 500 -- \\
        .venv/bin/memoryguard sample --root {root} --repeat 100 --json

Needs root and a memory controller (cgroup v1 at /sys/fs/cgroup/memory, or v2). It never
touches a cgroup outside its own directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

V1_MEMORY = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


def own_memory_cgroup() -> tuple[Path, int]:
    """This process's memory cgroup directory and the cgroup version it is on."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") and (V1_MEMORY / "memory.usage_in_bytes").exists():
            return V1_MEMORY / path.lstrip("/"), 1
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            own = V2_ROOT / path.lstrip("/")
            if "memory" in (own / "cgroup.controllers").read_text().split():
                return own, 2
    raise SystemExit("no memory cgroup controller for this process (v1 memory line or v2 with memory)")


def build(root: Path, version: int, containers: int, seed: int = 0) -> list[Path]:
    """Make the tree; returns every directory made, parents first."""
    rng = random.Random(seed)
    made: list[Path] = []

    def mkdir(path: Path, *, parent_of_more: bool) -> None:
        path.mkdir()
        made.append(path)
        if version == 2 and parent_of_more:
            (path / "cgroup.subtree_control").write_text("+memory")

    mkdir(root, parent_of_more=True)
    kubepods = root / "kubepods"
    mkdir(kubepods, parent_of_more=True)
    for qos in ("burstable", "besteffort"):
        mkdir(kubepods / qos, parent_of_more=True)
    count = 0
    index = 0
    while count < containers:
        qos = ("guaranteed", "burstable", "burstable", "besteffort")[index % 4]
        parent = kubepods if qos == "guaranteed" else kubepods / qos
        pod = parent / f"pod{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        mkdir(pod, parent_of_more=True)
        for _ in range(min(rng.randint(2, 4), containers - count)):  # a sandbox and 1-3 apps
            mkdir(pod / f"{rng.getrandbits(256):064x}", parent_of_more=False)
            count += 1
        index += 1
    return made


def remove(made: list[Path]) -> None:
    for path in reversed(made):  # children before parents
        with contextlib.suppress(FileNotFoundError):
            path.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--containers", type=int, default=500)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run; {root} is the tree's root")
    args = parser.parse_args(argv)
    command = [part for part in args.command if part != "--"]
    if not command:
        parser.error("give a command to run after --")
    if os.geteuid() != 0:
        raise SystemExit("creating cgroups needs root")
    own, version = own_memory_cgroup()
    root = own / f"mg-bench-{secrets.token_hex(4)}"
    made: list[Path] = []
    try:
        made = build(root, version, args.containers)
        print(f"real_cgroups: {args.containers} container cgroups (v{version}) under {root}", file=sys.stderr)
        return subprocess.run([part.replace("{root}", str(root)) for part in command], check=False).returncode
    finally:
        remove(made)


if __name__ == "__main__":
    raise SystemExit(main())
