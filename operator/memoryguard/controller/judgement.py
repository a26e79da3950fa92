"""The operator's side of the engine: a MemoryGuard spec becomes a Policy, a container's
history becomes an Assessment and a Decision.

The engine is pure and knows nothing of Kubernetes; this module turns Kubernetes notation
(durations, ``90%``, quantities) into its numbers, with errors that name the spec field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.utils import parse_quantity

from memoryguard.controller.pods import ContainerInfo
from memoryguard.engine.assessment import Assessment, assess
from memoryguard.engine.decision import Action, Decision, Target
from memoryguard.engine.ladder import plan
from memoryguard.engine.limiter import LimiterState, RateLimits, record
from memoryguard.engine.model import Sample
from memoryguard.engine.policy import DropCachesPolicy, EvictPolicy, Policy, ReclaimPolicy, RestartPolicy

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_PERCENT = re.compile(r"^(\d{1,3})%$")


class SpecError(ValueError):
    """A MemoryGuard spec the operator cannot act on; ``field`` names the spec path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"spec.{field}: {message}")
        self.field = f"spec.{field}"
        self.message = message


def _duration_seconds(value: Any, field: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value)) if isinstance(value, str) and value else None
    if not match:
        raise SpecError(field, f"expected a duration such as 30s, 10m or 1h30m, got {value!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def _fraction(value: Any, field: str) -> float:
    match = _PERCENT.match(str(value)) if isinstance(value, str) else None
    if not match or not 1 <= int(match.group(1)) <= 100:
        raise SpecError(field, f"expected a percentage from 1% to 100%, got {value!r}")
    return int(match.group(1)) / 100.0


def _bytes(value: Any, field: str) -> int:
    try:
        quantity = parse_quantity(value)
    except (ValueError, TypeError):
        raise SpecError(field, f"expected a quantity such as 16Mi, got {value!r}") from None
    if quantity < 0:
        raise SpecError(field, f"must not be negative, got {value!r}")
    return int(quantity)


def _section(spec: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    node: Any = spec
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            return {}
        if not isinstance(node, Mapping):
            raise SpecError(".".join(path), f"expected an object, got {type(node).__name__}")
    return node


def _bool(section: Mapping[str, Any], key: str, default: bool, field: str) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(field, f"expected true or false, got {value!r}")
    return value


def _int(section: Mapping[str, Any], key: str, default: int, field: str) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field, f"expected an integer, got {value!r}")
    return value


def policy_from_spec(spec: Mapping[str, Any]) -> Policy:
    """The engine's Policy for a MemoryGuard spec (defaults as in the CRD)."""
    forecast = _section(spec, "forecast")
    thresholds = _section(spec, "thresholds")
    reclaim = _section(spec, "actions", "reclaim")
    drop = _section(spec, "actions", "dropCaches")
    restart = _section(spec, "actions", "restart")
    evict = _section(spec, "actions", "evict")
    dry_run = spec.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise SpecError("dryRun", f"expected true or false, got {dry_run!r}")
    try:
        return Policy(
            window_seconds=_duration_seconds(forecast.get("window", "10m"), "forecast.window"),
            horizon_seconds=_duration_seconds(forecast.get("horizon", "15m"), "forecast.horizon"),
            min_samples=_int(forecast, "minSamples", 30, "forecast.minSamples"),
            warn_fraction=_fraction(thresholds.get("warn", "80%"), "thresholds.warn"),
            act_fraction=_fraction(thresholds.get("act", "90%"), "thresholds.act"),
            reclaim=ReclaimPolicy(
                enabled=_bool(reclaim, "enabled", True, "actions.reclaim.enabled"),
                cooldown_seconds=_duration_seconds(reclaim.get("cooldown", "2m"), "actions.reclaim.cooldown"),
                min_reclaimable_bytes=_bytes(
                    reclaim.get("minReclaimable", "16Mi"), "actions.reclaim.minReclaimable"
                ),
            ),
            drop_caches=DropCachesPolicy(
                enabled=_bool(drop, "enabled", False, "actions.dropCaches.enabled"),
                level=_int(drop, "level", 1, "actions.dropCaches.level"),
                cooldown_seconds=_duration_seconds(
                    drop.get("cooldown", "30m"), "actions.dropCaches.cooldown"
                ),
            ),
            restart=RestartPolicy(
                enabled=_bool(restart, "enabled", True, "actions.restart.enabled"),
                cooldown_seconds=_duration_seconds(
                    restart.get("cooldown", "30m"), "actions.restart.cooldown"
                ),
                max_per_hour=_int(restart, "maxPerHour", 2, "actions.restart.maxPerHour"),
                rollout_seconds=float(_int(restart, "rolloutSeconds", 120, "actions.restart.rolloutSeconds")),
            ),
            evict=EvictPolicy(enabled=_bool(evict, "enabled", True, "actions.evict.enabled")),
            dry_run=dry_run,
        )
    except SpecError:
        raise
    except ValueError as exc:  # the engine's own checks name the field as "<field>: <problem>"
        field, _, message = str(exc).partition(": ")
        raise SpecError(field, message or str(exc)) from None


@dataclass(frozen=True, slots=True)
class Judgement:
    assessment: Assessment
    decision: Decision


def judge(
    samples: Sequence[Sample],
    policy: Policy,
    container: ContainerInfo,
    target: Target,
    limiter: LimiterState,
    *,
    agent_now_seconds: float,
    now_seconds: float,
    restarts_in_flight: int = 0,
) -> Judgement:
    """Assess one container's history and plan one action for it.

    Sample times are the agent's clock (``agent_now_seconds``); budgets and cooldowns are the
    operator's clock (``now_seconds``), which is also what the persisted limiter state uses.
    """
    max_bytes = next(
        (s.max_bytes for s in reversed(samples) if s.max_bytes is not None), container.limit_bytes
    )
    heap = container.heap_limit_bytes
    if heap is None and container.heap_fraction_of_max is not None and max_bytes is not None:
        heap = int(max_bytes * container.heap_fraction_of_max)
    assessment = assess(
        samples,
        policy,
        now_seconds=agent_now_seconds,
        runtime_heap_limit_bytes=heap,
        runtime_limit_source=container.heap_limit_source or None,
    )
    decision = plan(
        assessment,
        policy,
        target=target,
        limiter=limiter,
        now_seconds=now_seconds,
        restarts_in_flight=restarts_in_flight,
    )
    return Judgement(assessment, decision)


def recorded(
    limiter: LimiterState, policy: Policy, action: Action, target: Target, now_seconds: float
) -> LimiterState:
    """The limiter state once ``action`` on ``target`` is taken (it goes into status with the intent)."""
    return record(
        limiter,
        RateLimits.from_policy(policy),
        action=action.value,
        target_key=target.limiter_key(action),
        now_seconds=now_seconds,
    )
