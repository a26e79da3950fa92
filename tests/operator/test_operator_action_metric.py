"""Actions per pod on the operator's /metrics: the time of the latest action of each kind and result
on a guarded container, the bytes its latest reclaim freed; gone with the pod, with an invalid
spec and with the guard.

Against KMock and the real agent process serving a fixture tree the test rewrites.
"""

from __future__ import annotations

import contextlib
import re
import time
from datetime import datetime

import pytest
from tests.operator.conftest import GUARDS, NAMESPACE, Agents, Cluster, Operators, eventually, free_port
from tests.operator.scenario import Leak, deploy, fill_with_page_cache, guard_spec
from tests.operator.test_operator_forecast_metric import Scraper, _absent, _delete, _eventually_async
from tests.support.cgroup_tree import MiB

pytestmark = pytest.mark.slow

LAST = "memoryguard_operator_last_action_timestamp_seconds"
FREED = "memoryguard_operator_last_reclaim_freed_bytes"
GUARDS_PATH = f"/apis/{GUARDS.split('/', 1)[0]}/v1alpha1/namespaces/{NAMESPACE}/memoryguards"


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


async def _pod_series(scrape: Scraper, name: str, pod: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for labels, v in (await scrape.series(name)).items() if dict(labels)["pod"] == pod}


async def test_restart_and_dry_run_restart_carry_pod_time_and_result_until_the_pod_or_spec_goes(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    rehearsal = deploy(cluster, agent, "rehearsal")
    cluster.add_guard("web", guard_spec("web"))
    cluster.add_guard("rehearsal", guard_spec("rehearsal", dryRun=True))
    port = free_port()
    await operators.start(metrics_port=port, metrics_host="127.0.0.1")
    scrape = Scraper(port)

    started = time.time()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(Leak(web).running())
        await stack.enter_async_context(Leak(rehearsal).running())
        restart = (await eventually(lambda: cluster.ledger("web", "restart", "done"), timeout=40))[0]
        rehearsed = (await eventually(lambda: cluster.ledger("rehearsal", "restart", "done"), timeout=40))[0]

    async def both_scraped() -> bool:
        pods = {dict(labels)["pod"] for labels in await scrape.series(LAST)}
        return {web.pod_name, rehearsal.pod_name} <= pods

    await _eventually_async(both_scraped, timeout=15)
    scraped = time.time()
    ((labels, at_seconds),) = (await _pod_series(scrape, LAST, web.pod_name)).items()
    # The restart targets deployment/web; the series names the pod and container that called for it.
    assert dict(labels) == {
        "guard": f"{NAMESPACE}/web",
        "namespace": NAMESPACE,
        "pod": web.pod_name,
        "container": "app",
        "action": "restart",
        "result": "done",
    }
    assert started <= at_seconds <= scraped
    assert abs(at_seconds - _seconds(restart["finishedTime"])) < 1.0, (at_seconds, restart)

    ((labels, at_seconds),) = (await _pod_series(scrape, LAST, rehearsal.pod_name)).items()
    assert dict(labels)["guard"] == f"{NAMESPACE}/rehearsal"
    assert (dict(labels)["action"], dict(labels)["result"]) == ("restart", "dry_run")
    assert started <= at_seconds <= scraped
    assert abs(at_seconds - _seconds(rehearsed["finishedTime"])) < 1.0, (at_seconds, rehearsed)
    assert await scrape.series(FREED) == {}, "no reclaim, no freed bytes"

    # The restarted pod leaves (its Deployment's new pods replace it): its series goes with it.
    assert await _delete(cluster, f"/api/v1/namespaces/{NAMESPACE}/pods/{web.pod_name}") < 300
    await _eventually_async(lambda: _absent(scrape, LAST, web.pod_name), timeout=15)
    assert await _pod_series(scrape, LAST, rehearsal.pod_name), "another guard's pod keeps its series"

    # A spec the operator refuses runs no cycle: nothing would keep its pods' series true.
    response = await cluster.kmock.patch(
        f"{GUARDS_PATH}/rehearsal",
        json={"spec": {"thresholds": {"warn": "95%", "act": "90%"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200
    await _eventually_async(lambda: _absent(scrape, LAST, rehearsal.pod_name), timeout=15)
    assert cluster.restart_patches("rehearsal") == [], "the dry run patched nothing"


async def test_reclaim_carries_its_time_and_the_bytes_the_agent_freed_until_the_guard_goes(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    cache = deploy(cluster, agent, "cache", anon_bytes=40 * MiB, file_bytes=20 * MiB)
    idle = deploy(cluster, agent, "idle")
    agent.tree.write_file(cache.pod_uid, cache.container_id, "memory.reclaim", "")
    cluster.add_guard("cache", guard_spec("cache"))
    cluster.add_guard("idle", guard_spec("idle"))
    port = free_port()
    await operators.start(metrics_port=port, metrics_host="127.0.0.1")
    scrape = Scraper(port)

    started = time.time()
    await fill_with_page_cache(cache, done=lambda: bool(cluster.ledger("cache", "reclaim", "done")))
    reclaim = cluster.ledger("cache", "reclaim", "done")[0]
    await _eventually_async(lambda: _present(scrape, FREED, cache.pod_name), timeout=15)
    scraped = time.time()

    series = await _pod_series(scrape, LAST, cache.pod_name)
    done = {labels: v for labels, v in series.items() if dict(labels)["result"] == "done"}
    ((labels, at_seconds),) = done.items()
    assert dict(labels) == {
        "guard": f"{NAMESPACE}/cache",
        "namespace": NAMESPACE,
        "pod": cache.pod_name,
        "container": "app",
        "action": "reclaim",
        "result": "done",
    }
    assert started <= at_seconds <= scraped
    assert abs(at_seconds - _seconds(reclaim["finishedTime"])) < 1.0, (at_seconds, reclaim)
    ((labels, freed),) = (await _pod_series(scrape, FREED, cache.pod_name)).items()
    assert dict(labels) == {
        "guard": f"{NAMESPACE}/cache",
        "namespace": NAMESPACE,
        "pod": cache.pod_name,
        "container": "app",
    }
    # What the agent answered, as the ledger's outcome message quotes it.
    answered = re.match(r"reclaimed (\d+) of (\d+) bytes", reclaim["message"])
    assert answered is not None, reclaim
    assert freed == int(answered.group(1))
    assert await _pod_series(scrape, LAST, idle.pod_name) == {}, "a pod not acted on has no series"

    assert await _delete(cluster, f"{GUARDS_PATH}/cache") < 300
    await _eventually_async(lambda: _absent(scrape, LAST, cache.pod_name), timeout=15)
    assert await _pod_series(scrape, FREED, cache.pod_name) == {}
    assert cluster.restart_patches() == []


async def _present(scrape: Scraper, name: str, pod: str) -> bool:
    return await scrape.of_pod(name, pod) is not None
