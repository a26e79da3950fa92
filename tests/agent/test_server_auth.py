"""Auth through the real server: bearer token → TokenReview → SubjectAccessReview, answered by a
local stub API server that records exactly what the agent asked."""

from __future__ import annotations

import pytest
from tests.support.agent_app import agent_app
from tests.support.cgroup_tree import CgroupTree, MiB, write_proc
from tests.support.review_stub import ACCESS_REVIEWS, TOKEN_REVIEWS, ReviewStub

from memoryguard.agent import auth

OPERATOR = "system:serviceaccount:memoryguard:memoryguard-operator"
PROMETHEUS = "system:serviceaccount:monitoring:prometheus"
NODE = "node-a"

SAMPLES = {
    "resourceAttributes": {
        "group": "memoryguard.io",
        "resource": "agents",
        "subresource": "samples",
        "verb": "get",
        "name": NODE,
    }
}
ACTIONS = {
    "resourceAttributes": {
        "group": "memoryguard.io",
        "resource": "agents",
        "subresource": "actions",
        "verb": "create",
        "name": NODE,
    }
}
METRICS = {"nonResourceAttributes": {"path": "/metrics", "verb": "get"}}


@pytest.fixture
async def stub():
    stub = ReviewStub()
    stub.add_user("operator-token", OPERATOR)
    stub.add_user("prometheus-token", PROMETHEUS)
    await stub.start()
    yield stub
    await stub.close()


@pytest.fixture
def tree(tmp_path):
    write_proc(tmp_path / "proc")
    return CgroupTree(tmp_path / "cgroup", version=2)


@pytest.fixture
def pod(tree):
    return tree.add_pod(qos="burstable", containers=1, max_bytes=256 * MiB)


@pytest.fixture
def api(stub, tmp_path):
    token_file = tmp_path / "agent-token"
    token_file.write_text(stub.agent_token)
    return auth.ApiServer(url=stub.url, token_file=token_file)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_request_without_token_is_401_and_asks_nobody(tree, pod, stub, api):
    async with agent_app(tree.root, api=api) as agent:
        agent.tick()
        resp = await agent.client.get("/v1/pods")
        body = await resp.json()
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert "error" in body
    assert stub.requests == []


@pytest.mark.parametrize("header", ["Basic b3BlcmF0b3I6eA==", "Bearer", "Bearer    ", "operator-token"])
async def test_malformed_authorization_header_is_401(tree, pod, stub, api, header):
    async with agent_app(tree.root, api=api) as agent:
        resp = await agent.client.get("/v1/pods", headers={"Authorization": header})
    assert resp.status == 401


async def test_token_the_api_server_does_not_authenticate_is_401(tree, pod, stub, api):
    async with agent_app(tree.root, api=api) as agent:
        agent.tick()
        resp = await agent.client.get("/v1/pods", headers=bearer("made-up"))
    assert resp.status == 401
    assert [r.path for r in stub.requests] == [TOKEN_REVIEWS]


async def test_denied_access_is_403_and_names_the_user(tree, pod, stub, api):
    async with agent_app(tree.root, api=api) as agent:
        agent.tick()
        resp = await agent.client.get("/v1/pods", headers=bearer("operator-token"))
        body = await resp.json()
    assert resp.status == 403
    assert OPERATOR in body["error"]


async def test_granted_samples_access_is_200(tree, pod, stub, api):
    stub.grant(OPERATOR, SAMPLES)
    async with agent_app(tree.root, api=api) as agent:
        agent.tick()
        resp = await agent.client.get("/v1/pods", params={"uid": pod.uid}, headers=bearer("operator-token"))
        body = await resp.json()
    assert resp.status == 200
    assert [p["pod_uid"] for p in body["pods"]] == [pod.uid]


async def test_granted_samples_access_reads_the_node_too(tree, pod, stub, api):
    stub.grant(OPERATOR, SAMPLES)
    async with agent_app(tree.root, api=api) as agent:
        node = await agent.client.get("/v1/node", headers=bearer("operator-token"))
        anonymous = await agent.client.get("/v1/node")
        body = await node.json()
    assert node.status == 200 and body["meminfo"]["MemTotal"] > 0
    assert anonymous.status == 401


@pytest.mark.parametrize(
    ("method", "path", "json_body", "attributes"),
    [
        ("GET", "/v1/pods", None, SAMPLES),
        ("GET", "/v1/node", None, SAMPLES),
        ("POST", "/v1/reclaim", {"pod_uid": "00000000-0000-4000-8000-000000000000", "bytes": 1}, ACTIONS),
        ("POST", "/v1/drop-caches", {"level": 1}, ACTIONS),
        ("GET", "/metrics", None, METRICS),
    ],
    ids=["pods", "node", "reclaim", "drop-caches", "metrics"],
)
async def test_access_review_sends_exactly_the_documented_attributes(
    tree, pod, stub, api, method, path, json_body, attributes
):
    async with agent_app(tree.root, api=api) as agent:
        agent.tick()
        resp = await agent.client.request(method, path, json=json_body, headers=bearer("operator-token"))
    assert resp.status == 403
    [review] = stub.reviews(ACCESS_REVIEWS)
    assert review.bearer == stub.agent_token
    assert review.body["apiVersion"] == "authorization.k8s.io/v1"
    assert review.body["kind"] == "SubjectAccessReview"
    spec = review.spec
    assert spec["user"] == OPERATOR
    assert spec["groups"] == ["system:authenticated"]
    assert {k: v for k, v in spec.items() if k.endswith("Attributes")} == attributes


