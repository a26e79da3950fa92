"""`kubectl memoryguard top|explain`, run by the real kubectl, against KMock and a real agent.

- real `kubectl` (.tools/bin) finds the `kubectl-memoryguard` executable on PATH and runs it;
- the plugin reads pods through kubectl from KMock (the API server), with a kubeconfig whose
  user has a bearer token;
- the real `memoryguard agent` process serves a fixture cgroup tree and authenticates the
  plugin's call with TokenReview + SubjectAccessReview against the review stub: the token the
  agent sees is the user's own, and the review asks exactly for agents/samples on the node.

Not covered without a cluster: the `kubectl port-forward` tunnel itself (KMock has no
kubelet), so the tests pass --agent-url; the parsing of port-forward's output is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from tests.chart.kube import ROOT, tool
from tests.support.cgroup_tree import CgroupTree, MiB, write_proc
from tests.support.review_stub import ACCESS_REVIEWS, TOKEN_REVIEWS, ReviewStub

from memoryguard.agent import auth
from memoryguard.commands.explain import HEADLINES
from memoryguard.commands.kubectl_plugin import forwarded_port
from memoryguard.engine import Verdict

NODE = "node-a"
USER_TOKEN = "alice-token"
LIMIT = 256 * MiB


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pod(
    name: str, namespace: str, uid: str, node: str, labels: dict[str, str], containers: dict[str, str]
) -> dict:
    statuses = [
        {"name": c, "containerID": f"containerd://{cid}", "ready": True, "restartCount": 0, "image": "x"}
        for c, cid in containers.items()
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": c, "image": "x"} for c in containers]},
        "status": {"phase": "Running", "containerStatuses": statuses},
    }


class Setup:
    def __init__(
        self, tmp_path: Path, kmock: Any, stub: ReviewStub, agent_url: str, tree: CgroupTree
    ) -> None:
        self.tmp_path = tmp_path
        self.kmock = kmock
        self.stub = stub
        self.agent_url = agent_url
        self.tree = tree
        self.kubeconfig = tmp_path / "kubeconfig"
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                    "users": [{"name": "alice", "user": {"token": USER_TOKEN}}],
                    "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "alice"}}],
                    "current-context": "kmock",
                }
            )
        )

    async def kubectl(self, *args: str) -> tuple[int, str, str]:
        """The real kubectl, with the venv's bin on PATH so it finds kubectl-memoryguard."""
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        process = await asyncio.create_subprocess_exec(
            tool("kubectl"), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def plugin(self, *args: str) -> tuple[int, str, str]:
        return await self.kubectl(
            "memoryguard", *args, "--kubeconfig", str(self.kubeconfig), "--agent-url", self.agent_url
        )


@pytest.fixture
async def setup(tmp_path: Path, kmock: Any) -> AsyncIterator[Setup]:
    kmock.resources.load_bundled()
    tree = CgroupTree(tmp_path / "cgroup", version=2)
    proc = write_proc(tmp_path / "proc")
    stub = ReviewStub()
    stub.add_user(USER_TOKEN, "alice")
    await stub.start()
    token_file = tmp_path / "agent-token"
    token_file.write_text(stub.agent_token)
    port = _free_port()
    log = (tmp_path / "agent.log").open("ab")
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "memoryguard.cli", "agent", "--root", str(tree.root), "--proc-root", str(proc),
        "--listen", f"127.0.0.1:{port}", "--node-name", NODE, "--interval", "200ms",
        "--api-server", stub.url, "--api-token-file", str(token_file),
        stdout=log, stderr=log, cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                if agent.returncode is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("agent did not come up: " + (tmp_path / "agent.log").read_text()[-2000:])
        assert agent.returncode is None, (tmp_path / "agent.log").read_text()[-2000:]
        yield Setup(tmp_path, kmock, stub, url, tree)
    finally:
        if agent.returncode is None:
            agent.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(agent.wait(), timeout=10)
        await stub.close()
        log.close()


def _guarded_pod(setup: Setup, name: str, *, anon: int, file: int) -> tuple[str, str]:
    pod = setup.tree.add_pod(qos="burstable", containers=1, max_bytes=LIMIT)
    cid = pod.containers[-1]
    setup.tree.set(pod.uid, cid, anon_bytes=anon, file_bytes=file, max_bytes=LIMIT)
    setup.kmock.objects["v1/pods", "shop", name] = _pod(
        name, "shop", pod.uid, NODE, {"app": "web"}, {"app": cid}
    )
    return pod.uid, cid


async def _wait_sampled(setup: Setup) -> None:
    await asyncio.sleep(0.6)  # three agent ticks


async def test_top_shows_anon_file_and_limit_of_each_container_through_kubectl(setup: Setup) -> None:
    setup.stub.grant("alice", auth.samples_access(NODE).to_review())
    _guarded_pod(setup, "web-1", anon=150 * MiB, file=40 * MiB)
    await _wait_sampled(setup)
    code, out, err = await setup.plugin("top", "web-1", "-n", "shop")
    assert code == 0, err
    print(out)
    header, row = out.strip().splitlines()
    # The names kubectl knows, then the columns of `memoryguard top` (one table for both).
    assert header.split()[:8] == ["NAMESPACE", "POD", "CONTAINER", "ANON", "FILE", "WSET", "LIMIT", "%LIMIT"]
    cells = row.split()
    assert cells[:7] == ["shop", "web-1", "app", "150Mi", "40.0Mi", cells[5], "256Mi"]
    # The sandbox (pause) container is not in the pod's status, so it is not listed.
    assert len(out.strip().splitlines()) == 2


async def test_the_agent_authorizes_the_users_own_token_for_samples_on_that_node(setup: Setup) -> None:
    setup.stub.grant("alice", auth.samples_access(NODE).to_review())
    _guarded_pod(setup, "web-1", anon=100 * MiB, file=10 * MiB)
    await _wait_sampled(setup)
    code, _, err = await setup.plugin("top", "web-1", "-n", "shop")
    assert code == 0, err
    (token_review,) = setup.stub.reviews(TOKEN_REVIEWS)
    assert token_review.spec["token"] == USER_TOKEN
    (access,) = setup.stub.reviews(ACCESS_REVIEWS)
    assert access.spec["user"] == "alice"
    assert access.spec["resourceAttributes"] == auth.samples_access(NODE).to_review()["resourceAttributes"]


async def test_a_user_without_the_samples_grant_gets_a_clear_refusal(setup: Setup) -> None:
    _guarded_pod(setup, "web-1", anon=100 * MiB, file=10 * MiB)
    code, _, err = await setup.plugin("top", "web-1", "-n", "shop")
    assert code == 1
    assert "403" in err and "agents/samples" in err


async def test_explain_gives_the_seed_breakdown_and_a_verdict(setup: Setup) -> None:
    setup.stub.grant("alice", auth.samples_access(NODE).to_review())
    _guarded_pod(setup, "cache-1", anon=30 * MiB, file=200 * MiB)
    await _wait_sampled(setup)
    code, out, err = await setup.plugin("explain", "cache-1", "-n", "shop")
    assert code == 0, err
    for section in (
        "=== USAGE ===",
        "=== SWAP ===",
        "=== BREAKDOWN ===",
        "=== EVENTS ===",
        "=== MEMORY.HIGH ===",
    ):
        assert section in out
    assert "anon" in out and "200.00 MiB" in out  # memory.stat file, as seed 000's awk prints it
    print(out)
    # The engine's verdict in `memoryguard explain`'s words: page cache is never called a leak.
    headline = out.split("=== VERDICT ===")[1].strip().splitlines()[0]
    calm = (Verdict.INSUFFICIENT_DATA, Verdict.HEALTHY, Verdict.BOUNDED, Verdict.PAGE_CACHE_PRESSURE)
    assert headline in {HEADLINES[v] for v in calm}


async def test_a_pod_missing_from_the_cluster_is_reported_by_kubectl(setup: Setup) -> None:
    code, _, err = await setup.plugin("top", "nope-" + uuid.uuid4().hex[:6], "-n", "shop")
    assert code == 1 and "error:" in err


async def test_kubectl_lists_the_plugin(setup: Setup) -> None:
    code, out, err = await setup.kubectl("plugin", "list")
    assert code == 0, err
    assert "kubectl-memoryguard" in out


@pytest.mark.parametrize(
    "line,port",
    [
        ("Forwarding from 127.0.0.1:41235 -> 9732\n", 41235),
        ("Forwarding from [::1]:41235 -> 9732\n", None),
        ("Handling connection for 41235\n", None),
    ],
)
def test_port_forward_output_gives_the_local_port(line: str, port: int | None) -> None:
    assert forwarded_port(line) == port


async def test_service_account_token_is_minted_with_kubectl_and_presented_to_the_agent(setup: Setup) -> None:
    kmock = setup.kmock
    requests = kmock["post", kmock.resource("v1/serviceaccounts"), kmock.subresource("token")]
    requests << {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": []},
        "status": {"token": "minted-plugin-token", "expirationTimestamp": "2030-01-01T00:00:00Z"},
    }
    plugin_user = "system:serviceaccount:memoryguard:memoryguard-plugin"
    setup.stub.add_user("minted-plugin-token", plugin_user)
    setup.stub.grant(plugin_user, auth.samples_access(NODE).to_review())
    _guarded_pod(setup, "web-1", anon=100 * MiB, file=10 * MiB)
    await _wait_sampled(setup)
    code, out, err = await setup.plugin(
        "top", "web-1", "-n", "shop", "--service-account", "memoryguard/memoryguard-plugin"
    )
    assert code == 0, err
    assert "web-1" in out
    (token_review,) = setup.stub.reviews(TOKEN_REVIEWS)
    assert token_review.spec["token"] == "minted-plugin-token"
    assert len(requests) == 1
    assert "/namespaces/memoryguard/serviceaccounts/memoryguard-plugin/token" in str(requests[0].url)


async def test_a_kubeconfig_without_a_token_is_told_to_use_a_service_account(setup: Setup) -> None:
    config = yaml.safe_load(setup.kubeconfig.read_text())
    config["users"][0]["user"] = {}
    setup.kubeconfig.write_text(yaml.safe_dump(config))
    _guarded_pod(setup, "web-1", anon=100 * MiB, file=10 * MiB)
    code, _, err = await setup.plugin("top", "web-1", "-n", "shop")
    assert code == 1 and "--service-account" in err
