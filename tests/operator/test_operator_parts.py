"""The operator's pure parts, table-driven: rollout checks, selectors, the pod index model,
history thinning, the bounded ledger, when status is worth writing."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest

from memoryguard.controller.cycle import agent_endpoint, merge_patch
from memoryguard.controller.history import ContainerHistory
from memoryguard.controller.inflight import workload_from_target
from memoryguard.controller.judgement import judge
from memoryguard.controller.kubeapi import resource_of
from memoryguard.controller.ledger import DONE, INTENT, Entry, Ledger, action_id, rfc3339
from memoryguard.controller.owners import cannot_roll, rollout_in_progress
from memoryguard.controller.pods import ContainerInfo, Selector, pod_info
from memoryguard.controller.settings import OperatorConfig
from memoryguard.controller.status import AtRiskRow, StatusWriter, at_risk_table
from memoryguard.engine.decision import Target
from memoryguard.engine.limiter import LimiterState
from memoryguard.engine.model import Sample
from memoryguard.engine.policy import Policy

MiB = 1024 * 1024


def _deployment(generation: int = 2, **status: Any) -> dict[str, Any]:
    base = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    return {
        "kind": "Deployment",
        "metadata": {"generation": generation},
        "spec": {"replicas": 3},
        "status": base | status,
    }


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        pytest.param(_deployment(), None, id="deployment-complete"),
        pytest.param(
            _deployment(generation=3), "not yet observed generation 3", id="deployment-new-generation"
        ),
        pytest.param(_deployment(updatedReplicas=1), "1 of 3 replicas updated", id="deployment-updating"),
        pytest.param(_deployment(replicas=4), "1 old replicas pending termination", id="deployment-old-pods"),
        pytest.param(
            _deployment(availableReplicas=2), "2 of 3 updated replicas available", id="deployment-unavailable"
        ),
        pytest.param(
            {
                "kind": "StatefulSet",
                "metadata": {"generation": 1},
                "spec": {"replicas": 2},
                "status": {
                    "observedGeneration": 1,
                    "updatedReplicas": 2,
                    "readyReplicas": 2,
                    "currentRevision": "a",
                    "updateRevision": "a",
                },
            },
            None,
            id="statefulset-complete",
        ),
        pytest.param(
            {
                "kind": "StatefulSet",
                "metadata": {"generation": 1},
                "spec": {"replicas": 2},
                "status": {
                    "observedGeneration": 1,
                    "updatedReplicas": 2,
                    "readyReplicas": 2,
                    "currentRevision": "a",
                    "updateRevision": "b",
                },
            },
            "update revision is not yet the current",
            id="statefulset-revision",
        ),
        pytest.param(
            {
                "kind": "StatefulSet",
                "metadata": {"generation": 1},
                "spec": {"replicas": 4, "updateStrategy": {"rollingUpdate": {"partition": 2}}},
                "status": {"observedGeneration": 1, "updatedReplicas": 2, "readyReplicas": 4},
            },
            None,
            id="statefulset-partition-done",
        ),
        pytest.param(
            {
                "kind": "DaemonSet",
                "metadata": {"generation": 5},
                "spec": {},
                "status": {
                    "observedGeneration": 5,
                    "desiredNumberScheduled": 4,
                    "updatedNumberScheduled": 3,
                    "numberAvailable": 4,
                },
            },
            "3 of 4 pods updated",
            id="daemonset-updating",
        ),
    ],
)
def test_rollout_in_progress_follows_kubectl_rollout_status(
    workload: dict[str, Any], expected: str | None
) -> None:
    reason = rollout_in_progress(workload)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


@pytest.mark.parametrize(
    ("workload", "fragment"),
    [
        pytest.param(
            {"kind": "StatefulSet", "spec": {"updateStrategy": {"type": "OnDelete"}}}, "OnDelete", id="sts"
        ),
        pytest.param(
            {"kind": "DaemonSet", "spec": {"updateStrategy": {"type": "OnDelete"}}}, "OnDelete", id="ds"
        ),
        pytest.param({"kind": "Deployment", "spec": {"paused": True}}, "paused", id="paused"),
        pytest.param({"kind": "Deployment", "spec": {}}, None, id="rollable"),
    ],
)
def test_workloads_a_template_annotation_cannot_restart_are_named(
    workload: dict, fragment: str | None
) -> None:
    reason = cannot_roll(workload)
    assert (reason is None) if fragment is None else (reason is not None and fragment in reason)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        pytest.param({"matchLabels": {"app": "web"}}, {"app": "web", "x": "y"}, True, id="labels"),
        pytest.param({"matchLabels": {"app": "web"}}, {"app": "api"}, False, id="labels-differ"),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            {"tier": "b"},
            True,
            id="in",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
            {},
            True,
            id="notin-absent",
        ),
        pytest.param({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {}, False, id="exists"),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
            {"tier": "a"},
            False,
            id="does-not-exist",
        ),
        pytest.param(
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}],
            },
            {"app": "web", "canary": "1"},
            False,
            id="anded",
        ),
        pytest.param({}, {"app": "web"}, False, id="empty-selects-nothing"),
    ],
)
def test_label_selector(selector: dict, labels: dict, matches: bool) -> None:
    assert Selector.from_spec(selector).matches(labels) is matches


def test_unknown_selector_operator_is_an_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"spec.selector.matchExpressions\[tier\].operator"):
        Selector.from_spec({"matchExpressions": [{"key": "tier", "operator": "Gt"}]})


def test_pod_index_entry_keeps_ids_limits_heap_caps_and_the_controller() -> None:
    cid = "a" * 64
    pod = pod_info(
        "shop",
        "web-1",
        "uid-1",
        {
            "labels": {"app": "web"},
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "web-abc", "uid": "rs", "controller": True},
                {"kind": "Other", "name": "x", "uid": "o"},
            ],
        },
        {
            "nodeName": "node-a",
            "containers": [
                {
                    "name": "app",
                    "args": ["node", "server.js"],
                    "resources": {"limits": {"memory": "512Mi"}},
                    "env": [
                        {"name": "NODE_OPTIONS", "value": "--max-old-space-size=256"},
                        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                    ],
                },
                {"name": "sidecar", "image": "x", "env": [{"name": "GOMEMLIMIT", "value": "100MiB"}]},
            ],
        },
        {"phase": "Running", "containerStatuses": [{"name": "app", "containerID": f"containerd://{cid}"}]},
    )
    assert pod.running and pod.node == "node-a"
    assert pod.owner is not None and (pod.owner.kind, pod.owner.name) == ("ReplicaSet", "web-abc")
    app, sidecar = pod.containers
    assert app.container_id == cid and app.limit_bytes == 512 * MiB
    assert app.heap_limit_bytes == 256 * MiB
    assert sidecar.container_id is None and sidecar.limit_bytes is None
    assert sidecar.soft_limit_bytes == 100 * MiB and sidecar.heap_limit_bytes is None
    assert app.soft_limit_bytes is None


def _sample(t: float, anon: int = 10 * MiB, oom_kill: int = 0) -> Sample:
    return Sample(t_seconds=t, anon_bytes=anon, file_bytes=0, max_bytes=256 * MiB, oom_kill=oom_kill)


def test_history_keeps_recent_samples_dense_and_older_ones_thinned() -> None:
    history = ContainerHistory(dense_seconds=60, step_seconds=5)
    history.extend([_sample(float(t)) for t in range(600)], keep_seconds=600)
    times = [s.t_seconds for s in history.window(600)]
    assert times[-60:] == [float(t) for t in range(540, 600)]  # the last minute at full rate
    older = [t for t in times if t < 599 - 60]  # beyond the dense minute
    assert all(b - a >= 5 for a, b in itertools.pairwise(older))
    assert len(history) < 60 + 600 / 5 + 2


def test_history_ignores_repeated_rows_and_forgets_beyond_the_window() -> None:
    history = ContainerHistory(dense_seconds=30, step_seconds=0)
    history.extend([_sample(float(t)) for t in range(100)], keep_seconds=50)
    history.extend([_sample(float(t)) for t in range(90, 101)], keep_seconds=50)
    times = [s.t_seconds for s in history.window(1000)]
    assert times == [float(t) for t in range(50, 101)]


def test_history_starts_over_when_the_cgroup_was_recreated() -> None:
    history = ContainerHistory(dense_seconds=30, step_seconds=0)
    history.extend([_sample(float(t), oom_kill=2) for t in range(10)], keep_seconds=60)
    history.extend([_sample(10.0, oom_kill=0)], keep_seconds=60)
    assert [s.t_seconds for s in history.window(60)] == [10.0]


def test_ledger_stays_bounded_but_never_drops_an_unresolved_intent() -> None:
    ledger = Ledger(size=3)
    ledger.add(Entry(id="keep", time=rfc3339(0), action="restart", target="deployment/web"))
    for i in range(5):
        ledger.add(Entry(id=f"r{i}", time=rfc3339(i), action="reclaim", target="pod/p/c", state=DONE))
    assert [e.id for e in ledger.entries] == ["keep", "r3", "r4"]
    assert [e.id for e in ledger.pending()] == ["keep"] and ledger.entries[0].state == INTENT
    resolved = ledger.resolve("keep", DONE, message="ok", finished_seconds=10)
    assert resolved is not None and resolved.finishedTime == "1970-01-01T00:00:10Z"
    roundtrip = Ledger.from_status(ledger.to_status(), size=3)
    assert roundtrip.entries == ledger.entries


def test_a_ledger_full_of_intents_names_the_oldest_ones_to_settle() -> None:
    ledger = Ledger(size=2)
    for i in range(4):
        ledger.add(Entry(id=f"e{i}", time=rfc3339(i), action="evict", target=f"pod/p{i}"))
    assert len(ledger.entries) == 4, "intents are not dropped to make room"
    assert [e.id for e in ledger.overflowing_intents()] == ["e0", "e1"]
    for entry in ledger.overflowing_intents():
        ledger.resolve(entry.id, "failed", message="given up", finished_seconds=9)
    ledger.trim()
    assert [e.id for e in ledger.entries] == ["e2", "e3"] and ledger.overflowing_intents() == []


@pytest.mark.parametrize(
    ("on_server", "body", "patch"),
    [
        (
            {"rateLimit": {"last": {"restart deployment/old": 1.0, "restart deployment/web": 2.0}}},
            {"rateLimit": {"last": {"restart deployment/web": 3.0}, "restarts": [3.0]}},
            {
                "rateLimit": {
                    "last": {"restart deployment/old": None, "restart deployment/web": 3.0},
                    "restarts": [3.0],
                }
            },
        ),
        (
            {"rateLimit": {"last": {}, "dryRun": {"last": {"restart deployment/web": 1.0}}}},
            {"rateLimit": {"last": {}}, "podsWatched": 3},
            {"rateLimit": {"last": {}, "dryRun": None}, "podsWatched": 3},
        ),
        (
            {"rateLimit": {"last": {"a": 1.0}}, "lastAction": "x"},
            {"ledger": [{"id": "i"}]},
            {"ledger": [{"id": "i"}]},
        ),
    ],
    ids=["an expired entry is deleted", "a dropped sub-object is deleted", "fields not in the body stay"],
)
def test_status_merge_patch_deletes_what_the_body_no_longer_holds(
    on_server: dict, body: dict, patch: dict
) -> None:
    assert merge_patch(on_server, body) == patch


def test_at_risk_table_keeps_the_nearest_to_their_limit_and_no_more() -> None:
    def row(pod: str, eta: float | None, used: float) -> AtRiskRow:
        fc = (
            None
            if eta is None
            else SimpleNamespace(
                eta_seconds=eta,
                effective_limit_bytes=1,
                growth_bytes_per_second=1.0,
                working_set_growth_bytes_per_second=2.0,
            )
        )
        assessment = SimpleNamespace(
            forecast=fc,
            used_fraction=used,
            numbers={},
            verdict="x",
            usage_limit_bytes=1,
            notes=(f"note on {pod}",) * 6,
        )
        return AtRiskRow(pod, "app", "n", assessment, "none", "why", 0.0)  # type: ignore[arg-type]

    rows = [row("slow", 600, 0.5), row("full", None, 0.95), row("soon", 20, 0.5), row("fuller", None, 0.99)]
    table = at_risk_table(rows, 3)
    assert [r["pod"] for r in table] == ["soon", "slow", "fuller"]
    assert (
        table[0]["workingSetGrowthBytesPerSecond"] == 2.0
        and table[2]["workingSetGrowthBytesPerSecond"] is None
    )
    assert table[0]["notes"] == ["note on soon"] * 4, "notes are bounded as the CRD's maxItems"


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("deployment/web", "Deployment"),
        ("statefulset/db", "StatefulSet"),
        ("pod/batch", "Pod"),
        ("pod/web-1/app", None),
        ("node/node-a", None),
        ("deployment/", None),
    ],
)
def test_workloads_in_flight_are_read_back_from_ledger_targets(target: str, kind: str | None) -> None:
    workload = workload_from_target("shop", target)
    assert (workload.kind if workload else None) == kind


def test_action_ids_differ_per_target_and_time() -> None:
    ids = {
        action_id("g", "restart", target, t)
        for target in ("deployment/a", "deployment/b")
        for t in (1.0, 1.001)
    }
    assert len(ids) == 4 and all(len(i) <= 63 for i in ids)


def test_status_is_written_on_change_and_otherwise_at_the_refresh_interval() -> None:
    writer = StatusWriter(refresh_seconds=10)
    status = {
        "podsAtRisk": 1,
        "atRisk": [{"pod": "p", "container": "c", "verdict": "anon_growth", "usedPercent": 80}],
    }
    assert writer.due(status, now_seconds=0)
    writer.written(status, now_seconds=0)
    moved = {**status, "atRisk": [{**status["atRisk"][0], "usedPercent": 81}]}
    assert not writer.due(moved, now_seconds=5), "a number moving is not worth a write"
    assert writer.due(moved, now_seconds=10)
    assert writer.due({**status, "podsAtRisk": 2}, now_seconds=1), "a count changing is"


def test_an_unchanged_status_is_not_written_again_unless_the_object_lost_it() -> None:
    writer = StatusWriter(refresh_seconds=10)
    status = {"podsWatched": 1000, "podsAtRisk": 0, "atRisk": [], "conditions": [{"type": "Ready"}]}
    writer.written(status, now_seconds=0)
    assert not writer.due(dict(status), now_seconds=3600, live=dict(status)), "identical: no write"
    assert not writer.due(dict(status), now_seconds=5, live={}), "the object's copy may lag our write"
    assert writer.due(dict(status), now_seconds=10, live={**status, "conditions": []}), "someone changed it"
    writer.lost()
    assert writer.due(dict(status), now_seconds=11, live=dict(status)), "a lost write is written again"


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/apis/apps/v1/namespaces/shop/deployments/web", "deployments"),
        ("/apis/memoryguard.io/v1alpha1/namespaces/shop/memoryguards/g/status", "memoryguards/status"),
        ("/api/v1/namespaces/shop/pods/web-1/eviction", "pods/eviction"),
        ("/api/v1/namespaces/shop/events", "events"),
        ("/api/v1/pods", "pods"),
    ],
)
def test_api_metrics_label_the_resource_never_the_object(path: str, resource: str) -> None:
    assert resource_of(path) == resource


def test_agent_address_comes_from_the_template() -> None:
    config = OperatorConfig(agent_url_template="http://127.0.0.1:9000/{node}", agent_port=9732)
    assert agent_endpoint(config, "10.1.2.3", "node-7", "agent-x", None).url == "http://127.0.0.1:9000/node-7"
    default = OperatorConfig()
    assert agent_endpoint(default, "10.1.2.3", "node-7", "agent-x", 9999).url == "http://10.1.2.3:9999"
    assert agent_endpoint(default, "10.1.2.3", "node-7", "agent-x", None).url == "http://10.1.2.3:9732"


def test_judgement_passes_the_pod_specs_gomemlimit_to_the_engine_as_a_note() -> None:
    samples = [_sample(float(t), anon=(100 + t) * MiB) for t in range(40)]
    container = ContainerInfo(
        "app", "c" * 64, 256 * MiB, None, None, "GOMEMLIMIT", soft_limit_bytes=120 * MiB
    )
    judgement = judge(
        samples,
        Policy.default(),
        container,
        Target(kind="workload", name="deployment/web", pod="web-1", container="app"),
        LimiterState(),
        agent_now_seconds=40.0,
        now_seconds=40.0,
    )
    assert judgement.assessment.numbers["runtime_soft_limit_bytes"] == 120 * MiB
    assert any(n.startswith("GOMEMLIMIT 120 MiB") for n in judgement.assessment.notes)
    assert judgement.assessment.forecast is not None
    assert judgement.assessment.forecast.limit_source == "memory.max", "never a kill line"
