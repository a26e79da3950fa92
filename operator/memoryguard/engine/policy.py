"""The parsed MemoryGuard spec: what the engine may decide and how eagerly.

Parsing YAML and Kubernetes quantities into a :class:`Policy` is not the engine's job
(see ``memoryguard.guardspec``); this module only holds the validated values and their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

MIB = 1024 * 1024


def _require(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{field_name}: {message}")


@dataclass(frozen=True, slots=True)
class ReclaimPolicy:
    enabled: bool = True
    cooldown_seconds: float = 120.0
    # Reclaiming a few MiB costs a write and a stall for no gain; below this, leave it to the kernel.
    min_reclaimable_bytes: int = 16 * MIB

    def __post_init__(self) -> None:
        _require(self.cooldown_seconds >= 0, "actions.reclaim.cooldown", "must not be negative")
        _require(self.min_reclaimable_bytes >= 0, "actions.reclaim.minReclaimable", "must not be negative")


@dataclass(frozen=True, slots=True)
class DropCachesPolicy:
    # Node-wide: it empties every pod's page cache on the node, so it is opt-in.
    enabled: bool = False
    level: int = 1
    cooldown_seconds: float = 1800.0

    def __post_init__(self) -> None:
        _require(self.level in (1, 2, 3), "actions.dropCaches.level", f"must be 1, 2 or 3, got {self.level}")
        _require(self.cooldown_seconds >= 0, "actions.dropCaches.cooldown", "must not be negative")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    enabled: bool = True
    cooldown_seconds: float = 1800.0
    max_per_hour: int = 2
    # How long the owning workload needs to roll a fresh pod in: the restart must be decided at
    # least this long before the forecast limit, plus a safety margin.
    rollout_seconds: float = 120.0
    # Margin on top of rollout_seconds, as a fraction of it: the forecast is an estimate, and a
    # leak often speeds up as the kernel starts reclaiming (refaults, direct reclaim stalls).
    margin_fraction: float = 0.5

    def __post_init__(self) -> None:
        _require(self.cooldown_seconds >= 0, "actions.restart.cooldown", "must not be negative")
        _require(self.max_per_hour >= 0, "actions.restart.maxPerHour", "must not be negative")
        _require(self.rollout_seconds > 0, "actions.restart.rolloutSeconds", "must be positive")
        _require(self.margin_fraction >= 0, "actions.restart.marginFraction", "must not be negative")

    @property
    def lead_seconds(self) -> float:
        """Restart when the forecast time-to-limit is at most this."""
        return self.rollout_seconds * (1.0 + self.margin_fraction)


@dataclass(frozen=True, slots=True)
class EvictPolicy:
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Policy:
    """One MemoryGuard's decision parameters (``spec.forecast``, ``spec.thresholds``, ``spec.actions``)."""

    window_seconds: float = 600.0
    horizon_seconds: float = 900.0
    # 20 one-second samples: enough for a robust slope (Theil–Sen tolerates ~29 % outliers),
    # short enough that a fast leak is still caught a rollout ahead.
    min_samples: int = 20
    warn_fraction: float = 0.8
    act_fraction: float = 0.9
    reclaim: ReclaimPolicy = field(default_factory=ReclaimPolicy)
    drop_caches: DropCachesPolicy = field(default_factory=DropCachesPolicy)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    evict: EvictPolicy = field(default_factory=EvictPolicy)
    dry_run: bool = False

    def __post_init__(self) -> None:
        _require(self.window_seconds > 0, "forecast.window", "must be positive")
        _require(self.horizon_seconds > 0, "forecast.horizon", "must be positive")
        _require(self.min_samples >= 3, "forecast.minSamples", f"must be at least 3, got {self.min_samples}")
        _require(0 < self.warn_fraction <= 1, "thresholds.warn", "must be within 1%..100%")
        _require(0 < self.act_fraction <= 1, "thresholds.act", "must be within 1%..100%")
        _require(
            self.warn_fraction <= self.act_fraction,
            "thresholds.warn",
            f"must not exceed thresholds.act ({self.warn_fraction:.0%} > {self.act_fraction:.0%})",
        )

    @classmethod
    def default(cls) -> Policy:
        return cls()

    def with_rollout_seconds(self, rollout_seconds: float) -> Policy:
        return replace(self, restart=replace(self.restart, rollout_seconds=rollout_seconds))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for status and ``replay --json``."""
        return {
            "window_seconds": self.window_seconds,
            "horizon_seconds": self.horizon_seconds,
            "min_samples": self.min_samples,
            "warn_fraction": self.warn_fraction,
            "act_fraction": self.act_fraction,
            "reclaim": {
                "enabled": self.reclaim.enabled,
                "cooldown_seconds": self.reclaim.cooldown_seconds,
                "min_reclaimable_bytes": self.reclaim.min_reclaimable_bytes,
            },
            "drop_caches": {
                "enabled": self.drop_caches.enabled,
                "level": self.drop_caches.level,
                "cooldown_seconds": self.drop_caches.cooldown_seconds,
            },
            "restart": {
                "enabled": self.restart.enabled,
                "cooldown_seconds": self.restart.cooldown_seconds,
                "max_per_hour": self.restart.max_per_hour,
                "rollout_seconds": self.restart.rollout_seconds,
                "margin_fraction": self.restart.margin_fraction,
            },
            "evict": {"enabled": self.evict.enabled},
            "dry_run": self.dry_run,
        }
