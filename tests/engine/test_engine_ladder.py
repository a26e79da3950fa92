"""The action ladder: observe → reclaim → drop_caches → restart (→ evict), within rate limits."""

from __future__ import annotations

import dataclasses

import pytest
from tests.engine.series import MIB, flat, linear, series

from memoryguard.engine import (
    Action,
    LimiterState,
    Policy,
    RateLimits,
    Target,
    assess,
    plan,
    record,
)

WORKLOAD = Target(kind="workload", name="deployment/web", pod="shop/web-7c9f", container="app")
BARE_POD = Target(kind="pod", name="pod/batch-1", pod="shop/batch-1", container="main")
DEFAULT = Policy.default()

LEAK_NEAR = series(linear(40, 2.5), seconds=60, max_mib=256)  # ~25 s from memory.max
LEAK_FAR = series(linear(40, 0.02), seconds=300, max_mib=4096)
CACHE_FULL = series(flat(20), seconds=120, file_mib=230, max_mib=256)
LEAK_NEAR_CACHE_FULL = series(linear(40, 2.5), seconds=60, max_mib=256, file_mib=50)
NOW = LEAK_NEAR[-1].t_seconds


def _leak_into_swap(*, swap_max_mib: float, fails: bool = False):
    """2 MiB/s into memory.high 250 MiB: resident stops there, the rest is swapped out."""
    return series(
        lambda i: min(190 + 2.0 * i, 250) * MIB,
        seconds=60,
        max_mib=512,
        file_mib=2,
        high_bytes=250 * MIB,
        swap_max_bytes=swap_max_mib * MIB,
        swap_current_bytes=lambda i: int(max(0.0, 190 + 2.0 * i - 250) * MIB),
        swap_fail_events=(lambda i: 5 * i) if fails else 0,
    )


def _policy(**changes):
    policy = DEFAULT
    for path, value in changes.items():
        section, _, name = path.partition("__")
        if name:
            policy = dataclasses.replace(
                policy, **{section: dataclasses.replace(getattr(policy, section), **{name: value})}
            )
        else:
            policy = dataclasses.replace(policy, **{section: value})
    return policy


def _restarted(
    minutes_ago: float, target: Target = WORKLOAD, action: Action = Action.RESTART
) -> LimiterState:
    return record(
        LimiterState(),
        RateLimits.from_policy(DEFAULT),
        action=action.value,
        target_key=target.limiter_key(action),
        now_seconds=NOW - minutes_ago * 60,
    )


LADDER_CASES = [
    # id, samples, policy, target, limiter, kwargs, action, wanted, reason / blocked_by phrases
    (
        "too few samples: observe",
        LEAK_NEAR[:5],
        DEFAULT,
        WORKLOAD,
        LimiterState(),
        {},
        Action.NONE,
        Action.NONE,
        [],
    ),
    (
        "leak far from the limit: observe",
        LEAK_FAR,
        DEFAULT,
        WORKLOAD,
        LimiterState(),
        {},
        Action.NONE,
        Action.NONE,
        ["observe"],
    ),
    (
        "leak within rollout + margin: restart",
        LEAK_NEAR,
        DEFAULT,
        WORKLOAD,
        LimiterState(),
        {},
        Action.RESTART,
        Action.RESTART,
        ["restart deployment/web", "MiB/min", "reaches memory.max 256 MiB in", "rollout"],
    ),
    (
        "leak swapped out at memory.high, swap fills within rollout + margin: restart",
        _leak_into_swap(swap_max_mib=80),
        DEFAULT,
        WORKLOAD,
        LimiterState(),
        {},
        Action.RESTART,
        Action.RESTART,
        [
            "reaches memory.high 250 MiB + swap 80.0 MiB in",
            "and swap (58.0 MiB of 80.0 MiB) will be full by then",
        ],
    ),
    (
        "leak at memory.high with swap-outs failing: restart, swap is full",
        _leak_into_swap(swap_max_mib=128, fails=True),
        DEFAULT,
        WORKLOAD,
        LimiterState(),
        {},
        Action.RESTART,
        Action.RESTART,
        [
            "memory.high 250 MiB + swap 58.0 MiB (full)",
            "swap (58.0 MiB of 128 MiB) is full: swap-outs are failing",
        ],
    ),
    (
        "leak but restart would be premature for a 10 s rollout",
        LEAK_NEAR,
        _policy(restart__rollout_seconds=10.0),
        WORKLOAD,
        LimiterState(),
        {},
        Action.NONE,
        Action.NONE,
        ["observe"],
    ),
    (
        "bare pod: evict",
        LEAK_NEAR,
        DEFAULT,
        BARE_POD,
        LimiterState(),
        {},
        Action.EVICT,
        Action.EVICT,
        ["evict pod/batch-1"],
    ),
    (
        "bare pod, eviction disabled",
        LEAK_NEAR,
        _policy(evict__enabled=False),
        BARE_POD,
        LimiterState(),
        {},
        Action.NONE,
        Action.EVICT,
        ["eviction is disabled"],
    ),
    (
        "restarts disabled",
        LEAK_NEAR,
        _policy(restart__enabled=False),
        WORKLOAD,
        LimiterState(),
        {},
        Action.NONE,
        Action.RESTART,
        ["restarts are disabled"],
    ),
    (
        "restart in cooldown",
        LEAK_NEAR,
        DEFAULT,
        WORKLOAD,
        _restarted(12),
        {},
        Action.NONE,
        Action.RESTART,
        ["cooldown: restart of deployment/web 12m ago, next allowed in 18m"],
    ),
    (
        "cooldown of another workload does not block",
        LEAK_NEAR,
        DEFAULT,
        WORKLOAD,
        _restarted(5, Target(kind="workload", name="deployment/other")),
        {},
        Action.RESTART,
        Action.RESTART,
        [],
    ),
    (
        "cluster-wide cap on restarts in flight",
        LEAK_NEAR,
        DEFAULT,
        WORKLOAD,
        LimiterState(),
        {"restarts_in_flight": 3, "max_concurrent_restarts": 3},
        Action.NONE,
        Action.RESTART,
        ["cluster: 3 restarts already rolling out (max 3 at a time)"],
    ),
    (
        "restart blocked, page cache still worth reclaiming",
        LEAK_NEAR_CACHE_FULL,
        DEFAULT,
        WORKLOAD,
        _restarted(1),
        {},
        Action.RECLAIM,
        Action.RESTART,
        ["reclaim", "wanted to restart deployment/web but cooldown"],
    ),
    (
        "page cache fills the limit: reclaim",
        CACHE_FULL,
        DEFAULT,
        WORKLOAD,
        LimiterState(),
        {},
        Action.RECLAIM,
        Action.RECLAIM,
        ["reclaim 46.2 MiB", "reclaimable file cache"],
    ),
    (
        "page cache, reclaim in cooldown",
        CACHE_FULL,
        DEFAULT,
        WORKLOAD,
        _restarted(1, action=Action.RECLAIM),
        {},
        Action.NONE,
        Action.RECLAIM,
        ["cooldown: reclaim of shop/web-7c9f/app"],
    ),
    (
        "page cache, reclaim in cooldown, drop_caches enabled",
        CACHE_FULL,
        _policy(drop_caches__enabled=True),
        WORKLOAD,
        _restarted(1, action=Action.RECLAIM),
        {},
        Action.DROP_CACHES,
        Action.DROP_CACHES,
        ["drop_caches level 1 (node-wide)", "reclaim held back"],
    ),
    (
        "page cache, no memory.reclaim on this node (cgroup v1)",
        CACHE_FULL,
        DEFAULT,
        dataclasses.replace(WORKLOAD, reclaim_supported=False),
        LimiterState(),
        {},
        Action.NONE,
        Action.RECLAIM,
        ["memory.reclaim is not available"],
    ),
    (
        "page cache, reclaim disabled and drop_caches off",
        CACHE_FULL,
        _policy(reclaim__enabled=False),
        WORKLOAD,
        LimiterState(),
        {},
        Action.NONE,
        Action.NONE,
        ["observe"],
    ),
]


