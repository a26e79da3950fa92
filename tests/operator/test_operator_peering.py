"""Two replicas with Kopf peering: only the higher priority one acts; the other takes over."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from tests.operator.conftest import NAMESPACE, Agents, Cluster, Operators, eventually
from tests.operator.scenario import Leak, deploy, guard_spec

pytestmark = pytest.mark.slow

PEERINGS = "kopf.dev/v1/kopfpeerings"


def _cycles(run: object) -> float:
    registry = run.metrics.registry  # type: ignore[attr-defined]
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "memoryguard_operator_cycles"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def test_only_the_higher_priority_replica_acts_and_the_other_takes_over(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    kmock = cluster.kmock
    kmock.resources[PEERINGS] = {
        "kind": "KopfPeering",
        "singular": "kopfpeering",
        "namespaced": True,
        "verbs": {"get", "list", "watch", "patch"},
    }
    for namespace in (NAMESPACE, "memoryguard-system"):
        kmock.objects[PEERINGS, namespace, "memoryguard"] = {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "memoryguard", "namespace": namespace, "uid": str(uuid.uuid4()),
                         "resourceVersion": "1"},
            "status": {},
        }  # fmt: skip
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    cluster.add_guard("web", guard_spec("web"))

    active = await operators.start(standalone=False, priority=200)
    standby = await operators.start(standalone=False, priority=100)
    peers = await eventually(
        lambda: len(kmock.objects[PEERINGS, NAMESPACE, "memoryguard"].raw.get("status") or {}) >= 2,
        timeout=20,
    )
    assert peers

    async with Leak(web).running():
        await eventually(lambda: cluster.restart_patches("web"), timeout=40)
        await asyncio.sleep(3)
        assert len(cluster.restart_patches("web")) == 1
        assert _cycles(active) > 0
        assert _cycles(standby) == 0, "the lower-priority replica stays paused"

        await active.stop()
        await eventually(lambda: _cycles(standby) > 0, timeout=30)
        # It carries on with the same budget: the restart is not repeated.
        await eventually(lambda: cluster.events("RestartBlocked", kind="Pod"), timeout=20)
    assert len(cluster.restart_patches("web")) == 1
