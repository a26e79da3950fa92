"""The operator's safety rails against KMock and the real agent process: a lost intent write,
a crash between intent and action, stale agents, the cluster-wide cap on rollouts, budgets
kept apart for dry run, evictions a disruption budget never allows, status that stays exact,
and the workloads other than Deployments."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from tests.operator.conftest import NAMESPACE, Agents, Cluster, Operators, eventually
from tests.operator.scenario import Leak, deploy, guard_spec
from tests.support.cgroup_tree import MiB
from tests.support.local_server import serving

from memoryguard import annotations as keys
from memoryguard.controller.ledger import rfc3339

pytestmark = pytest.mark.slow

GUARDS = ("memoryguard.io/v1alpha1/memoryguards",)
ROLLING = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 0, "availableReplicas": 1}
ROLLED = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}


async def _set_deployment_status(cluster: Cluster, name: str, status: dict) -> None:
    response = await cluster.kmock.patch(
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}/status",
        json={"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200


def _has_restart_intent(request) -> bool:
    ledger = ((request.data or {}).get("status") or {}).get("ledger") or []
    return any(e.get("action") == "restart" and e.get("state") == "intent" for e in ledger)


async def test_a_failed_intent_write_means_no_action_that_cycle_and_one_restart_later(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    cluster.add_guard("web", guard_spec("web"))
    kmock = cluster.kmock
    status_patches = kmock["patch", kmock.resource(GUARDS[0]), kmock.subresource("status")]
    # Only the status write that carries the restart's intent fails, and only the first one.
    status_patches[_has_restart_intent][:1] << 500
    await operators.start()

    async with Leak(web).running() as leak:
        await eventually(lambda: cluster.restart_patches("web"), timeout=40)
        assert time.time() < leak.limit_reached_at()
        await asyncio.sleep(3)

    writes = cluster.requests("PATCH", GUARDS[0], subresource="status")
    intents = [r for r in writes if _has_restart_intent(r)]
    assert len(intents) >= 2, "the refused intent was decided again in a later cycle"
    first_id = next(e["id"] for e in intents[0].data["status"]["ledger"] if e["state"] == "intent")
    (patch,) = cluster.restart_patches("web")
    restart_id = patch.data["spec"]["template"]["metadata"]["annotations"][keys.RESTART_ID]
    assert restart_id != first_id, "the action whose intent was not recorded never ran"
    assert [e["id"] for e in cluster.ledger("web", "restart")] == [restart_id]


@pytest.mark.parametrize("landed", [True, False], ids=["patch landed", "died before the patch"])
async def test_an_intent_left_by_a_crashed_operator_is_settled_from_the_world_never_repeated(
    cluster: Cluster, agents: Agents, operators: Operators, landed: bool
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    asked = time.time() - 20
    restart_id = "re-1-crashed"
    status = {
        "ledger": [
            {
                "id": restart_id,
                "time": rfc3339(asked),
                "action": "restart",
                "target": "deployment/web",
                "state": "intent",
                "pod": web.pod_name,
                "container": "app",
            }
        ],
        "rateLimit": {"last": {"restart deployment/web": asked}, "restarts": [asked]},
    }
    cluster.add_guard("web", guard_spec("web"), status=status)
    if landed:
        cluster.annotate_pod_template("web", {keys.RESTART_ID: restart_id})
    await operators.start()

    async with Leak(web, bytes_per_second=6 * MiB).running():
        (entry,) = await eventually(
            lambda: [e for e in cluster.ledger("web") if e["id"] == restart_id and e["state"] != "intent"],
            timeout=20,
        )
        # The same leak asks for a restart again: the budget the crashed operator spent holds.
        blocked = await eventually(lambda: cluster.events("RestartBlocked", kind="Pod"), timeout=40)
    assert entry["state"] == ("done" if landed else "failed")
    assert ("confirmed" if landed else "not repeated") in entry["message"]
    assert "cooldown" in blocked[0]["message"]
    assert cluster.restart_patches() == []


@contextlib.asynccontextmanager
async def _lagging(agent_port: int, lag_seconds: float) -> AsyncIterator[int]:
    """A pass-through in front of the real agent that reports its clock ``lag_seconds`` ahead in
    ``/v1/pods`` answers: to the operator, every sample looks that much older (an agent whose
    sampling stopped while its server still answers). Everything else is the agent's own."""
    async with aiohttp.ClientSession() as session:

        async def forward(request: web.Request) -> web.StreamResponse:
            url = f"http://127.0.0.1:{agent_port}{request.path_qs}"
            async with session.request(request.method, url, headers=request.headers) as upstream:
                if request.path != "/v1/pods" or upstream.status != 200:
                    return web.Response(status=upstream.status, body=await upstream.read())
                answer = await upstream.json()
            answer["now_seconds"] += lag_seconds
            return web.json_response(answer)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        async with serving(app) as port:
            yield port


@pytest.mark.parametrize("lag_seconds", [30.0, 0.0], ids=["stale", "fresh-control"])
async def test_a_stale_agent_gives_degraded_and_no_action(
    cluster: Cluster, agents: Agents, operators: Operators, lag_seconds: float
) -> None:
    # 1 s sampling and enough samples for a restart: the control (no lag, same path through the
    # pass-through) restarts, so the stale run's "no restart" is the staleness rule's doing.
    agent = await agents.start("node-a")
    web_ = deploy(cluster, agent, "web")
    cluster.add_guard("web", guard_spec("web"))
    async with _lagging(agent.port, lag_seconds) as port:
        cluster.add_agent_pod("node-a", port)
        await operators.start(agent_stale_seconds=10.0)
        async with Leak(web_).running() as leak:
            if lag_seconds:
                degraded = await eventually(
                    lambda: cluster.condition("web", "Degraded", "True"),
                    timeout=20,
                )
            await asyncio.sleep(max(0.0, leak.limit_reached_at() - time.time()) + 2)
    if lag_seconds:
        assert "stale" in degraded["message"] and "node-a" in degraded["message"]
        assert cluster.restart_patches() == [], "no action on numbers older than --agent-stale-seconds"
    else:
        assert len(cluster.restart_patches()) == 1, "the same leak through the same path is restarted"
        assert cluster.condition("web", "Degraded", "True") is None


async def test_degraded_is_per_node_a_healthy_nodes_leak_is_still_restarted(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    # docs/operator.md: an unreachable or stale agent stops actions for the pods on its node only;
    # the guard says Degraded (naming the node) while its pods elsewhere stay protected.
    agent_a = await agents.start_in(cluster, "node-a")
    agent_b = await agents.start_in(cluster, "node-b")
    web_ = deploy(cluster, agent_a, "web")
    api = deploy(cluster, agent_b, "api")
    selector = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}
    cluster.add_guard("shop", guard_spec("web", selector=selector))
    await agents.stop(agent_b)
    await operators.start()

    degraded = await eventually(lambda: cluster.condition("shop", "Degraded", "True"), timeout=20)
    assert "node-b" in degraded["message"] and "node-a" not in degraded["message"], degraded
    assert cluster.guard("shop")["status"]["podsWatched"] == 2
    async with Leak(web_).running(), Leak(api).running():
        await eventually(lambda: cluster.restart_patches("web"), timeout=40)
    assert cluster.restart_patches("api") == [], "nothing is done on the unreachable node's numbers"
    assert cluster.condition("shop", "Degraded", "True") is not None


