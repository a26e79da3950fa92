"""What the ladder decided, for which target, and why."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Action(enum.StrEnum):
    NONE = "none"
    RECLAIM = "reclaim"
    DROP_CACHES = "drop_caches"
    RESTART = "restart"
    EVICT = "evict"

    @property
    def disruptive(self) -> bool:
        """Ends the running process: counts against the restart budget."""
        return self in (Action.RESTART, Action.EVICT)


@dataclass(frozen=True, slots=True)
class Target:
    """The container being judged and what a restart would act on.

    ``kind`` is ``"workload"`` when the pod has an owner that can roll it (Deployment,
    StatefulSet, DaemonSet, through ReplicaSets), ``"pod"`` for a bare pod, which can only be
    evicted. ``name`` names the restart target (``deployment/web``, ``pod/batch-1``) and keys its
    restart cooldown; ``pod``/``container`` key reclaim cooldowns, which are per cgroup.
    """

    kind: str
    name: str
    pod: str = ""
    container: str = ""
    reclaim_supported: bool = True  # False on cgroup v1 and kernels before 5.19 (no memory.reclaim)

    def __post_init__(self) -> None:
        if self.kind not in ("workload", "pod"):
            raise ValueError(f"target.kind: expected 'workload' or 'pod', got {self.kind!r}")

    @property
    def restart_key(self) -> str:
        return self.name

    @property
    def reclaim_key(self) -> str:
        cgroup = self.pod or self.name
        return f"{cgroup}/{self.container}" if self.container else cgroup

    def limiter_key(self, action: Action) -> str:
        """What a cooldown of ``action`` is counted against: the workload, the cgroup, or the node."""
        if action.disruptive:
            return self.restart_key
        if action is Action.DROP_CACHES:
            return "node"
        return self.reclaim_key


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str  # plain words with the numbers, for the Event
    wanted: Action = Action.NONE  # what the ladder wanted before the rate limiter had its say
    blocked_by: str | None = None  # set when ``wanted`` was refused
    reclaim_bytes: int | None = None
    drop_caches_level: int | None = None
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "wanted": self.wanted.value,
            "reason": self.reason,
            "blocked_by": self.blocked_by,
            "reclaim_bytes": self.reclaim_bytes,
            "drop_caches_level": self.drop_caches_level,
            "dry_run": self.dry_run,
        }
