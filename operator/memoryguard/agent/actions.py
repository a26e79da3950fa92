"""Node-local actions (adapter): proactive reclaim of one cgroup, and dropping the node's caches.

``reclaim`` writes to cgroup v2's ``memory.reclaim`` (kernel ≥ 5.19) in chunks. A write
returns once the kernel reclaimed the amount written; when it cannot (nothing more it is
willing to free), it fails with ``EAGAIN`` — the normal way to learn that a cgroup has less
reclaimable memory than asked, so it ends the reclaim as *partial*, not as an error. The bytes
actually freed come from ``memory.current`` read before and after: the kernel's own count
of pages reclaimed includes pages that were charged again meanwhile.

``drop_caches`` writes ``drop_caches`` in the host's ``/proc/sys/vm`` (1 = page cache, 2 = slab,
3 = both; in a pod that directory alone is mounted from the host, see ``--proc-sys-vm``). It
is node-wide and costs every workload its cache, so the agent only offers it when started
with ``--enable-drop-caches``: refusing otherwise (and rate-limiting) is the server's job,
this function just does it. Dirty pages are not dropped; no ``sync`` is run first, because a
node-wide sync can stall for a long time on a busy node.

Both block for as long as the kernel takes (reclaiming gigabytes can take seconds): run them
in a worker thread, not on the event loop.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from memoryguard.agent import parsers
from memoryguard.agent.cgroup import read_sample
from memoryguard.engine.model import Sample

MiB = 1024 * 1024
DEFAULT_CHUNK_BYTES = 32 * MiB
DROP_CACHES_LEVELS = (1, 2, 3)

ReclaimWriter = Callable[[str, int], None]
"""Writes one chunk (bytes to reclaim) to a ``memory.reclaim`` path; raises BlockingIOError on EAGAIN."""


class ReclaimUnsupported(RuntimeError):
    """The cgroup has no ``memory.reclaim`` (cgroup v1, or a kernel older than 5.19)."""


@dataclass(frozen=True, slots=True)
class ReclaimResult:
    requested_bytes: int
    freed_bytes: int  # memory.current before − after (0 if it grew meanwhile)
    partial: bool  # the kernel reclaimed less than asked (EAGAIN)
    before: Sample
    after: Sample
    chunks: int  # chunks the kernel accepted in full


@dataclass(frozen=True, slots=True)
class DropCachesResult:
    level: int
    freed_bytes: int  # MemFree after − before (0 if it fell meanwhile)
    before_meminfo: dict[str, int]
    after_meminfo: dict[str, int]


def write_reclaim(path: str, nbytes: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(nbytes).encode())
    finally:
        os.close(fd)


def reclaim(
    cgroup_dir: Path,
    requested_bytes: int,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    write: ReclaimWriter = write_reclaim,
    clock: Callable[[], float] | None = None,
) -> ReclaimResult:
    """Ask the kernel to reclaim ``requested_bytes`` from the cgroup at ``cgroup_dir``.

    Raises :class:`ReclaimUnsupported` without ``memory.reclaim``, FileNotFoundError when the
    cgroup is gone, ValueError for a non-positive amount; other write errors propagate.
    """
    if requested_bytes <= 0:
        raise ValueError(f"requested_bytes must be > 0, got {requested_bytes!r}")
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be > 0, got {chunk_bytes!r}")
    reclaim_path = Path(cgroup_dir) / "memory.reclaim"
    if not reclaim_path.exists():
        if not Path(cgroup_dir).is_dir():
            raise FileNotFoundError(errno.ENOENT, "cgroup is gone", str(cgroup_dir))
        raise ReclaimUnsupported(
            f"{cgroup_dir} has no memory.reclaim (cgroup v1, or a kernel older than 5.19)"
        )
    now = clock or time.time
    before = _reading(cgroup_dir, now())
    remaining = requested_bytes
    chunks = 0
    partial = False
    while remaining > 0:
        chunk = min(chunk_bytes, remaining)
        try:
            write(str(reclaim_path), chunk)
        except BlockingIOError:
            partial = True
            break
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise
            partial = True
            break
        chunks += 1
        remaining -= chunk
    after = _reading(cgroup_dir, now())
    freed = max(0, before.usage_bytes - after.usage_bytes)
    return ReclaimResult(requested_bytes, freed, partial, before, after, chunks)


def _reading(cgroup_dir: Path, t_seconds: float) -> Sample:
    errors: dict[str, int] = {}
    sample = read_sample(cgroup_dir, 2, t_seconds, errors)
    if sample is None:
        raise FileNotFoundError(errno.ENOENT, f"cannot read the cgroup's memory ({errors})", str(cgroup_dir))
    return sample


def drop_caches(
    level: int,
    proc_root: Path = Path("/proc"),
    *,
    sys_vm_dir: Path | None = None,
    write: Callable[[Path, int], None] | None = None,
) -> DropCachesResult:
    """Write ``level`` to ``<sys_vm_dir>/drop_caches`` (default ``<proc_root>/sys/vm``); MemFree
    in ``<proc_root>/meminfo`` before and after tells what it freed (meminfo is node-wide in
    any procfs, a container's own included)."""
    if level not in DROP_CACHES_LEVELS:
        raise ValueError(f"level must be 1 (page cache), 2 (slab) or 3 (both), got {level!r}")
    target = Path(sys_vm_dir if sys_vm_dir is not None else Path(proc_root) / "sys" / "vm") / "drop_caches"
    before = _meminfo(proc_root)
    (write or _write_level)(target, level)
    after = _meminfo(proc_root)
    freed = max(0, after.get("MemFree", 0) - before.get("MemFree", 0))
    return DropCachesResult(level, freed, before, after)


def _write_level(target: Path, level: int) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, f"{level}\n".encode())
    finally:
        os.close(fd)


def _meminfo(proc_root: Path) -> dict[str, int]:
    with open(Path(proc_root) / "meminfo", "rb") as f:
        return parsers.parse_meminfo(f.read())[0]
