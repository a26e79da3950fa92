"""The cluster the `kubectl memoryguard` tests run against: KMock as the API server, the real
`memoryguard agent` process over a fixture cgroup tree, and the review stub that answers the
agent's TokenReviews and SubjectAccessReviews.

``env`` gives the real kubectl (.tools/bin) a kubeconfig whose user has a bearer token,
and runs the plugin through it (`kubectl memoryguard …`), as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from tests.chart.kube import ROOT, tool
from tests.support.cgroup_tree import CgroupTree, MiB, write_proc
from tests.support.review_stub import ReviewStub

from memoryguard.commands.kubectl_plugin import Kubectl

NODE = "node-a"
USER = "alice"
USER_TOKEN = "alice-token"
AGENT_NAMESPACE = "memoryguard"  # the plugin's default --agent-namespace, and the chart's in deploy/
AGENT_LABELS = {"app.kubernetes.io/name": "memoryguard", "app.kubernetes.io/component": "agent"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_core_discovery(kmock: Any) -> None:
    """Let kubectl's discovery map `pod/NAME` (port-forward needs it; `get --raw` does not).

    KMock 0.8 lists the core group's resources under ``"groupVersion": "/v1"``, where an API
    server says ``"v1"``; kubectl then knows no core kind ('the server doesn't have a resource
    type "pod"'). Serve KMock's own list with that one field as the API server has it.
    """
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{str(kmock.url).rstrip('/')}/api/v1") as response,
    ):
        core = await response.json(content_type=None)
    assert core["groupVersion"] in ("/v1", "v1"), core["groupVersion"]
    core["groupVersion"] = "v1"
    kmock["get /api/v1"] << core


def agent_pod(
    node: str,
    *,
    name: str | None = None,
    namespace: str = AGENT_NAMESPACE,
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    deleting: bool = False,
    port: int | None = 9732,
) -> dict[str, Any]:
    """An agent pod as the chart's DaemonSet makes it (labels, the named port `api`)."""
    meta: dict[str, Any] = {
        "name": name or f"memoryguard-agent-{node}",
        "namespace": namespace,
        "uid": f"uid-{name or node}",
        "labels": dict(AGENT_LABELS if labels is None else labels),
    }
    if deleting:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    ports = [{"name": "api", "containerPort": port}] if port is not None else []
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "x", "ports": ports}]},
        "status": {"phase": phase},
    }


@dataclass
class KubeRequest:
    """One request KMock answered, as the RBAC of a real API server would see it."""

    method: str
    path: str
    query: dict[str, str]
    upgrade: str | None  # "websocket", "SPDY/3.1": a streaming upgrade (port-forward)


class PluginEnv:
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
                    "users": [{"name": USER, "user": {"token": USER_TOKEN}}],
                    "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": USER}}],
                    "current-context": "kmock",
                }
            )
        )

    def guarded_pod(
        self,
        name: str,
        *,
        anon_bytes: int = 100 * MiB,
        file_bytes: int = 10 * MiB,
        limit_bytes: int = 256 * MiB,
    ) -> tuple[str, str]:
        """A pod of namespace `shop` on NODE: its cgroup in the agent's tree, its object in KMock."""
        pod = self.tree.add_pod(qos="burstable", containers=1, max_bytes=limit_bytes)
        cid = pod.containers[-1]
        self.tree.set(pod.uid, cid, anon_bytes=anon_bytes, file_bytes=file_bytes, max_bytes=limit_bytes)
        self.kmock.objects["v1/pods", "shop", name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "uid": pod.uid, "labels": {"app": "web"}},
            "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "x"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "app",
                        "containerID": f"containerd://{cid}",
                        "ready": True,
                        "restartCount": 0,
                        "image": "x",
                    }
                ],
            },
        }
        return pod.uid, cid

    @property
    def env(self) -> dict[str, str]:
        """The venv's bin first (kubectl finds kubectl-memoryguard there), then the kubectl this
        test runs (the plugin runs that one too)."""
        path = os.pathsep.join([str(Path(sys.executable).parent), str(Path(tool("kubectl")).parent)])
        return dict(os.environ, PATH=f"{path}{os.pathsep}{os.environ.get('PATH', '')}")

    def kubectl_client(self) -> Kubectl:
        """The plugin's own kubectl runner, on this cluster (for its functions called directly)."""
        return Kubectl(binary=tool("kubectl"), kubeconfig=str(self.kubeconfig))

    async def kubectl(self, *args: str) -> tuple[int, str, str]:
        """The real kubectl; `kubectl memoryguard` runs the plugin from the venv."""
        process = await asyncio.create_subprocess_exec(
            tool("kubectl"),
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def plugin(self, *args: str, through_agent_url: bool = True) -> tuple[int, str, str]:
        """`kubectl memoryguard ARGS`; by default to the agent process directly (--agent-url),
        else the plugin's own way: find the agent pod on the node and port-forward to it."""
        extra = ["--agent-url", self.agent_url] if through_agent_url else []
        return await self.kubectl("memoryguard", *args, "--kubeconfig", str(self.kubeconfig), *extra)

    def requests(self) -> list[KubeRequest]:
        return [
            KubeRequest(
                method=r.method.value,
                path=r.url.path,
                query=dict(r.params),
                upgrade=r.headers.get("Upgrade"),
            )
            for r in list(self.kmock)
        ]

    def resource_requests(self) -> list[KubeRequest]:
        """Requests to namespaced resources (kubectl's discovery left out)."""
        return [r for r in self.requests() if "/namespaces/" in r.path]


@pytest.fixture(autouse=True)
def _kubectl_cache_in_the_test_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kubectl caches discovery per server address; KMock's change with every test."""
    monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "kube-cache"))


@pytest.fixture
async def env(tmp_path: Path, kmock: Any) -> AsyncIterator[PluginEnv]:
    kmock.resources.load_bundled()
    await serve_core_discovery(kmock)
    tree = CgroupTree(tmp_path / "cgroup", version=2)
    proc = write_proc(tmp_path / "proc")
    stub = ReviewStub()
    stub.add_user(USER_TOKEN, USER)
    await stub.start()
    token_file = tmp_path / "agent-token"
    token_file.write_text(stub.agent_token)
    port = free_port()
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
        yield PluginEnv(tmp_path, kmock, stub, url, tree)
    finally:
        if agent.returncode is None:
            agent.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(agent.wait(), timeout=10)
        await stub.close()
        log.close()
