"""The operator against KMock and the real agent process: restart, reclaim, dry-run, budgets
across operator restarts, degraded agents, API errors, evictions."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tests.operator.conftest import NAMESPACE, Agents, Cluster, Operators, eventually
from tests.operator.scenario import Leak, deploy, fill_with_page_cache, guard_spec
from tests.support.cgroup_tree import MiB

from memoryguard import annotations as keys

pytestmark = pytest.mark.slow


async def test_leaking_container_gets_its_deployment_restarted_before_the_limit(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    cluster.add_guard("web", guard_spec("web"))
    await operators.start()

    async with Leak(web).running() as leak:
        patches = await eventually(lambda: cluster.restart_patches("web"), timeout=40)
        patched_at = time.time()
        assert patched_at < leak.limit_reached_at(), "the restart came after the container reached its limit"
        await asyncio.sleep(3)  # a second patch would show up here

    (patch,) = cluster.restart_patches("web")  # exactly one restart
    template_annotations = patch.data["spec"]["template"]["metadata"]["annotations"]
    assert template_annotations[keys.KUBECTL_RESTARTED_AT].endswith("Z")
    assert template_annotations[keys.RESTARTED_AT] == template_annotations[keys.KUBECTL_RESTARTED_AT]
    assert "grows" in template_annotations[keys.RESTART_REASON]
    assert template_annotations[keys.RESTARTED_BY] == f"{NAMESPACE}/web"
    stored = cluster.deployment("web")["spec"]["template"]["metadata"]["annotations"]
    assert stored[keys.RESTART_ID] == template_annotations[keys.RESTART_ID]
    assert patches[0].params.get("fieldManager") == keys.FIELD_MANAGER

    (entry,) = cluster.ledger("web", "restart")
    assert entry["state"] == "done" and entry["id"] == template_annotations[keys.RESTART_ID]
    assert entry["target"] == "deployment/web"
    assert not entry.get("dryRun", False)
    assert cluster.guard("web")["status"]["lastAction"].startswith("restart deployment/web")

    pod_events = cluster.events("RestartTriggered", kind="Pod")
    guard_events = cluster.events("RestartTriggered", kind="MemoryGuard")
    assert pod_events and guard_events
    assert "MiB" in pod_events[0]["message"] and "deployment/web" in pod_events[0]["message"]
    assert cluster.events("MemoryAtRisk", kind="Pod"), "the pod was at risk before the restart"
    names = [e["metadata"]["name"] for e in cluster.events()]
    assert len(names) == len(set(names)), "every Event has its own name"


def _with_drop_caches(spec: dict) -> dict:
    spec["actions"]["dropCaches"] = {"enabled": True, "level": 1}
    return spec


async def test_page_cache_container_is_reclaimed_and_never_restarted(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    cache = deploy(cluster, agent, "cache", anon_bytes=40 * MiB, file_bytes=20 * MiB)
    # The fixture tree is plain files: give the container a memory.reclaim for the agent to write.
    agent.tree.write_file(cache.pod_uid, cache.container_id, "memory.reclaim", "")
    cluster.add_guard("cache", guard_spec("cache"))
    await operators.start()

    def reclaimed() -> bool:
        return bool(cluster.ledger("cache", "reclaim", "done"))

    await fill_with_page_cache(cache, done=reclaimed)
    written = (agent.tree.path(cache.pod_uid, cache.container_id) / "memory.reclaim").read_text()
    assert written.strip(), "the agent wrote into the container's memory.reclaim"
    (entry,) = cluster.ledger("cache", "reclaim")
    assert entry["target"] == f"pod/{cache.pod_name}/app"
    assert cluster.events("Reclaimed", kind="Pod")
    await asyncio.sleep(3)
    assert cluster.restart_patches() == []


@pytest.mark.parametrize("agent_allows", [True, False], ids=["agent-allows", "agent-refuses"])
async def test_page_cache_on_a_node_without_memory_reclaim_gets_drop_caches_when_enabled(
    cluster: Cluster, agents: Agents, operators: Operators, tmp_path: Path, agent_allows: bool
) -> None:
    # cgroup v1 has no memory.reclaim: the ladder's next step is drop_caches, node-wide, and only
    # the agent started with --enable-drop-caches carries it out; a refusal is an Event, not a retry loop.
    flags = ("--enable-drop-caches",) if agent_allows else ()
    agent = await agents.start_in(cluster, "node-a", version=1, extra_args=flags)
    cache = deploy(cluster, agent, "cache", anon_bytes=40 * MiB, file_bytes=20 * MiB)
    cluster.add_guard("cache", _with_drop_caches(guard_spec("cache")))
    await operators.start()
    drop_caches = tmp_path / "proc" / "sys" / "vm" / "drop_caches"
    assert drop_caches.read_text().strip() == "0"
    outcome = "done" if agent_allows else "failed"

    def settled() -> bool:
        return bool(cluster.ledger("cache", "drop_caches", outcome))

    await fill_with_page_cache(cache, done=settled)
    if agent_allows:
        assert drop_caches.read_text().strip() == "1", "the agent wrote the guard's level into drop_caches"
        assert cluster.events("DroppedCaches")
    else:
        assert drop_caches.read_text().strip() == "0"
        (failed,) = cluster.events("DropCachesFailed")[:1]
        assert "drop_caches" in failed["message"], failed
    assert not cluster.ledger("cache", "reclaim"), "no reclaim on cgroup v1"
    await asyncio.sleep(3)
    assert cluster.restart_patches() == []


async def test_a_second_drop_caches_within_the_agents_min_interval_is_refused_once_with_an_event(
    cluster: Cluster, agents: Agents, operators: Operators, tmp_path: Path
) -> None:
    # Two guards, one node: each guard's own limiter lets it drop caches, but drop_caches is
    # node-wide and the agent allows one per --drop-caches-min-interval (600 s by default). The
    # second guard's request gets the agent's 429: a failed action with an Event naming the
    # interval, and no retry loop against the agent.
    agent = await agents.start_in(cluster, "node-a", version=1, extra_args=("--enable-drop-caches",))
    caches = [
        deploy(cluster, agent, app, anon_bytes=40 * MiB, file_bytes=20 * MiB) for app in ("cache", "logs")
    ]
    for app in ("cache", "logs"):
        cluster.add_guard(app, _with_drop_caches(guard_spec(app)))
    await operators.start()

    def drops(state: str) -> list[dict]:
        return [e for app in ("cache", "logs") for e in cluster.ledger(app, "drop_caches", state)]

    await fill_with_page_cache(*caches, done=lambda: bool(drops("done") and drops("failed")))
    await asyncio.sleep(4)  # more cycles on the same page cache: neither guard asks again
    (done,), (refused,) = drops("done"), drops("failed")
    assert done["target"] == refused["target"] == "node/node-a"
    assert "429" in refused["message"] and "at most one per 600s" in refused["message"], refused
    (event,) = cluster.events("DropCachesFailed", kind="MemoryGuard")
    assert "429" in event["message"] and "node-a" in event["message"], event
    assert len(cluster.events("DroppedCaches", kind="MemoryGuard")) == 1
    assert (tmp_path / "proc" / "sys" / "vm" / "drop_caches").read_text().strip() == "1"
    assert cluster.restart_patches() == []


async def test_dry_run_decides_records_and_posts_events_but_patches_nothing(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    cluster.add_guard("web", guard_spec("web", dryRun=True))
    await operators.start()

    async with Leak(web).running():
        entries = await eventually(
            lambda: cluster.ledger("web", "restart", "done"),
            timeout=40,
        )
        await asyncio.sleep(2)
    assert entries[0]["dryRun"] is True
    events = cluster.events("RestartTriggered", kind="Pod")
    assert events and events[0]["message"].startswith("DRY-RUN: would restart deployment/web")
    assert cluster.requests("PATCH", "apps/v1/deployments") == []
    assert cluster.requests("POST", "v1/pods", subresource="eviction") == []
    template = cluster.deployment("web")["spec"]["template"]["metadata"]
    assert keys.RESTART_ID not in (template.get("annotations") or {})


async def test_budget_holds_across_an_operator_restart_in_the_middle_of_a_leak(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    cluster.add_guard("web", guard_spec("web"))
    first = await operators.start()

    async with Leak(web, bytes_per_second=6 * MiB).running():
        await eventually(lambda: cluster.restart_patches("web"), timeout=40)
        await first.stop()
        # The same leak goes on; a new operator with an empty memory takes over.
        await operators.start()
        blocked = await eventually(lambda: cluster.events("RestartBlocked", kind="Pod"), timeout=20)
        await asyncio.sleep(3)

    assert len(cluster.restart_patches("web")) == 1, "the budget in status held across the operator restart"
    assert "cooldown" in blocked[0]["message"] or "budget" in blocked[0]["message"]
    restarts = cluster.ledger("web", "restart")
    assert [e["state"] for e in restarts] == ["done"]


async def test_unreachable_agent_gives_degraded_and_no_action_even_on_data_that_asks_for_one(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    # The Deployment is still rolling out: the restart the leak calls for is deferred for now.
    rolling = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 0, "availableReplicas": 1}
    web = deploy(cluster, agent, "web", deployment_status=rolling)
    cluster.add_guard("web", guard_spec("web"))
    await operators.start()

    async with Leak(web, bytes_per_second=6 * MiB).running():
        deferred = await eventually(lambda: cluster.events("RestartDeferred", kind="Pod"), timeout=40)
    assert "rollout is in progress" in deferred[0]["message"]
    # The operator's history now says "restart": the agent goes away before the rollout ends.
    await agents.stop(agent)
    degraded = await eventually(lambda: cluster.condition("web", "Degraded", "True"), timeout=15)
    assert "node-a" in degraded["message"]
    done = {"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}
    response = await cluster.kmock.patch(
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/web/status",
        json=done,
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200
    await asyncio.sleep(5)
    assert cluster.restart_patches() == [], "no action for pods on a node whose agent does not answer"
    assert cluster.events("AgentsDegraded", kind="MemoryGuard")

    await agents.launch(agent)
    await eventually(lambda: cluster.condition("web", "Degraded", "False"), timeout=15)


@pytest.mark.parametrize("status", [409, 500])
async def test_injected_api_errors_are_retried_without_a_double_restart(
    cluster: Cluster, agents: Agents, operators: Operators, status: int
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    cluster.add_guard("web", guard_spec("web"))
    kmock = cluster.kmock
    # KMock stores a PATCH before it answers: the first write lands, its answer is an error.
    kmock["patch", kmock.resource("apps/v1/deployments")][:1] << status
    # A status write fails once too (a lost intent write: tests/operator/test_operator_safety.py).
    (
        kmock["patch", kmock.resource("memoryguard.io/v1alpha1/memoryguards"), kmock.subresource("status")][
            :1
        ]
        << status
    )
    await operators.start()

    async with Leak(web).running():
        await eventually(
            lambda: bool(cluster.ledger("web", "restart", "done")),
            timeout=40,
        )
        await asyncio.sleep(3)
    patches = cluster.restart_patches("web")
    assert len(patches) == 1, f"one restart patch despite the {status}: {len(patches)}"
    requests = list(kmock)
    failed_at = requests.index(patches[0])
    read_back = [
        r
        for r in requests[failed_at + 1 :]
        if r.method == "GET" and r.resource == kmock.resource("apps/v1/deployments") and r.name == "web"
    ]
    assert read_back, "the retry read the workload back after the failed patch"
    (entry,) = cluster.ledger("web", "restart")
    assert "confirmed on retry" in entry["message"], entry


async def test_bare_pod_is_evicted_and_a_disruption_budget_429_waits_with_an_event(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    batch = deploy(cluster, agent, "batch", bare=True)
    cluster.add_guard("batch", guard_spec("batch"))
    kmock = cluster.kmock
    evictions = kmock["post", kmock.resource("v1/pods"), kmock.subresource("eviction")]
    too_many = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": 429,
        "reason": "TooManyRequests",
        "message": "Cannot evict pod as it would violate the pod's disruption budget.",
    }
    evictions[:1] << 429 << {"Retry-After": "2"} << too_many
    evictions << 201 << {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}
    await operators.start()

    async with Leak(batch).running():
        blocked = await eventually(lambda: cluster.events("EvictionBlocked", kind="Pod"), timeout=40)
        assert "disruption budget" in blocked[0]["message"]
        await eventually(lambda: cluster.events("Evicted", kind="Pod"), timeout=20)

    posts = cluster.requests("POST", "v1/pods", subresource="eviction")
    assert len(posts) == 2, "one refused eviction, then one retry after the Retry-After"
    assert posts[0].name == "batch" and posts[0].data["kind"] == "Eviction"
    assert posts[0].data["deleteOptions"]["preconditions"]["uid"] == batch.pod_uid
    await eventually(
        lambda: [e["state"] for e in cluster.ledger("batch", "evict")] == ["done"],
        timeout=10,
    )
    assert cluster.restart_patches() == []
