"""Properties of assess + plan over arbitrary sample histories (hypothesis)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from memoryguard.engine import Action, LimiterState, Policy, Sample, Target, Verdict, assess, plan

MIB = 1024 * 1024
OPTIONAL_BYTES = st.one_of(st.none(), st.integers(0, 2**34))


@st.composite
def histories(draw):
    count = draw(st.integers(0, 50))
    gaps = draw(st.lists(st.floats(0, 30, allow_nan=False), min_size=count, max_size=count))
    t = draw(st.floats(0, 2e9, allow_nan=False))
    samples = []
    for gap in gaps:
        t += gap
        samples.append(
            Sample(
                t_seconds=t,
                anon_bytes=draw(st.integers(0, 2**34)),
                file_bytes=draw(st.integers(0, 2**34)),
                max_bytes=draw(OPTIONAL_BYTES),
                inactive_file_bytes=draw(OPTIONAL_BYTES),
                shmem_bytes=draw(OPTIONAL_BYTES),
                kernel_bytes=draw(OPTIONAL_BYTES),
                current_bytes=draw(OPTIONAL_BYTES),
                high_bytes=draw(OPTIONAL_BYTES),
                swap_current_bytes=draw(OPTIONAL_BYTES),
                swap_max_bytes=draw(OPTIONAL_BYTES),
                high_events=draw(st.integers(0, 10**6)),
                swap_fail_events=draw(st.integers(0, 10**6)),
                psi_some_avg10=draw(st.one_of(st.none(), st.floats(0, 100, allow_nan=False))),
            )
        )
    return samples


@settings(max_examples=150, deadline=None)
@given(
    samples=histories(),
    heap=st.one_of(st.none(), st.integers(1, 2**33)),
    kind=st.sampled_from(["workload", "pod"]),
)
def test_any_history_gets_a_verdict_and_a_decision_that_follows_the_ladder(samples, heap, kind):
    policy = Policy(min_samples=5)
    now = samples[-1].t_seconds if samples else 0.0
    assessment = assess(samples, policy, now_seconds=now, runtime_heap_limit_bytes=heap)
    assert isinstance(assessment.verdict, Verdict)
    json.dumps(assessment.numbers)  # status must be able to carry it
    fc = assessment.forecast
    if fc is not None:
        assert fc.eta_seconds is None or fc.eta_seconds >= 0
        assert 0.0 <= fc.confidence <= 1.0
    target = Target(kind=kind, name="x/y", pod="ns/p", container="c")
    decision = plan(assessment, policy, target=target, limiter=LimiterState(), now_seconds=now)
    if decision.action.disruptive:
        # Only sustained growth forecast to reach a line within the rollout lead restarts.
        assert fc is not None and fc.sustained and fc.eta_seconds is not None
        assert fc.eta_seconds <= policy.restart.lead_seconds
        assert decision.action is (Action.EVICT if kind == "pod" else Action.RESTART)
    if decision.action is Action.RECLAIM:
        assert decision.reclaim_bytes is not None
        assert policy.reclaim.min_reclaimable_bytes <= decision.reclaim_bytes <= assessment.reclaimable_bytes
