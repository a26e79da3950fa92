"""A MemoryGuard spec becomes a Policy; a bad one is refused with the field named."""

from __future__ import annotations

import re

import pytest

from memoryguard.engine import Policy
from memoryguard.guardspec import GuardSpecError, policy_from_spec

MIB = 1024 * 1024


def test_the_documented_example_spec_becomes_a_policy():
    spec = {
        "apiVersion": "memoryguard.io/v1alpha1",
        "kind": "MemoryGuard",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "containers": ["app"],
            "forecast": {"window": "10m", "horizon": "15m", "minSamples": 30},
            "thresholds": {"warn": "80%", "act": "90%"},
            "actions": {
                "reclaim": {"enabled": True, "cooldown": "2m", "minReclaimable": "16Mi"},
                "dropCaches": {"enabled": False, "level": 1, "cooldown": "30m"},
                "restart": {"enabled": True, "cooldown": "30m", "maxPerHour": 2, "rolloutSeconds": 120},
                "evict": {"enabled": True},
            },
            "dryRun": False,
        },
    }
    policy = policy_from_spec(spec)
    assert policy.window_seconds == 600 and policy.horizon_seconds == 900 and policy.min_samples == 30
    assert (policy.warn_fraction, policy.act_fraction) == (0.8, 0.9)
    assert policy.reclaim.min_reclaimable_bytes == 16 * MIB and policy.reclaim.cooldown_seconds == 120
    assert policy.restart.max_per_hour == 2 and policy.restart.rollout_seconds == 120
    assert policy.restart.cooldown_seconds == 1800


def test_an_empty_spec_is_the_default_policy():
    assert policy_from_spec({}) == Policy.default()


def test_durations_combine_units():
    assert policy_from_spec({"forecast": {"window": "1h30m15s"}}).window_seconds == 5415


ERRORS = [
    (
        {"actions": {"restart": {"cooldown": "thirty"}}},
        'spec.actions.restart.cooldown: expected a duration like 30m, got "thirty"',
    ),
    ({"forecast": {"window": "10"}}, "spec.forecast.window: expected a duration"),
    ({"forecast": {"window": "0s"}}, "spec.forecast.window: must be positive"),
    ({"forecast": {"minSamples": 2}}, "spec.forecast.minSamples: expected a whole number ≥ 3"),
    ({"thresholds": {"warn": "80"}}, "spec.thresholds.warn: expected a percentage"),
    ({"thresholds": {"act": "150%"}}, "spec.thresholds.act: expected a percentage from 1% to 100%"),
    ({"thresholds": {"warn": "95%", "act": "90%"}}, "spec.thresholds.warn: must not exceed thresholds.act"),
    (
        {"actions": {"reclaim": {"minReclaimable": "lots"}}},
        "spec.actions.reclaim.minReclaimable: expected a quantity",
    ),
    (
        {"actions": {"reclaim": {"minReclaimable": "-1Mi"}}},
        "spec.actions.reclaim.minReclaimable: must not be negative",
    ),
    ({"actions": {"dropCaches": {"level": 4}}}, "spec.actions.dropCaches.level: expected 1, 2 or 3"),
    ({"actions": {"restart": {"enabled": "yes"}}}, "spec.actions.restart.enabled: expected true or false"),
    (
        {"actions": {"restart": {"maxPerHour": -1}}},
        "spec.actions.restart.maxPerHour: expected a whole number",
    ),
    ({"actions": {"restart": {"cooldwon": "1m"}}}, "spec.actions.restart.cooldwon: unknown field"),
    ({"actions": {"restart": "always"}}, "spec.actions.restart: expected an object"),
    ({"dryRun": "true"}, "spec.dryRun: expected true or false"),
]


@pytest.mark.parametrize(
    ("spec", "message"), ERRORS, ids=[m.split(":")[0] + " " + m.split(":")[1][:30] for _, m in ERRORS]
)
def test_errors_name_the_field(spec, message):
    with pytest.raises(GuardSpecError) as raised:
        policy_from_spec(spec)
    assert str(raised.value).startswith(message), str(raised.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"min_samples": 1}, "forecast.minSamples"),
        ({"warn_fraction": 0.95, "act_fraction": 0.9}, "thresholds.warn"),
        ({"window_seconds": 0}, "forecast.window"),
    ],
    ids=["min samples", "warn above act", "empty window"],
)
def test_policy_validates_itself(changes, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        Policy(**changes)
