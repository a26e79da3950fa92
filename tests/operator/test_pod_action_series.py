"""The per-pod action series of the operator's /metrics, from real action requests and outcomes:
the latest time of each action and result per container, the bytes the latest reclaim freed, gone
with the pod, with the guard and on an invalid spec, and promtool-clean."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tests.support.promtool import promtool_check

from memoryguard.controller.cycle import export_action
from memoryguard.controller.executors import BLOCKED, DONE, FAILED, ActionRequest, Actuator, Outcome
from memoryguard.controller.handlers import guard_cycle
from memoryguard.controller.metrics import OperatorMetrics
from memoryguard.controller.owners import Workload
from memoryguard.engine.decision import Action

MiB = 1024 * 1024
LAST = "memoryguard_operator_last_action_timestamp_seconds"
FREED = "memoryguard_operator_last_reclaim_freed_bytes"
GUARD = "shop/web"


def _request(
    action: Action,
    *,
    pod: str = "web-7d9f8b6c5-x1y2z",
    uid: str = "u1",
    container: str = "app",
    guard: str = GUARD,
    dry_run: bool = False,
) -> ActionRequest:
    return ActionRequest(
        id=f"{action.value}-{uid}",
        action=action,
        guard=guard,
        namespace="shop",
        pod=pod,
        pod_uid=uid,
        container=container,
        container_id="c" * 64,
        node="node-a",
        workload=Workload("Deployment", "shop", "web") if action is Action.RESTART else None,
        agent_url="http://127.0.0.1:1",
        reason="anon grows 8 MiB/s",
        reclaim_bytes=32 * MiB if action is Action.RECLAIM else None,
        dry_run=dry_run,
    )


def _samples(metrics: OperatorMetrics, name: str) -> dict[tuple[str, ...], float]:
    """(guard, pod, container, action, result) -> value; action and result "" where absent."""
    return {
        (
            s.labels["guard"],
            s.labels["pod"],
            s.labels["container"],
            s.labels.get("action", ""),
            s.labels.get("result", ""),
        ): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name == name
    }


def test_a_restart_is_labelled_with_the_pod_and_container_whose_memory_called_for_it() -> None:
    metrics = OperatorMetrics()
    export_action(
        metrics, _request(Action.RESTART), Outcome(DONE, "restarted deployment/web"), "done", 1000.5
    )

    (family,) = [f for f in text_string_to_metric_families(metrics.render().decode()) if f.name == LAST]
    assert family.type == "gauge"
    (sample,) = family.samples
    assert sample.labels == {
        "guard": GUARD,
        "namespace": "shop",
        "pod": "web-7d9f8b6c5-x1y2z",
        "container": "app",
        "action": "restart",
        "result": "done",
    }
    assert sample.value == 1000.5
    assert _samples(metrics, FREED) == {}, "only a reclaim says what it freed"


def test_each_kind_and_result_keeps_its_latest_time_and_a_later_one_replaces_it() -> None:
    metrics = OperatorMetrics()
    reclaim = _request(Action.RECLAIM)
    export_action(metrics, reclaim, Outcome(FAILED, "agent said 409"), "failed", 10.0)
    export_action(
        metrics, reclaim, Outcome(DONE, "reclaimed", details={"freed_bytes": 3 * MiB}), "done", 20.0
    )
    export_action(
        metrics, reclaim, Outcome(DONE, "reclaimed", details={"freed_bytes": 5 * MiB}), "done", 30.0
    )
    evict = _request(Action.EVICT)
    export_action(metrics, evict, Outcome(BLOCKED, "a PodDisruptionBudget"), "blocked", 40.0)

    pod = "web-7d9f8b6c5-x1y2z"
    assert _samples(metrics, LAST) == {
        (GUARD, pod, "app", "reclaim", "failed"): 10.0,
        (GUARD, pod, "app", "reclaim", "done"): 30.0,
        (GUARD, pod, "app", "evict", "blocked"): 40.0,
    }
    assert _samples(metrics, FREED) == {(GUARD, pod, "app", "", ""): 5 * MiB}, "the latest reclaim's"
    # A failed reclaim freed nothing it can tell: the last completed one's figure stays.
    export_action(metrics, reclaim, Outcome(FAILED, "agent unreachable"), "failed", 50.0)
    assert _samples(metrics, FREED) == {(GUARD, pod, "app", "", ""): 5 * MiB}


async def test_a_dry_run_is_recorded_as_dry_run_and_says_nothing_freed() -> None:
    metrics = OperatorMetrics()
    # The real actuator in dry-run: it touches neither the API server nor the agent.
    actuator = Actuator(api=None, agents=None, clock=lambda: 0.0)  # type: ignore[arg-type]
    request = _request(Action.RECLAIM, dry_run=True)
    outcome = await actuator.perform(request)
    assert outcome.state == DONE
    export_action(metrics, request, outcome, "dry_run", 7.0)
    assert _samples(metrics, LAST) == {(GUARD, "web-7d9f8b6c5-x1y2z", "app", "reclaim", "dry_run"): 7.0}
    assert _samples(metrics, FREED) == {}


def test_series_go_with_their_pod_and_guard_and_only_held_entries_are_looked_at() -> None:
    metrics = OperatorMetrics()
    ok = Outcome(DONE, "done")
    export_action(metrics, _request(Action.RESTART, pod="web-a", uid="ua"), ok, "done", 1.0)
    export_action(metrics, _request(Action.RECLAIM, pod="web-b", uid="ub"), ok, "done", 2.0)
    export_action(metrics, _request(Action.RECLAIM, pod="db-a", uid="da", guard="shop/db"), ok, "done", 3.0)
    assert {k[1] for k in _samples(metrics, LAST)} == {"web-a", "web-b", "db-a"}

    asked: list[tuple[str, str]] = []

    def live(key: tuple[str, str]) -> bool:
        asked.append(key)
        return key == ("ub", "app")

    # The restarted pod web-a left the guard's selection; web-b is still watched.
    metrics.keep_pod_actions(GUARD, live)
    assert sorted(asked) == [("ua", "app"), ("ub", "app")], "the cleanup visits the entries held, no more"
    assert {k[1] for k in _samples(metrics, LAST)} == {"web-b", "db-a"}

    metrics.forget(GUARD)
    assert {k[1] for k in _samples(metrics, LAST)} == {"db-a"}, "another guard's pods keep theirs"


def test_a_new_pod_with_the_name_of_a_gone_one_starts_without_its_history() -> None:
    metrics = OperatorMetrics()
    export_action(metrics, _request(Action.RESTART, pod="web-0", uid="old"), Outcome(DONE, "x"), "done", 1.0)
    metrics.keep_pod_actions(GUARD, lambda key: key == ("new", "app"))
    assert _samples(metrics, LAST) == {}, "keyed by pod UID: a StatefulSet's replacement web-0 is a new pod"


def test_an_eviction_without_a_known_pod_uid_leaves_no_series() -> None:
    metrics = OperatorMetrics()
    export_action(metrics, _request(Action.EVICT, uid=""), Outcome(DONE, "evicted"), "done", 1.0)
    assert _samples(metrics, LAST) == {}


async def test_an_invalid_spec_drops_the_guards_per_pod_series() -> None:
    metrics = OperatorMetrics()
    export_action(metrics, _request(Action.RESTART), Outcome(DONE, "x"), "done", 1.0)
    export_action(metrics, _request(Action.RESTART, guard="shop/db"), Outcome(DONE, "x"), "done", 1.0)
    memo = SimpleNamespace(runtime=SimpleNamespace(metrics=metrics), informer=None)
    # warn above act: the guard's handler refuses the spec before it looks at any pod.
    spec = {"selector": {"matchLabels": {"app": "web"}}, "thresholds": {"warn": "95%", "act": "90%"}}
    # Kopf hands the handler these as mappings; plain dicts stand for them here.
    handed: dict[str, Any] = {"spec": spec, "status": {}, "meta": {}}
    await guard_cycle(namespace="shop", name="web", uid="g1", memo=memo, **handed)
    assert {k[0] for k in _samples(metrics, LAST)} == {"shop/db"}


def test_operator_metrics_with_per_pod_actions_pass_promtool_check() -> None:
    metrics = OperatorMetrics()
    export_action(metrics, _request(Action.RESTART, uid="u1"), Outcome(DONE, "x"), "done", 1_700_000_000.25)
    details = {"freed_bytes": 4 * MiB}
    export_action(
        metrics, _request(Action.RECLAIM, uid="u2"), Outcome(DONE, "x", details=details), "done", 2.0
    )
    export_action(metrics, _request(Action.EVICT, uid="u3"), Outcome(BLOCKED, "x"), "blocked", 3.0)
    metrics.actions.labels(GUARD, "restart", "done").inc()
    text = metrics.render().decode()
    assert LAST in text and FREED in text
    result = promtool_check(text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr
