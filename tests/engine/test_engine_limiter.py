"""Rate limiter: cooldowns per target and action, a restart budget per guard, a cluster cap."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memoryguard.engine import Action, LimiterState, RateLimits, check, record

LIMITS = RateLimits(
    cooldown_seconds={"restart": 1800.0, "evict": 1800.0, "reclaim": 120.0, "drop_caches": 1800.0},
    max_restarts=2,
    max_concurrent_restarts=3,
)
T0 = 1_763_800_000.0


def _state(*events: tuple[str, str, float]) -> LimiterState:
    state = LimiterState()
    for action, target, t in events:
        state = record(state, LIMITS, action=action, target_key=target, now_seconds=T0 + t)
    return state


CHECK_CASES = [
    # id, history, action, target, now (s after T0), in flight, allowed, blocked_by prefix
    ("nothing happened yet", (), "restart", "deployment/web", 0, 0, True, None),
    (
        "restart cooldown holds",
        (("restart", "deployment/web", 0),),
        "restart",
        "deployment/web",
        720,
        0,
        False,
        "cooldown: restart of deployment/web 12m ago, next allowed in 18m",
    ),
    (
        "restart cooldown over",
        (("restart", "deployment/web", 0),),
        "restart",
        "deployment/web",
        1800,
        0,
        True,
        None,
    ),
    (
        "cooldown is per target",
        (("restart", "deployment/web", 0),),
        "restart",
        "deployment/api",
        60,
        0,
        True,
        None,
    ),
    (
        "cooldown is per action",
        (("reclaim", "deployment/web", 0),),
        "restart",
        "deployment/web",
        60,
        0,
        True,
        None,
    ),
    (
        "reclaim cooldown",
        (("reclaim", "ns/pod/app", 0),),
        "reclaim",
        "ns/pod/app",
        30,
        0,
        False,
        "cooldown: reclaim of ns/pod/app 30s ago",
    ),
    (
        "budget: two restarts this hour",
        (("restart", "a", 0), ("restart", "b", 100)),
        "restart",
        "c",
        1000,
        0,
        False,
        "budget: 2 restarts in the last 60m (max 2), next allowed in 43m",
    ),
    (
        "budget counts evictions too",
        (("evict", "pod/x", 0), ("restart", "b", 100)),
        "restart",
        "c",
        1000,
        0,
        False,
        "budget:",
    ),
    (
        "budget window slides",
        (("restart", "a", 0), ("restart", "b", 100)),
        "restart",
        "c",
        3600,
        0,
        True,
        None,
    ),
    (
        "budget does not limit reclaim",
        (("restart", "a", 0), ("restart", "b", 100)),
        "reclaim",
        "c",
        1000,
        0,
        True,
        None,
    ),
    (
        "cluster cap on restarts in flight",
        (),
        "restart",
        "deployment/web",
        0,
        3,
        False,
        "cluster: 3 restarts already rolling out (max 3 at a time)",
    ),
    ("cluster cap does not limit reclaim", (), "reclaim", "ns/pod/app", 0, 3, True, None),
    (
        "clock went backwards: still blocked",
        (("restart", "deployment/web", 1000),),
        "restart",
        "deployment/web",
        900,
        0,
        False,
        "cooldown:",
    ),
]


@pytest.mark.parametrize(
    ("history", "action", "target", "now", "in_flight", "allowed", "blocked_by"),
    [c[1:] for c in CHECK_CASES],
    ids=[c[0] for c in CHECK_CASES],
)
def test_check(history, action, target, now, in_flight, allowed, blocked_by):
    result = check(
        _state(*history),
        LIMITS,
        action=action,
        target_key=target,
        now_seconds=T0 + now,
        restarts_in_flight=in_flight,
    )
    assert result.allowed is allowed
    if blocked_by is None:
        assert result.blocked_by is None
    else:
        assert result.blocked_by is not None and result.blocked_by.startswith(blocked_by), result.blocked_by


def test_zero_budget_blocks_every_restart():
    limits = RateLimits(cooldown_seconds={}, max_restarts=0)
    result = check(LimiterState(), limits, action="restart", target_key="x", now_seconds=T0)
    assert not result.allowed and "0 per hour" in (result.blocked_by or "")


def test_record_forgets_what_can_no_longer_block():
    state = _state(("reclaim", "p/a", 0), ("restart", "deployment/web", 0))
    later = record(state, LIMITS, action="reclaim", target_key="p/b", now_seconds=T0 + 4000)
    assert later.last("reclaim", "p/a") is None
    assert later.last("restart", "deployment/web") is None
    assert later.restart_times_seconds == ()
    assert later.last("reclaim", "p/b") == T0 + 4000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"last": {"restart x": "soon"}}, "rateLimit.last['restart x']: expected a number"),
        ({"restarts": [1.0, None]}, "rateLimit.restarts[1]: expected a number"),
        ({"restarts": "yesterday"}, "rateLimit.restarts: expected a list"),
        ({"last": [1, 2]}, "rateLimit.last: expected an object"),
        ("garbage", "rateLimit: expected an object"),
    ],
    ids=[
        "bad cooldown time",
        "bad restart time",
        "restarts not a list",
        "last not an object",
        "not an object",
    ],
)
def test_from_dict_names_the_broken_field(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LimiterState.from_dict(data)


def test_empty_status_is_an_empty_state():
    assert LimiterState.from_dict(None) == LimiterState()
    assert LimiterState.from_dict({}) == LimiterState()


ACTIONS = st.sampled_from([a.value for a in Action if a is not Action.NONE])
TARGETS = st.sampled_from(["deployment/a", "deployment/b", "statefulset/c", "pod/d"])
REQUESTS = st.lists(
    st.tuples(st.floats(min_value=0, max_value=900, allow_nan=False), ACTIONS, TARGETS, st.integers(0, 5)),
    max_size=120,
)
LIMIT_SETS = st.builds(
    RateLimits,
    cooldown_seconds=st.fixed_dictionaries(
        {
            a.value: st.floats(min_value=0, max_value=3600, allow_nan=False)
            for a in Action
            if a is not Action.NONE
        }
    ),
    max_restarts=st.integers(0, 4),
    max_concurrent_restarts=st.one_of(st.none(), st.integers(0, 4)),
)


@settings(max_examples=300, deadline=None)
@given(limits=LIMIT_SETS, requests=REQUESTS)
def test_no_sequence_of_requests_exceeds_a_budget(limits, requests):
    state = LimiterState()
    now = T0
    done: list[tuple[float, str, str]] = []
    for gap, action, target, in_flight in requests:
        now += gap
        result = check(
            state, limits, action=action, target_key=target, now_seconds=now, restarts_in_flight=in_flight
        )
        if not result.allowed:
            assert result.blocked_by
            continue
        if Action(action).disruptive and limits.max_concurrent_restarts is not None:
            assert in_flight < limits.max_concurrent_restarts
        state = record(state, limits, action=action, target_key=target, now_seconds=now)
        # The state survives a trip through the CR status at every step.
        state = LimiterState.from_dict(json.loads(json.dumps(state.to_dict())))
        done.append((now, action, target))

    disruptive = [t for t, a, _ in done if Action(a).disruptive]
    for i, start in enumerate(disruptive):
        in_window = [t for t in disruptive[i:] if t - start < limits.restart_window_seconds]
        assert len(in_window) <= limits.max_restarts
    last_seen: dict[tuple[str, str], float] = {}
    for t, action, target in done:
        key = (action, target)
        if key in last_seen:
            assert t - last_seen[key] >= limits.cooldown_seconds[action]
        last_seen[key] = t


@settings(max_examples=200, deadline=None)
@given(requests=REQUESTS)
def test_state_round_trips_through_json(requests):
    state = LimiterState()
    now = T0
    for gap, action, target, _ in requests:
        now += gap
        state = record(state, LIMITS, action=action, target_key=target, now_seconds=now)
        assert LimiterState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
