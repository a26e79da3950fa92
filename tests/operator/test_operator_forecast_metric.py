"""The engine's forecast on the operator's /metrics: a growing container carries its time to the
limit and growth rate, and the series goes with the pod and with the guard.

Against KMock and the real agent process serving a fixture tree the test rewrites.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.operator.conftest import GUARDS, NAMESPACE, Agents, Cluster, Operators, free_port
from tests.operator.scenario import LIMIT_BYTES, Leak, deploy, guard_spec
from tests.support.cgroup_tree import KiB, MiB

pytestmark = pytest.mark.slow

SECONDS_TO_LIMIT = "memoryguard_operator_forecast_seconds_to_limit"
GROWTH = "memoryguard_operator_pinned_growth_bytes_per_second"
# The fixture's pinned memory is anon + 512 KiB of kernel; the engine's memory.max line sits a
# file floor (4 MiB: the fixture has more page cache than that) below memory.max.
KERNEL_BYTES = 512 * KiB
LINE_BYTES = LIMIT_BYTES - 4 * MiB


class Scraper:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.text = ""

    async def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        async with aiohttp.ClientSession() as session, session.get(self.url) as response:
            assert response.status == 200
            self.text = await response.text()
        return {
            tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(self.text)
            for s in family.samples
            if s.name == name
        }

    async def of_pod(self, name: str, pod: str) -> dict[str, str | float] | None:
        for labels, value in (await self.series(name)).items():
            found = dict(labels)
            if found["pod"] == pod:
                return {**found, "value": value}
        return None


async def _delete(cluster: Cluster, path: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.delete(str(cluster.kmock.url).rstrip("/") + path, data=json.dumps({})) as response,
    ):
        return response.status


async def test_growing_container_carries_the_engines_time_to_limit_until_its_pod_and_guard_go(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    api = deploy(cluster, agent, "api")
    idle = deploy(cluster, agent, "idle")
    cluster.add_guard("web", guard_spec("web"))
    cluster.add_guard("api", guard_spec("api"))
    cluster.add_guard("idle", guard_spec("idle"))
    port = free_port()
    await operators.start(metrics_port=port, metrics_host="127.0.0.1")
    scrape = Scraper(port)

    rate = 1 * MiB  # about three minutes to the limit: no restart while the test runs
    async with contextlib.AsyncExitStack() as stack:
        leak = await stack.enter_async_context(Leak(web, bytes_per_second=rate).running())
        await stack.enter_async_context(Leak(api, bytes_per_second=rate).running())

        async def both_present() -> bool:
            pods = {dict(labels)["pod"] for labels in await scrape.series(SECONDS_TO_LIMIT)}
            return {web.pod_name, api.pod_name} <= pods

        await _eventually_async(both_present, timeout=60)
        found = await scrape.of_pod(SECONDS_TO_LIMIT, web.pod_name)
        anon_now = leak.written[-1][1]
        assert found is not None
        truth = (LINE_BYTES - KERNEL_BYTES - anon_now) / rate
        assert found["guard"] == f"{NAMESPACE}/web"
        assert found["namespace"] == NAMESPACE and found["container"] == "app"
        assert found["limit"] == "memory.max"
        assert abs(float(found["value"]) - truth) <= max(8.0, 0.1 * truth), (found, truth)
        growth = await scrape.of_pod(GROWTH, web.pod_name)
        assert growth is not None and abs(float(growth["value"]) - rate) <= 0.1 * rate
        # A container that does not grow has no forecast series at all.
        assert await scrape.of_pod(SECONDS_TO_LIMIT, idle.pod_name) is None

        pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
        assert await _delete(cluster, f"{pods}/{web.pod_name}") < 300
        await _eventually_async(lambda: _absent(scrape, SECONDS_TO_LIMIT, web.pod_name), timeout=15)
        assert await scrape.of_pod(GROWTH, web.pod_name) is None
        assert await scrape.of_pod(SECONDS_TO_LIMIT, api.pod_name) is not None, "another guard's pod stays"

        guards = f"/apis/{GUARDS.split('/', 1)[0]}/v1alpha1/namespaces/{NAMESPACE}/memoryguards"
        assert await _delete(cluster, f"{guards}/api") < 300
        await _eventually_async(lambda: _absent(scrape, SECONDS_TO_LIMIT, api.pod_name), timeout=15)
    assert cluster.restart_patches() == []


async def _absent(scrape: Scraper, name: str, pod: str) -> bool:
    return await scrape.of_pod(name, pod) is None


async def _eventually_async(predicate: Callable[[], Awaitable[bool]], *, timeout: float) -> None:
    """``eventually`` for a predicate that must scrape (await) to answer."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.3)