async def test_samples_grant_does_not_allow_actions(tree, pod, stub, api):
    stub.grant(OPERATOR, SAMPLES)
    async with agent_app(tree.root, api=api) as agent:
        agent.tick()
        resp = await agent.client.post(
            "/v1/reclaim",
            json={"pod_uid": pod.uid, "container_id": None, "bytes": 4096},
            headers=bearer("operator-token"),
        )
    assert resp.status == 403
    assert (tree.path(pod.uid) / "memory.reclaim").read_text() == ""


async def test_granted_actions_reclaim(tree, pod, stub, api):
    stub.grant(OPERATOR, ACTIONS)
    async with agent_app(tree.root, api=api) as agent:
        agent.tick()
        resp = await agent.client.post(
            "/v1/reclaim",
            json={"pod_uid": pod.uid, "container_id": None, "bytes": 4096},
            headers=bearer("operator-token"),
        )
    assert resp.status == 200
    assert (tree.path(pod.uid) / "memory.reclaim").read_text() == "4096"


async def test_metrics_grant_reads_metrics_only(tree, pod, stub, api):
    stub.grant(PROMETHEUS, METRICS)
    async with agent_app(tree.root, api=api) as agent:
        agent.tick()
        metrics = await agent.client.get("/metrics", headers=bearer("prometheus-token"))
        pods = await agent.client.get("/v1/pods", headers=bearer("prometheus-token"))
        node = await agent.client.get("/v1/node", headers=bearer("prometheus-token"))
    assert metrics.status == 200
    assert pods.status == 403 and node.status == 403


async def test_validation_happens_only_after_authorization(tree, pod, stub, api):
    # An unauthorized caller learns nothing about what the agent would accept.
    async with agent_app(tree.root, api=api) as agent:
        unauthenticated = await agent.client.post("/v1/reclaim", json={"pod_uid": "../etc"})
        denied = await agent.client.post(
            "/v1/reclaim", json={"pod_uid": "../etc"}, headers=bearer("operator-token")
        )
    assert unauthenticated.status == 401
    assert denied.status == 403


async def test_bad_ids_are_400_for_an_authorized_caller(tree, pod, stub, api):
    stub.grant(OPERATOR, ACTIONS)
    stub.grant(OPERATOR, SAMPLES)
    async with agent_app(tree.root, api=api) as agent:
        agent.tick()
        reclaim = await agent.client.post(
            "/v1/reclaim", json={"pod_uid": "../etc", "bytes": 1}, headers=bearer("operator-token")
        )
        pods = await agent.client.get("/v1/pods", params={"uid": "x"}, headers=bearer("operator-token"))
        reclaim_body, pods_body = await reclaim.json(), await pods.json()
    assert reclaim.status == 400 and reclaim_body["field"] == "pod_uid"
    assert pods.status == 400 and pods_body["field"] == "uid"


async def test_repeated_requests_are_answered_from_the_cache(tree, pod, stub, api):
    stub.grant(OPERATOR, SAMPLES)
    async with agent_app(tree.root, api=api) as agent:
        agent.tick()
        statuses = [
            (await agent.client.get("/v1/pods", headers=bearer("operator-token"))).status for _ in range(5)
        ]
        reviews = agent.metrics.registry.get_sample_value
        posted_token = reviews("memoryguard_agent_auth_reviews_total", {"kind": "token", "outcome": "ok"})
        allowed = reviews("memoryguard_agent_auth_decisions_total", {"result": "allowed"})
    assert statuses == [200] * 5
    assert [r.path for r in stub.requests] == [TOKEN_REVIEWS, ACCESS_REVIEWS]
    assert posted_token == 1
    assert allowed == 5


@pytest.mark.parametrize("failure", ["down", "error", "hang"])
async def test_api_server_unavailable_is_503_never_200(tree, pod, stub, api, failure):
    stub.grant(OPERATOR, SAMPLES)
    async with agent_app(tree.root, api=api, review_timeout_seconds=1.0) as agent:
        agent.tick()
        if failure == "down":
            await stub.close()
        else:
            stub.mode = failure
        resp = await agent.client.get("/v1/pods", headers=bearer("operator-token"))
        body = await resp.json()
        unavailable = agent.metrics.registry.get_sample_value(
            "memoryguard_agent_auth_decisions_total", {"result": "unavailable"}
        )
    assert resp.status == 503
    assert "API server" in body["error"]
    assert unavailable == 1


async def test_healthz_needs_no_token_even_with_auth_on(tree, pod, stub, api):
    async with agent_app(tree.root, api=api) as agent:
        agent.tick()
        resp = await agent.client.get("/healthz")
    assert resp.status == 200
    assert stub.requests == []
