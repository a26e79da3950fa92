"""A broken spec is refused with a condition naming the field; the operator serves /metrics."""

from __future__ import annotations

import asyncio

import aiohttp
from tests.operator.conftest import GUARDS, NAMESPACE, Cluster, Operators, eventually, free_port
from tests.operator.scenario import guard_spec


async def test_invalid_spec_gives_ready_false_naming_the_field_until_it_is_fixed(
    cluster: Cluster, operators: Operators
) -> None:
    cluster.add_guard("web", guard_spec("web", thresholds={"warn": "95%", "act": "90%"}))
    await operators.start()

    condition = await eventually(lambda: cluster.condition("web", "Ready", "False"), timeout=15)
    assert condition["reason"] == "InvalidSpec"
    assert "spec.thresholds.warn" in condition["message"]

    url = f"/apis/memoryguard.io/v1alpha1/namespaces/{NAMESPACE}/memoryguards/web"
    fixed = {"spec": {"thresholds": {"warn": "80%", "act": "90%"}}}
    response = await cluster.kmock.patch(
        url, json=fixed, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert response.status == 200
    ready = await eventually(lambda: cluster.condition("web", "Ready", "True"), timeout=15)
    assert ready["reason"] == "Watching"
    assert cluster.restart_patches() == []
    assert cluster.kmock.objects[GUARDS, NAMESPACE, "web"]


async def test_operator_metrics_count_cycles_per_guard(cluster: Cluster, operators: Operators) -> None:
    cluster.add_guard("web", guard_spec("web"))
    port = free_port()
    await operators.start(metrics_port=port, metrics_host="127.0.0.1")

    async def scrape() -> str:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200
            return await r.text()

    text = ""
    for _ in range(50):
        text = await scrape()
        if 'memoryguard_operator_cycles_total{guard="shop/web",outcome="ok"}' in text:
            break
        await asyncio.sleep(0.2)
    assert 'memoryguard_operator_cycles_total{guard="shop/web",outcome="ok"}' in text
    assert "memoryguard_operator_cycle_duration_seconds_bucket" in text
    assert 'memoryguard_operator_pods_watched{guard="shop/web"} 0.0' in text
