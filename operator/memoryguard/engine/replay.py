"""Feed recorded samples to the engine one by one, as the operator would have seen them live.

Used by ``memoryguard replay`` and ``memoryguard bench``; pure, so the same code path the
operator runs can be scored on traces. Executed actions are recorded in the rate limiter as the
operator records them, so cooldowns and budgets shape the replay as they would the live run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from memoryguard.engine.assessment import Assessment, assess
from memoryguard.engine.baselines import baseline_decision
from memoryguard.engine.decision import Action, Decision, Target
from memoryguard.engine.ladder import plan
from memoryguard.engine.limiter import LimiterState, RateLimits, record
from memoryguard.engine.model import Sample
from memoryguard.engine.policy import Policy

REPLAY_TARGET = Target(kind="workload", name="deployment/replayed", pod="replayed", container="app")


@dataclass(frozen=True, slots=True)
class Tick:
    sample: Sample
    decision: Decision
    assessment: Assessment | None = None  # None for the baselines, which do not assess


class _Prefix(Sequence[Sample]):
    """The first ``end`` samples, without copying: what the operator would have had by then."""

    __slots__ = ("_end", "_items")

    def __init__(self, items: Sequence[Sample], end: int) -> None:
        self._items = items
        self._end = end

    def __len__(self) -> int:
        return self._end

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Sample]: ...
    def __getitem__(self, index: int | slice) -> Sample | Sequence[Sample]:
        if isinstance(index, slice):
            return [self._items[i] for i in range(*index.indices(self._end))]
        if index < 0:
            index += self._end
        if not 0 <= index < self._end:
            raise IndexError(index)
        return self._items[index]


def replay(
    samples: Sequence[Sample],
    policy: Policy,
    *,
    target: Target = REPLAY_TARGET,
    runtime_heap_limit_bytes: int | None = None,
    runtime_limit_source: str | None = None,
    limiter: LimiterState | None = None,
) -> Iterator[Tick]:
    state = limiter if limiter is not None else LimiterState()
    limits = RateLimits.from_policy(policy)
    for i, sample in enumerate(samples):
        now = sample.t_seconds
        assessment = assess(
            _Prefix(samples, i + 1),
            policy,
            now_seconds=now,
            runtime_heap_limit_bytes=runtime_heap_limit_bytes,
            runtime_limit_source=runtime_limit_source,
        )
        decision = plan(assessment, policy, target=target, limiter=state, now_seconds=now)
        if decision.action is not Action.NONE:
            state = record(
                state,
                limits,
                action=decision.action.value,
                target_key=target.limiter_key(decision.action),
                now_seconds=now,
            )
        yield Tick(sample, decision, assessment)


def replay_baseline(samples: Sequence[Sample], name: str, policy: Policy) -> Iterator[Tick]:
    for i, sample in enumerate(samples):
        yield Tick(sample, baseline_decision(name, _Prefix(samples, i + 1), policy))
