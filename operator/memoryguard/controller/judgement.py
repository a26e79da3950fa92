"""The operator's side of the engine: a MemoryGuard spec becomes a Policy, a container's
history becomes an Assessment and a Decision.

The engine is pure and knows nothing of Kubernetes; ``memoryguard.guardspec`` turns the spec's
notation (durations, ``90%``, quantities) into its numbers, with errors that name the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memoryguard import guardspec
from memoryguard.controller.pods import ContainerInfo
from memoryguard.engine.assessment import Assessment, assess
from memoryguard.engine.decision import Action, Decision, Target
from memoryguard.engine.ladder import plan
from memoryguard.engine.limiter import LimiterState, RateLimits, record
from memoryguard.engine.model import Sample
from memoryguard.engine.policy import Policy


class SpecError(ValueError):
    """A MemoryGuard spec the operator cannot act on; ``field`` names the spec path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"spec.{field}: {message}")
        self.field = f"spec.{field}"
        self.message = message


def policy_from_spec(spec: Mapping[str, Any]) -> Policy:
    """The engine's Policy for a MemoryGuard spec (``memoryguard.guardspec`` parses it)."""
    try:
        return guardspec.policy_from_spec(spec)
    except ValueError as exc:  # GuardSpecError: "spec.<field>: <problem>"
        field, _, message = str(exc).partition(": ")
        raise SpecError(field.removeprefix("spec."), message or str(exc)) from None


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
    max_concurrent_restarts: int | None = None,
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
        runtime_soft_limit_bytes=container.soft_limit_bytes,
    )
    decision = plan(
        assessment,
        policy,
        target=target,
        limiter=limiter,
        now_seconds=now_seconds,
        restarts_in_flight=restarts_in_flight,
        max_concurrent_restarts=max_concurrent_restarts,
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
