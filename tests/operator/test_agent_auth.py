"""The operator authenticates to agents that check it, as the kubelet checks its callers:
its ServiceAccount token, reviewed by the agent with TokenReview and SubjectAccessReview."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.operator.conftest import Agents, Cluster, Operators, eventually
from tests.operator.scenario import Leak, deploy, guard_spec
from tests.support.review_stub import ACCESS_REVIEWS, TOKEN_REVIEWS, ReviewStub

pytestmark = pytest.mark.slow

OPERATOR_USER = "system:serviceaccount:memoryguard-system:memoryguard-operator"


@pytest.fixture
async def reviews() -> AsyncIterator[ReviewStub]:
    stub = ReviewStub()
    await stub.start()
    try:
        yield stub
    finally:
        await stub.close()


def _agent_auth(stub: ReviewStub, tmp_path: Path) -> tuple[str, ...]:
    token_file = tmp_path / "agent-token"
    token_file.write_text(stub.agent_token)
    return ("--api-server", stub.url, "--api-token-file", str(token_file))


def _grant_operator(stub: ReviewStub, node: str) -> None:
    stub.add_user("operator-token", OPERATOR_USER)
    for subresource, verb in (("samples", "get"), ("actions", "create")):
        stub.grant(
            OPERATOR_USER,
            {
                "resourceAttributes": {
                    "group": "memoryguard.io",
                    "resource": "agents",
                    "subresource": subresource,
                    "verb": verb,
                    "name": node,
                }
            },
        )


async def test_operator_token_is_reviewed_by_the_agent_and_the_restart_goes_through(
    cluster: Cluster, agents: Agents, operators: Operators, reviews: ReviewStub, tmp_path: Path
) -> None:
    _grant_operator(reviews, "node-a")
    agent = await agents.start_in(cluster, "node-a", auth=_agent_auth(reviews, tmp_path))
    web = deploy(cluster, agent, "web")
    cluster.add_guard("web", guard_spec("web"))
    token_file = tmp_path / "operator-token"
    token_file.write_text("operator-token\n")
    await operators.start(token_file=token_file)

    async with Leak(web).running():
        await eventually(lambda: cluster.restart_patches("web"), timeout=40)

    token_reviews = reviews.reviews(TOKEN_REVIEWS)
    assert token_reviews and {r.spec["token"] for r in token_reviews} == {"operator-token"}
    access = [r.spec.get("resourceAttributes", {}) for r in reviews.reviews(ACCESS_REVIEWS)]
    assert {
        "group": "memoryguard.io",
        "resource": "agents",
        "subresource": "samples",
        "verb": "get",
        "name": "node-a",
    }.items() <= access[0].items()
    assert all(r.spec.get("user") == OPERATOR_USER for r in reviews.reviews(ACCESS_REVIEWS))


async def test_a_token_the_agent_rejects_makes_the_guard_degraded_and_does_nothing(
    cluster: Cluster, agents: Agents, operators: Operators, reviews: ReviewStub, tmp_path: Path
) -> None:
    _grant_operator(reviews, "node-a")
    agent = await agents.start_in(cluster, "node-a", auth=_agent_auth(reviews, tmp_path))
    web = deploy(cluster, agent, "web")
    cluster.add_guard("web", guard_spec("web"))
    token_file = tmp_path / "operator-token"
    token_file.write_text("stolen-or-expired-token")
    await operators.start(token_file=token_file)

    async with Leak(web).running():
        condition = await eventually(
            lambda: cluster.condition("web", "Degraded", "True"),
            timeout=20,
        )
    assert "401" in condition["message"]
    assert cluster.restart_patches() == []
