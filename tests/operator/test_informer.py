"""The operator's pod informer against KMock: list, then watch; selections that follow the pods;
agents by node; a fresh list when a watch expires; pages followed to the end."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest
from tests.operator.conftest import NAMESPACE, Cluster, eventually

from memoryguard.controller.informer import PodInformer, watch_scopes
from memoryguard.controller.kubeapi import KubeApi, client_configuration
from memoryguard.controller.metrics import OperatorMetrics
from memoryguard.controller.pods import Selector
from memoryguard.controller.settings import OperatorConfig

WEB = Selector.from_spec({"matchLabels": {"app": "web"}})
CID = "ab" * 32


def _pod(name: str, labels: dict[str, str], node: str = "node-a", phase: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
            "labels": labels,
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "x"}]},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "app", "containerID": f"containerd://{CID}"}],
        },
    }


class Running:
    def __init__(self, informer: PodInformer, metrics: OperatorMetrics) -> None:
        self.informer = informer
        self.metrics = metrics

    def names(self, selector: Selector = WEB) -> set[str]:
        return {p.name for p in self.informer.selected(NAMESPACE, selector)}

    def lists(self) -> float:
        return self.metrics.registry.get_sample_value("memoryguard_operator_pod_lists_total") or 0.0


@pytest.fixture
async def informer(cluster: Cluster) -> AsyncIterator[Any]:
    started: list[asyncio.Task[None]] = []

    async def start(**changes: Any) -> Running:
        config = OperatorConfig(
            namespaces=(NAMESPACE, "memoryguard-system"), api_server=str(cluster.kmock.url)
        ).replace(**changes)
        metrics = OperatorMetrics()
        api = KubeApi(client_configuration(config), timeout_seconds=5)
        running = PodInformer(api, config, metrics=metrics)
        started.append(asyncio.create_task(running.run()))
        await asyncio.wait_for(running.synced.wait(), 10)
        return Running(running, metrics)

    yield start
    for task in started:
        task.cancel()
    await asyncio.gather(*started, return_exceptions=True)


async def _api(cluster: Cluster, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    headers = {"Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            str(cluster.kmock.url).rstrip("/") + path,
            data=json.dumps(body) if body is not None else None,
            headers=headers,
        ) as response,
    ):
        return response.status


async def test_pods_created_relabelled_and_deleted_through_the_api_follow_the_guards_selection(
    cluster: Cluster, informer: Any
) -> None:
    cluster.kmock.objects["v1/pods", NAMESPACE, "web-1"] = _pod("web-1", {"app": "web"})
    cluster.kmock.objects["v1/pods", NAMESPACE, "db-1"] = _pod("db-1", {"app": "db"})
    running = await informer()
    assert running.names() == {"web-1"}
    (pod,) = running.informer.selected(NAMESPACE, WEB)
    assert pod.node == "node-a" and pod.running and pod.containers[0].container_id == CID

    pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
    assert await _api(cluster, "POST", pods, _pod("web-2", {"app": "web"})) < 300
    await eventually(lambda: running.names() == {"web-1", "web-2"}, timeout=5)
    assert await _api(cluster, "PATCH", f"{pods}/db-1", {"metadata": {"labels": {"app": "web"}}}) < 300
    await eventually(lambda: running.names() == {"web-1", "web-2", "db-1"}, timeout=5)
    assert await _api(cluster, "PATCH", f"{pods}/web-1", {"metadata": {"labels": {"app": "old"}}}) < 300
    assert await _api(cluster, "DELETE", f"{pods}/web-2") < 300
    await eventually(lambda: running.names() == {"db-1"}, timeout=5)
    assert running.names(Selector.from_spec({"matchLabels": {"app": "old"}})) == {"web-1"}
    assert running.lists() == 2, "one LIST per namespace: a working watch needs no other"


async def test_agents_are_found_by_node_and_dropped_when_they_stop_running(
    cluster: Cluster, informer: Any
) -> None:
    cluster.add_agent_pod("node-a", 9100)
    cluster.add_agent_pod("node-b", 9200)
    running = await informer(agent_url_template="http://{pod_ip}:{port}/{node}")
    agents = running.informer.agents()
    assert {node: a.url for node, a in agents.items()} == {
        "node-a": "http://127.0.0.1:9100/node-a",
        "node-b": "http://127.0.0.1:9200/node-b",
    }
    path = "/api/v1/namespaces/memoryguard-system/pods/memoryguard-agent-node-b"
    assert (
        await _api(cluster, "PATCH", path, {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}) < 300
    )
    await eventually(lambda: set(running.informer.agents()) == {"node-a"}, timeout=5)


async def test_a_watch_whose_version_expired_is_followed_by_a_fresh_list(
    cluster: Cluster, informer: Any
) -> None:
    cluster.kmock.objects["v1/pods", NAMESPACE, "web-1"] = _pod("web-1", {"app": "web"})
    gone = {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"},
    }
    # The first pod watch answers 410 Gone (after the emulator's own list), as an API server does
    # when the list's version has been compacted away.
    cluster.kmock[kmock.action.WATCH, kmock.resource("v1/pods"), kmock.namespace(NAMESPACE)][:1] << (gone,)
    running = await informer()
    # A pod that arrives without a watch event (KMock emits none for objects set directly) can
    # only be seen by listing again.
    cluster.kmock.objects["v1/pods", NAMESPACE, "web-2"] = _pod("web-2", {"app": "web"})
    await eventually(lambda: running.names() == {"web-1", "web-2"}, timeout=10)
    assert running.lists() >= 3  # one per namespace at start, then the expired one again


async def test_a_list_with_a_continue_token_is_read_page_by_page(cluster: Cluster, informer: Any) -> None:
    cluster.kmock.objects["v1/pods", NAMESPACE, "web-2"] = _pod("web-2", {"app": "web"})
    first_page = {
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"continue": "page-2", "resourceVersion": "7"},
        "items": [_pod("web-1", {"app": "web"})],
    }
    cluster.kmock[kmock.action.LIST, kmock.resource("v1/pods"), kmock.namespace(NAMESPACE)][:1] << first_page
    running = await informer()
    assert running.names() == {"web-1", "web-2"}
    lists = [
        r
        for r in cluster.requests("GET", "v1/pods")
        if r.url.path == f"/api/v1/namespaces/{NAMESPACE}/pods" and r.params.get("watch") != "true"
    ]
    assert [r.params.get("continue") for r in lists[:2]] == [None, "page-2"]
    assert all(r.params.get("limit") == "500" for r in lists)
    resumed = await eventually(
        lambda: [
            r
            for r in cluster.requests("GET", "v1/pods")
            if r.params.get("watch") == "true" and r.url.path.endswith(f"/{NAMESPACE}/pods")
        ],
        timeout=5,
    )
    assert resumed[0].params.get("resourceVersion") == "7", "the watch starts at the list's version"


def test_named_namespaces_are_watched_each_and_patterns_need_the_cluster_wide_watch() -> None:
    scopes, wanted = watch_scopes(("shop", "memoryguard-system"))
    assert scopes == ["shop", "memoryguard-system"] and wanted("anything")
    scopes, wanted = watch_scopes(("team-*",))
    assert scopes == [""] and wanted("team-a") and not wanted("kube-system")
    scopes, wanted = watch_scopes(())
    assert scopes == [""] and wanted("kube-system")