@pytest.mark.parametrize(
    ("samples", "policy", "target", "limiter", "kwargs", "action", "wanted", "phrases"),
    [c[1:] for c in LADDER_CASES],
    ids=[c[0] for c in LADDER_CASES],
)
def test_ladder(samples, policy, target, limiter, kwargs, action, wanted, phrases):
    assessment = assess(samples, policy, now_seconds=NOW)
    decision = plan(assessment, policy, target=target, limiter=limiter, now_seconds=NOW, **kwargs)
    assert decision.action is action, decision
    assert decision.wanted is wanted, decision
    text = f"{decision.reason} | {decision.blocked_by}"
    for phrase in phrases:
        assert phrase in text
    if action is Action.RECLAIM:
        assert (
            decision.reclaim_bytes is not None
            and decision.reclaim_bytes >= policy.reclaim.min_reclaimable_bytes
        )


def test_reclaim_brings_usage_back_to_the_warn_threshold_and_no_further():
    assessment = assess(CACHE_FULL, DEFAULT, now_seconds=NOW)
    decision = plan(assessment, DEFAULT, target=WORKLOAD, limiter=LimiterState(), now_seconds=NOW)
    usage = CACHE_FULL[-1].usage_bytes
    assert decision.reclaim_bytes == usage - int(DEFAULT.warn_fraction * 256 * MIB)


def test_dry_run_decides_the_same_and_says_so():
    policy = _policy(dry_run=True)
    decision = plan(
        assess(LEAK_NEAR, policy, now_seconds=NOW),
        policy,
        target=WORKLOAD,
        limiter=LimiterState(),
        now_seconds=NOW,
    )
    assert decision.action is Action.RESTART
    assert decision.dry_run is True


def test_restart_budget_per_hour_blocks_the_third_restart():
    limits = RateLimits.from_policy(DEFAULT)
    state = LimiterState()
    for i, name in enumerate(("deployment/a", "deployment/b")):
        state = record(state, limits, action="restart", target_key=name, now_seconds=NOW - 600 + i)
    decision = plan(
        assess(LEAK_NEAR, DEFAULT, now_seconds=NOW), DEFAULT, target=WORKLOAD, limiter=state, now_seconds=NOW
    )
    assert decision.action is Action.NONE
    assert decision.blocked_by is not None and decision.blocked_by.startswith(
        "budget: 2 restarts in the last"
    )


def test_decision_to_dict_is_json_safe():
    import json

    decision = plan(
        assess(CACHE_FULL, DEFAULT, now_seconds=NOW),
        DEFAULT,
        target=WORKLOAD,
        limiter=LimiterState(),
        now_seconds=NOW,
    )
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["action"] == "reclaim" and data["reclaim_bytes"] == decision.reclaim_bytes


def test_target_kind_is_validated():
    with pytest.raises(ValueError, match=r"target\.kind"):
        Target(kind="deployment", name="deployment/web")
