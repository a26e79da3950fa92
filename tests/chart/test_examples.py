"""Every example in examples/ is accepted by the CRD (schema after defaulting, then CEL rules).

The CRD's own openAPIV3Schema, made strict as the API server is (tests/chart/kube.py), and its
x-kubernetes-validations rules evaluated with cel-python. The negative cases show the same
validation refuses what the API server would.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from tests.chart.kube import ROOT, chart_crds, crd_errors, load_all, validation_errors

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _guards() -> list[dict[str, Any]]:
    return [d for path in EXAMPLES for d in load_all(path.read_text()) if d["kind"] == "MemoryGuard"]


def test_there_are_examples_for_leak_page_cache_dry_run_and_drop_caches() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"nodejs-leak", "page-cache", "dry-run", "drop-caches"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_valid(path: Path) -> None:
    objects = load_all(path.read_text())
    assert objects
    assert validation_errors(objects) == []


MUTATIONS = {
    "unknown field": (lambda g: g["spec"].update(dryrun=True), "dryrun"),
    "bad percentage": (lambda g: g["spec"].setdefault("thresholds", {}).update(act="95"), "act"),
    "warn above act": (lambda g: g["spec"].update(thresholds={"warn": "95%", "act": "90%"}), "warn"),
    "empty selector": (lambda g: g["spec"].update(selector={}), "selector must not be empty"),
    "horizon shorter than rollout": (
        lambda g: g["spec"].update(forecast={"horizon": "1m"}, actions={"restart": {"rolloutSeconds": 300}}),
        "horizon",
    ),
    "drop caches level 4": (lambda g: g["spec"].update(actions={"dropCaches": {"level": 4}}), "level"),
}


@pytest.mark.parametrize("mutate,expected", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_invalid_guard_is_refused(mutate: Any, expected: str) -> None:
    guard = copy.deepcopy(_guards()[0])
    mutate(guard)
    errors = crd_errors(guard, chart_crds())
    assert errors and any(expected in e for e in errors), errors
