"""Shared value types: one memory sample of one cgroup.

This is the contract between the agent (which reads cgroup files), trace files (which store
samples as CSV rows), the operator (which receives samples over HTTP) and the engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of a container's (or pod's) memory cgroup.

    Byte counts are whole bytes. ``None`` means "not known" (the file is missing on this
    kernel, or the trace has no such column); for ``max_bytes``/``high_bytes``/
    ``swap_max_bytes`` ``None`` means the cgroup file says ``max`` (no limit).
    Counters (``*_events``, ``oom_kill``, ``pgmajfault``) are cumulative since the cgroup
    was created, as the kernel reports them.
    """

    t_seconds: float
    anon_bytes: int
    file_bytes: int
    max_bytes: int | None
    inactive_file_bytes: int | None = None
    active_file_bytes: int | None = None
    shmem_bytes: int | None = None
    kernel_bytes: int | None = None
    current_bytes: int | None = None
    high_bytes: int | None = None
    swap_current_bytes: int | None = None
    swap_max_bytes: int | None = None
    oom_kill: int = 0
    oom_events: int = 0
    high_events: int = 0
    max_events: int = 0
    swap_fail_events: int = 0
    pgmajfault: int = 0
    psi_some_avg10: float | None = None
    psi_full_avg10: float | None = None
    alive: bool = True

    @property
    def usage_bytes(self) -> int:
        """memory.current, or the sum of its main parts when the reading lacks it."""
        if self.current_bytes is not None:
            return self.current_bytes
        return self.anon_bytes + self.file_bytes + (self.kernel_bytes or 0)

    @property
    def working_set_bytes(self) -> int:
        """usage − inactive_file: what kubelet and cAdvisor report (and evict on)."""
        inactive = self.inactive_file_bytes if self.inactive_file_bytes is not None else 0
        return max(0, self.usage_bytes - inactive)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        """Build from a dict such as ``to_dict()`` produced; unknown keys are ignored."""
        names = SAMPLE_FIELD_NAMES
        return cls(**{k: v for k, v in data.items() if k in names})


SAMPLE_FIELD_NAMES: frozenset[str] = frozenset(f.name for f in fields(Sample))