async def test_the_cluster_wide_cap_holds_a_second_restart_until_the_first_rollout_completes(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    api = deploy(cluster, agent, "api")
    cluster.add_guard("web", guard_spec("web"))
    cluster.add_guard("api", guard_spec("api"))
    await operators.start(max_concurrent_restarts=1)

    async with Leak(web).running():
        await eventually(lambda: cluster.restart_patches("web"), timeout=40)
    # KMock runs no controller: the test plays it, and web's rollout is under way.
    await _set_deployment_status(cluster, "web", ROLLING)

    async with Leak(api, bytes_per_second=4 * MiB).running():
        blocked = await eventually(
            lambda: [e for e in cluster.events("RestartBlocked", kind="Pod") if "cluster" in e["message"]],
            timeout=40,
        )
        assert "1 restarts already rolling out (max 1 at a time)" in blocked[0]["message"]
        assert cluster.restart_patches("api") == []
        await _set_deployment_status(cluster, "web", ROLLED)
        await eventually(lambda: cluster.restart_patches("api"), timeout=10)
    assert len(cluster.restart_patches("web")) == 1


async def test_dry_run_decisions_do_not_spend_the_real_budget(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    cluster.add_guard("web", guard_spec("web", dryRun=True))
    await operators.start()

    async with Leak(web, bytes_per_second=5 * MiB).running() as leak:
        await eventually(
            lambda: [e for e in cluster.ledger("web", "restart") if e.get("dryRun")],
            timeout=40,
        )
        response = await cluster.kmock.patch(
            f"/apis/memoryguard.io/v1alpha1/namespaces/{NAMESPACE}/memoryguards/web",
            json={"spec": {"dryRun": False}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert response.status == 200
        await eventually(lambda: cluster.restart_patches("web"), timeout=15)
        assert time.time() < leak.limit_reached_at()
    rate_limit = cluster.guard("web")["status"]["rateLimit"]
    assert "restart deployment/web" in rate_limit["last"]
    assert "restart deployment/web" in rate_limit["dryRun"]["last"]


async def test_expired_budget_entries_leave_the_stored_status(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    web = deploy(cluster, agent, "web")
    long_ago = time.time() - 7200
    expired = {"restart deployment/gone": long_ago, "reclaim pod/gone/app": long_ago}
    cluster.add_guard("web", guard_spec("web"), status={"rateLimit": {"last": expired}})
    await operators.start()

    async with Leak(web).running():
        await eventually(lambda: cluster.restart_patches("web"), timeout=40)
    stored = await eventually(
        lambda: (
            (last := cluster.guard("web")["status"]["rateLimit"]["last"])
            and "restart deployment/web" in last
            and last
        ),
        timeout=10,
    )
    assert set(stored) == {"restart deployment/web"}, "expired entries are deleted, not kept by the merge"


async def test_an_eviction_a_disruption_budget_never_allows_is_given_up_with_an_event(
    cluster: Cluster, agents: Agents, operators: Operators
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    batch = deploy(cluster, agent, "batch", bare=True)
    cluster.add_guard("batch", guard_spec("batch"))
    kmock = cluster.kmock
    evictions = kmock["post", kmock.resource("v1/pods"), kmock.subresource("eviction")]
    refusal = {"kind": "Status", "code": 429, "message": "Cannot evict pod: disruption budget"}
    evictions << 429 << {"Retry-After": "1"} << refusal
    await operators.start(eviction_give_up_seconds=4.0)

    async with Leak(batch).running():
        failed = await eventually(lambda: cluster.events("EvictionFailed", kind="Pod"), timeout=40)
    assert "given up" in failed[0]["message"] and "refused it" in failed[0]["message"]
    (entry,) = await eventually(
        lambda: cluster.ledger("batch", "evict", "failed"),
        timeout=10,
    )
    assert "given up" in entry["message"]
    posts = cluster.requests("POST", "v1/pods", subresource="eviction")
    assert len(posts) >= 2, "retried while the give-up time had not passed"


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
async def test_statefulset_and_daemonset_pods_get_their_own_workload_restarted(
    cluster: Cluster, agents: Agents, operators: Operators, kind: str
) -> None:
    agent = await agents.start_in(cluster, "node-a")
    db = deploy(cluster, agent, "db", owner_kind=kind)
    cluster.add_guard("db", guard_spec("db"))
    await operators.start()

    resource = f"apps/v1/{kind.lower()}s"
    async with Leak(db, bytes_per_second=6 * MiB).running() as leak:
        (patch,) = await eventually(lambda: cluster.restart_patches("db", resource=resource), timeout=40)
        assert time.time() < leak.limit_reached_at()
    annotations = patch.data["spec"]["template"]["metadata"]["annotations"]
    assert annotations[keys.KUBECTL_RESTARTED_AT].endswith("Z")
    # The outcome reaches status in the background, after the patch.
    (entry,) = await eventually(
        lambda: cluster.ledger("db", "restart", "done"),
        timeout=10,
    )
    assert entry["target"] == f"{kind.lower()}/db"
    assert cluster.restart_patches() == [], "no Deployment was touched"
