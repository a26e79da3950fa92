"""Rate limits on actions: a cooldown per target and action, a restart budget per guard, and a
cluster-wide cap on restarts in flight.

The state is a plain value the operator keeps in the MemoryGuard's status, so budgets survive
operator restarts. Functions take ``now_seconds`` and return new values; nothing here reads a
clock. A clock that goes backwards (another operator replica, skew) only ever blocks more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memoryguard.engine.decision import Action
from memoryguard.engine.policy import Policy

RESTART_WINDOW_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    cooldown_seconds: Mapping[str, float]  # action value -> cooldown per target
    max_restarts: int  # restarts + evictions per restart window, per guard
    restart_window_seconds: float = RESTART_WINDOW_SECONDS
    max_concurrent_restarts: int | None = None  # cluster-wide; None: no cap

    @classmethod
    def from_policy(cls, policy: Policy, *, max_concurrent_restarts: int | None = None) -> RateLimits:
        return cls(
            cooldown_seconds={
                Action.RECLAIM.value: policy.reclaim.cooldown_seconds,
                Action.DROP_CACHES.value: policy.drop_caches.cooldown_seconds,
                Action.RESTART.value: policy.restart.cooldown_seconds,
                Action.EVICT.value: policy.restart.cooldown_seconds,
            },
            max_restarts=policy.restart.max_per_hour,
            max_concurrent_restarts=max_concurrent_restarts,
        )


@dataclass(frozen=True, slots=True)
class LimiterState:
    """When each (action, target) last happened, and when this guard's recent restarts happened."""

    last_seconds: Mapping[str, float] = field(default_factory=dict)  # "restart deployment/web" -> t
    restart_times_seconds: tuple[float, ...] = ()

    def last(self, action: str, target_key: str) -> float | None:
        return self.last_seconds.get(_key(action, target_key))

    def to_dict(self) -> dict[str, Any]:
        return {
            "last": dict(sorted(self.last_seconds.items())),
            "restarts": list(self.restart_times_seconds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LimiterState:
        """Rebuild from ``to_dict()`` output (e.g. read back from status); errors name the field."""
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"rateLimit: expected an object, got {type(data).__name__}")
        last_raw = data.get("last", {}) or {}
        if not isinstance(last_raw, Mapping):
            raise ValueError("rateLimit.last: expected an object of action/target -> seconds")
        last: dict[str, float] = {}
        for key, value in last_raw.items():
            last[str(key)] = _number(value, f"rateLimit.last[{key!r}]")
        restarts_raw = data.get("restarts", []) or []
        if not isinstance(restarts_raw, list | tuple):
            raise ValueError("rateLimit.restarts: expected a list of seconds")
        restarts = tuple(sorted(_number(v, f"rateLimit.restarts[{i}]") for i, v in enumerate(restarts_raw)))
        return cls(last_seconds=last, restart_times_seconds=restarts)


@dataclass(frozen=True, slots=True)
class LimitCheck:
    allowed: bool
    blocked_by: str | None = None


def _key(action: str, target_key: str) -> str:
    return f"{action} {target_key}"


def _number(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field_name}: expected a number of seconds, got {value!r}")
    return float(value)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def check(
    state: LimiterState,
    limits: RateLimits,
    *,
    action: str,
    target_key: str,
    now_seconds: float,
    restarts_in_flight: int = 0,
) -> LimitCheck:
    """May ``action`` on ``target_key`` happen at ``now_seconds``? If not, say which limit holds it."""
    action = Action(action)
    cooldown = limits.cooldown_seconds.get(action.value, 0.0)
    last = state.last(action.value, target_key)
    if last is not None and now_seconds - last < cooldown:
        return LimitCheck(
            False,
            f"cooldown: {action.value} of {target_key} {_ago(now_seconds - last)} ago, "
            f"next allowed in {_ago(last + cooldown - now_seconds)}",
        )
    if action.disruptive:
        window = limits.restart_window_seconds
        recent = [t for t in state.restart_times_seconds if now_seconds - t < window]
        if len(recent) >= limits.max_restarts:
            if limits.max_restarts == 0:
                return LimitCheck(False, "budget: restarts are limited to 0 per hour")
            oldest = min(recent)
            return LimitCheck(
                False,
                f"budget: {len(recent)} restarts in the last {_ago(window)} "
                f"(max {limits.max_restarts}), next allowed in {_ago(oldest + window - now_seconds)}",
            )
        cap = limits.max_concurrent_restarts
        if cap is not None and restarts_in_flight >= cap:
            return LimitCheck(
                False, f"cluster: {restarts_in_flight} restarts already rolling out (max {cap} at a time)"
            )
    return LimitCheck(True)


def record(
    state: LimiterState,
    limits: RateLimits,
    *,
    action: str,
    target_key: str,
    now_seconds: float,
) -> LimiterState:
    """The state after ``action`` on ``target_key`` happened at ``now_seconds``.

    Entries that can no longer block anything are dropped, so the state stays small in status.
    """
    action = Action(action)
    last = {
        key: t
        for key, t in state.last_seconds.items()
        if now_seconds - t < limits.cooldown_seconds.get(key.split(" ", 1)[0], 0.0)
    }
    last[_key(action.value, target_key)] = now_seconds
    window = limits.restart_window_seconds
    restarts = [t for t in state.restart_times_seconds if now_seconds - t < window]
    if action.disruptive:
        restarts.append(now_seconds)
    return LimiterState(last_seconds=last, restart_times_seconds=tuple(sorted(restarts)))
