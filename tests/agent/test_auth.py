"""The Authorizer against a real HTTP review stub: what it posts, what it caches, how it fails."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess

import pytest
from tests.support.review_stub import ACCESS_REVIEWS, TOKEN_REVIEWS, ReviewStub

from memoryguard.agent import auth

OPERATOR = "system:serviceaccount:memoryguard:operator"


@pytest.fixture
async def stub():
    stub = ReviewStub()
    stub.add_user("operator-token", OPERATOR, groups=("system:serviceaccounts", "system:authenticated"))
    await stub.start()
    yield stub
    await stub.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


def authorizer_for(
    stub: ReviewStub, tmp_path, clock, *, timeout_seconds: float = 5.0, **kwargs
) -> auth.Authorizer:
    token_file = tmp_path / "token"
    token_file.write_text(stub.agent_token + "\n")
    api = auth.ApiServer(url=stub.url, token_file=token_file)
    return auth.Authorizer(auth.Reviewer(api, timeout_seconds=timeout_seconds), clock=clock, **kwargs)


async def test_missing_token_is_unauthenticated_without_asking_the_api_server(stub, tmp_path, clock):
    authorizer = authorizer_for(stub, tmp_path, clock)
    decision = await authorizer.decide(None, auth.samples_access("node-a"))
    await authorizer.close()
    assert decision.outcome is auth.Outcome.UNAUTHENTICATED
    assert stub.requests == []


async def test_unknown_token_is_unauthenticated_and_no_access_review_is_made(stub, tmp_path, clock):
    authorizer = authorizer_for(stub, tmp_path, clock)
    decision = await authorizer.decide("stolen-token", auth.samples_access("node-a"))
    await authorizer.close()
    assert decision.outcome is auth.Outcome.UNAUTHENTICATED
    assert [r.path for r in stub.requests] == [TOKEN_REVIEWS]
    assert stub.requests[0].spec == {"token": "stolen-token"}


async def test_reviews_are_posted_with_the_agents_own_token(stub, tmp_path, clock):
    authorizer = authorizer_for(stub, tmp_path, clock)
    await authorizer.decide("operator-token", auth.samples_access("node-a"))
    await authorizer.close()
    assert [r.bearer for r in stub.requests] == [stub.agent_token, stub.agent_token]


async def test_access_review_carries_the_user_and_exactly_the_documented_attributes(stub, tmp_path, clock):
    authorizer = authorizer_for(stub, tmp_path, clock)
    await authorizer.decide("operator-token", auth.actions_access("node-a"))
    await authorizer.decide("operator-token", auth.metrics_access())
    await authorizer.close()
    specs = [r.spec for r in stub.reviews(ACCESS_REVIEWS)]
    assert specs == [
        {
            "user": OPERATOR,
            "uid": f"uid-{OPERATOR}",
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "group": "memoryguard.io",
                "resource": "agents",
                "subresource": "actions",
                "verb": "create",
                "name": "node-a",
            },
        },
        {
            "user": OPERATOR,
            "uid": f"uid-{OPERATOR}",
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "nonResourceAttributes": {"path": "/metrics", "verb": "get"},
        },
    ]


async def test_granted_access_is_allowed_and_another_subresource_is_denied(stub, tmp_path, clock):
    stub.grant(OPERATOR, auth.samples_access("node-a").to_review())
    authorizer = authorizer_for(stub, tmp_path, clock)
    samples = await authorizer.decide("operator-token", auth.samples_access("node-a"))
    actions = await authorizer.decide("operator-token", auth.actions_access("node-a"))
    other_node = await authorizer.decide("operator-token", auth.samples_access("node-b"))
    await authorizer.close()
    assert samples.outcome is auth.Outcome.ALLOWED
    assert actions.outcome is auth.Outcome.DENIED
    assert other_node.outcome is auth.Outcome.DENIED
    assert actions.user == OPERATOR


async def test_allowed_answers_are_cached_for_a_minute(stub, tmp_path, clock):
    stub.grant(OPERATOR, auth.samples_access("node-a").to_review())
    authorizer = authorizer_for(stub, tmp_path, clock)
    for _ in range(5):
        assert (await authorizer.decide("operator-token", auth.samples_access("node-a"))).allowed
    assert len(stub.requests) == 2
    clock.now += 59
    assert (await authorizer.decide("operator-token", auth.samples_access("node-a"))).allowed
    assert len(stub.requests) == 2
    clock.now += 2
    assert (await authorizer.decide("operator-token", auth.samples_access("node-a"))).allowed
    await authorizer.close()
    assert len(stub.requests) == 4


async def test_denied_answers_expire_sooner_so_a_new_grant_takes_effect(stub, tmp_path, clock):
    authorizer = authorizer_for(stub, tmp_path, clock)
    assert not (await authorizer.decide("operator-token", auth.samples_access("node-a"))).allowed
    stub.grant(OPERATOR, auth.samples_access("node-a").to_review())
    clock.now += 5
    assert not (await authorizer.decide("operator-token", auth.samples_access("node-a"))).allowed
    clock.now += 6
    decision = await authorizer.decide("operator-token", auth.samples_access("node-a"))
    await authorizer.close()
    assert decision.allowed


async def test_concurrent_identical_requests_share_one_review(stub, tmp_path, clock):
    stub.grant(OPERATOR, auth.samples_access("node-a").to_review())
    authorizer = authorizer_for(stub, tmp_path, clock)
    decisions = await asyncio.gather(
        *(authorizer.decide("operator-token", auth.samples_access("node-a")) for _ in range(20))
    )
    await authorizer.close()
    assert all(d.allowed for d in decisions)
    assert [r.path for r in stub.requests] == [TOKEN_REVIEWS, ACCESS_REVIEWS]


async def test_cache_is_bounded_and_evicts_the_least_recently_used(stub, tmp_path, clock):
    for i in range(3):
        stub.add_user(f"token-{i}", f"user-{i}")
    authorizer = authorizer_for(stub, tmp_path, clock, max_entries=2)
    for i in range(3):
        await authorizer.decide(f"token-{i}", auth.metrics_access())
    reviews_before = len(stub.reviews(TOKEN_REVIEWS))
    await authorizer.decide("token-2", auth.metrics_access())  # still cached
    await authorizer.decide("token-0", auth.metrics_access())  # evicted: reviewed again
    await authorizer.close()
    assert len(stub.reviews(TOKEN_REVIEWS)) == reviews_before + 1


@pytest.mark.parametrize("mode", ["error", "hang"])
async def test_api_server_failure_raises_unavailable_never_allows(stub, tmp_path, clock, mode):
    stub.grant(OPERATOR, auth.samples_access("node-a").to_review())
    stub.mode = mode
    authorizer = authorizer_for(stub, tmp_path, clock, timeout_seconds=0.3)
    with pytest.raises(auth.ReviewUnavailable):
        await authorizer.decide("operator-token", auth.samples_access("node-a"))
    # The failure is not cached: once the API server answers again, so does the agent.
    stub.mode = "ok"
    decision = await authorizer.decide("operator-token", auth.samples_access("node-a"))
    await authorizer.close()
    assert decision.allowed


async def test_api_server_down_raises_unavailable(stub, tmp_path, clock):
    authorizer = authorizer_for(stub, tmp_path, clock)
    await stub.close()
    with pytest.raises(auth.ReviewUnavailable):
        await authorizer.decide("operator-token", auth.samples_access("node-a"))
    await authorizer.close()


async def test_agent_token_rejected_by_the_api_server_is_unavailable_not_unauthenticated(
    stub, tmp_path, clock
):
    # The caller's token may be fine: it is the agent that cannot ask, so the answer is 503, not 401.
    authorizer = authorizer_for(stub, tmp_path, clock)
    (tmp_path / "token").write_text("expired-agent-token")
    with pytest.raises(auth.ReviewUnavailable, match="401"):
        await authorizer.decide("operator-token", auth.samples_access("node-a"))
    await authorizer.close()


async def test_rotated_agent_token_is_picked_up_without_restart(stub, tmp_path, clock):
    authorizer = authorizer_for(stub, tmp_path, clock)
    stub.agent_token = "rotated"
    (tmp_path / "token").write_text("rotated")
    decision = await authorizer.decide("operator-token", auth.metrics_access())
    await authorizer.close()
    assert decision.outcome is auth.Outcome.DENIED  # answered (denied for lack of grant), not unavailable


def test_in_cluster_config_comes_from_the_service_environment(tmp_path):
    api = auth.ApiServer.in_cluster(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path
    )
    assert api.url == "https://[fd00::1]:443"
    assert api.token_file == tmp_path / "token"
    assert api.ca_file == tmp_path / "ca.crt"


def test_in_cluster_config_outside_a_cluster_names_the_flags_to_use():
    with pytest.raises(auth.ConfigError, match="--api-server"):
        auth.ApiServer.in_cluster({})


@pytest.fixture
def server_cert(tmp_path):
    """A self-signed certificate for 127.0.0.1 (its own CA), made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not found (Debian package openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return cert, context


@pytest.fixture
async def tls_stub(server_cert):
    stub = ReviewStub()
    stub.add_user("operator-token", OPERATOR)
    await stub.start(ssl_context=server_cert[1])
    yield stub
    await stub.close()


def _tls_authorizer(stub, tmp_path, clock, **api):
    token_file = tmp_path / "token"
    token_file.write_text(stub.agent_token)
    return auth.Authorizer(
        auth.Reviewer(auth.ApiServer(url=stub.url, token_file=token_file, **api)), clock=clock
    )


async def test_reviews_over_tls_trust_the_given_ca(tls_stub, server_cert, tmp_path, clock):
    authorizer = _tls_authorizer(tls_stub, tmp_path, clock, ca_file=server_cert[0])
    decision = await authorizer.decide("operator-token", auth.metrics_access())
    await authorizer.close()
    assert decision.outcome is auth.Outcome.DENIED  # answered over TLS
    assert tls_stub.url.startswith("https://")


async def test_reviews_over_tls_refuse_an_unknown_certificate(tls_stub, tmp_path, clock):
    authorizer = _tls_authorizer(tls_stub, tmp_path, clock)  # system trust store only
    with pytest.raises(auth.ReviewUnavailable, match="certificate"):
        await authorizer.decide("operator-token", auth.metrics_access())
    await authorizer.close()
    assert tls_stub.requests == []


async def test_reviews_over_tls_without_verification_when_told(tls_stub, tmp_path, clock):
    authorizer = _tls_authorizer(tls_stub, tmp_path, clock, insecure=True)
    decision = await authorizer.decide("operator-token", auth.metrics_access())
    await authorizer.close()
    assert decision.outcome is auth.Outcome.DENIED


def test_missing_ca_file_is_a_configuration_error(tmp_path):
    api = auth.ApiServer(
        url="https://127.0.0.1:6443", token_file=tmp_path / "token", ca_file=tmp_path / "none.crt"
    )
    with pytest.raises(auth.ConfigError, match="api-ca-file"):
        auth.Reviewer(api)
