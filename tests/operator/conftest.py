"""The operator against KMock (the API server) and the real agent process (over HTTP).

``cluster`` declares the resources and offers builders for Deployments, pods, agent pods and
MemoryGuards in KMock; ``agents`` launches ``memoryguard agent`` processes, each serving its
own fixture cgroup tree as one node; ``operator`` runs ``memoryguard operator`` in this event
loop (KMock serves on it too, so everything in these tests is async).
"""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
from tests.support.agent_process import AgentProcess
from tests.support.cgroup_tree import CgroupTree, MiB, write_proc

from memoryguard.controller.main import run_operator
from memoryguard.controller.metrics import OperatorMetrics
from memoryguard.controller.settings import OperatorConfig

NAMESPACE = "shop"
GUARDS = "memoryguard.io/v1alpha1/memoryguards"
AGENT_LABELS = {"app.kubernetes.io/name": "memoryguard", "app.kubernetes.io/component": "agent"}
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the API server ----------------------------------------------------------------------------


@dataclass
class Cluster:
    kmock: Any
    _rv: int = 100

    def _meta(self, name: str, namespace: str = NAMESPACE, **extra: Any) -> dict[str, Any]:
        # KMock assigns no resourceVersion, uid or generation: Kopf's finalizer patch needs the first.
        self._rv += 1
        return {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(self._rv),
            **extra,
        }

    def add_guard(
        self,
        name: str,
        spec: dict[str, Any],
        namespace: str = NAMESPACE,
        *,
        status: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A MemoryGuard; ``status`` as a previous operator left it."""
        body = {
            "apiVersion": "memoryguard.io/v1alpha1",
            "kind": "MemoryGuard",
            "metadata": self._meta(name, namespace, generation=1),
            "spec": spec,
        }
        if status is not None:
            body["status"] = status
        self.kmock.objects[GUARDS, namespace, name] = body
        return body

    def add_deployment(
        self,
        name: str,
        labels: dict[str, str],
        *,
        replicas: int = 1,
        status: dict[str, Any] | None = None,
        namespace: str = NAMESPACE,
    ) -> tuple[dict, dict]:
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self._meta(name, namespace, generation=1, labels=labels),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "x"}]},
                },
            },
            "status": status
            if status is not None
            else {
                "observedGeneration": 1,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            },
        }
        replicaset_name = f"{name}-7d9f8b6c5"
        replicaset = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": self._meta(
                replicaset_name,
                namespace,
                labels=labels,
                ownerReferences=[
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "uid": deployment["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            ),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": deployment["spec"]["template"],
            },
        }
        self.kmock.objects["apps/v1/deployments", namespace, name] = deployment
        self.kmock.objects["apps/v1/replicasets", namespace, replicaset_name] = replicaset
        return deployment, replicaset

    def add_rollable(
        self, kind: str, name: str, labels: dict[str, str], *, namespace: str = NAMESPACE
    ) -> dict[str, Any]:
        """A StatefulSet or DaemonSet whose last rollout is complete."""
        status: dict[str, Any] = {"observedGeneration": 1}
        if kind == "StatefulSet":
            status |= {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "currentReplicas": 1}
        else:
            status |= {"desiredNumberScheduled": 1, "updatedNumberScheduled": 1, "numberAvailable": 1}
        spec: dict[str, Any] = {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "x"}]},
            },
        }
        if kind == "StatefulSet":
            spec |= {"replicas": 1, "serviceName": name}
        body = {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": self._meta(name, namespace, generation=1, labels=labels),
            "spec": spec,
            "status": status,
        }
        self.kmock.objects[f"apps/v1/{kind.lower()}s", namespace, name] = body
        return body

    def add_pod(
        self,
        name: str,
        *,
        uid: str,
        node: str,
        labels: dict[str, str],
        containers: dict[str, str],
        limit: str = "256Mi",
        owner: dict[str, Any] | None = None,
        namespace: str = NAMESPACE,
        args: list[str] | None = None,
    ) -> dict[str, Any]:
        """A running pod; ``containers`` maps container names to their runtime IDs."""
        meta = self._meta(name, namespace, labels=labels)
        meta["uid"] = uid
        if owner is not None:
            meta["ownerReferences"] = [{"apiVersion": "apps/v1", "controller": True, **owner}]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {
                "nodeName": node,
                "containers": [
                    {
                        "name": cname,
                        "image": "x",
                        "args": args or [],
                        "resources": {"limits": {"memory": limit}},
                    }
                    for cname in containers
                ],
            },
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.1",
                "containerStatuses": [
                    {
                        "name": cname,
                        "containerID": f"containerd://{cid}",
                        "ready": True,
                        "restartCount": 0,
                        "image": "x",
                        "imageID": "x",
                    }
                    for cname, cid in containers.items()
                ],
            },
        }
        self.kmock.objects["v1/pods", namespace, name] = pod
        return pod

    def add_agent_pod(self, node: str, port: int, namespace: str = "memoryguard-system") -> dict[str, Any]:
        name = f"memoryguard-agent-{node}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self._meta(name, namespace, labels=dict(AGENT_LABELS)),
            "spec": {
                "nodeName": node,
                "containers": [
                    {"name": "agent", "image": "x", "ports": [{"name": "api", "containerPort": port}]}
                ],
            },
            "status": {"phase": "Running", "podIP": "127.0.0.1"},
        }
        self.kmock.objects["v1/pods", namespace, name] = pod
        return pod

    # --- what the operator did --------------------------------------------------------------

    def requests(self, method: str, resource: str, *, subresource: str | None = None) -> list[Any]:
        wanted = kmock.resource(resource)
        return [
            r
            for r in list(self.kmock)
            if r.method == method.upper() and r.resource == wanted and r.subresource == subresource
        ]

    def restart_patches(self, name: str | None = None, resource: str = "apps/v1/deployments") -> list[Any]:
        return [
            r
            for r in self.requests("PATCH", resource)
            if (name is None or r.name == name) and "memoryguard.io/restart-id" in str(r.data)
        ]

    def events(self, reason: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        found = [r.data for r in self.requests("POST", "v1/events")]
        return [
            e
            for e in found
            if (reason is None or e.get("reason") == reason)
            and (kind is None or e.get("involvedObject", {}).get("kind") == kind)
        ]

    def guard(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        return dict(self.kmock.objects[GUARDS, namespace, name].raw)

    def ledger(self, guard: str, action: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """The guard's action ledger as stored in its status, optionally one action's (in one state)."""
        entries = self.guard(guard).get("status", {}).get("ledger") or []
        return [
            e
            for e in entries
            if (action is None or e["action"] == action) and (state is None or e["state"] == state)
        ]

    def condition(self, guard: str, type_: str, status: str | None = None) -> dict[str, Any] | None:
        """The guard's status condition of ``type_`` (only if its status is ``status``, when given)."""
        conditions = self.guard(guard).get("status", {}).get("conditions") or []
        found = next((c for c in conditions if c.get("type") == type_), None)
        return found if found is not None and (status is None or found.get("status") == status) else None

    def deployment(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        return dict(self.kmock.objects["apps/v1/deployments", namespace, name].raw)

    def annotate_pod_template(
        self, name: str, annotations: dict[str, str], namespace: str = NAMESPACE
    ) -> None:
        """Set pod-template annotations on a Deployment, as an earlier restart would have (before
        the operator starts: no watch event is emitted)."""
        body = copy.deepcopy(self.deployment(name, namespace))
        body["spec"]["template"]["metadata"]["annotations"] = dict(annotations)
        self.kmock.objects["apps/v1/deployments", namespace, name] = body


@pytest.fixture
def cluster(kmock: kmock.KubernetesEmulator) -> Cluster:
    kmock.resources.load_bundled()
    kmock.resources[GUARDS] = {
        "kind": "MemoryGuard",
        "singular": "memoryguard",
        "namespaced": True,
        "shortnames": {"mg"},
        "verbs": {"get", "list", "watch", "create", "patch", "update", "delete"},
        "subresources": {"status"},
    }
    return Cluster(kmock)


# --- the agents ----------------------------------------------------------------------------------


@dataclass
class Agent:
    """One node: a fixture cgroup tree and the real agent process serving it."""

    node: str
    port: int
    tree: CgroupTree
    log_dir: Path
    # None: --insecure-no-auth; else the agent's review arguments (--api-server …)
    auth: tuple[str, ...] | None = None
    extra_args: tuple[str, ...] = ()  # more agent flags, e.g. --enable-drop-caches
    process: AgentProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.process.log_text() if self.process is not None else ""


@dataclass
class Agents:
    tmp_path: Path
    started: list[Agent] = field(default_factory=list)

    async def start(
        self,
        node: str,
        *,
        interval: str = "1s",
        version: int = 2,
        auth: tuple[str, ...] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> Agent:
        # Each node's tree its own seed: pod UIDs are unique cluster-wide (the operator keys pods by
        # UID), and trees with the same seed would hand out the same ones.
        tree = CgroupTree(
            self.tmp_path / f"cgroup-{node}", version=version, driver="systemd", seed=len(self.started)
        )
        agent = Agent(
            node=node, port=free_port(), tree=tree, log_dir=self.tmp_path, auth=auth, extra_args=extra_args
        )
        self.started.append(agent)
        await self.launch(agent, interval=interval)
        return agent

    async def start_in(self, cluster: Cluster, node: str, **options: Any) -> Agent:
        """Start a node's agent and list its pod in the cluster, as the DaemonSet would."""
        agent = await self.start(node, **options)
        cluster.add_agent_pod(node, agent.port)
        return agent

    async def launch(self, agent: Agent, *, interval: str = "1s") -> None:
        """Start (or start again, on the same port and tree) the agent process of a node."""
        agent.process = AgentProcess(
            root=agent.tree.root,
            proc_root=self.tmp_path / "proc",
            args=(*(agent.auth if agent.auth is not None else ("--insecure-no-auth",)), *agent.extra_args),
            node_name=agent.node,
            interval=interval,
            port=agent.port,
            log_dir=agent.log_dir,
        ).start()
        await agent.process.wait_ready_async()

    async def stop(self, agent: Agent) -> None:
        if agent.process is not None and agent.process.process is not None:
            await agent.process.stop_async()


@pytest.fixture
async def agents(tmp_path: Path) -> AsyncIterator[Agents]:
    write_proc(tmp_path / "proc")
    fleet = Agents(tmp_path)
    try:
        yield fleet
    finally:
        for agent in fleet.started:
            await fleet.stop(agent)


# --- the operator --------------------------------------------------------------------------------


@dataclass
class OperatorRun:
    """``memoryguard operator`` in its own thread and event loop, talking to KMock over HTTP.

    Kopf cancels every task created after its start when it stops (it cannot tell its own from
    others), so it must not share the test's event loop.
    """

    config: OperatorConfig
    metrics: OperatorMetrics
    stop_flag: threading.Event = field(default_factory=threading.Event)
    ready_flag: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def _main(self) -> None:
        memo = kopf.Memo(metrics=self.metrics)
        try:
            asyncio.run(
                run_operator(self.config, stop_flag=self.stop_flag, ready_flag=self.ready_flag, memo=memo)
            )
        except BaseException as exc:  # reported by start()/stop() in the test's thread
            self.error = exc

    async def start(self) -> None:
        self.thread = threading.Thread(target=self._main, name="operator", daemon=True)
        self.thread.start()
        ready = await asyncio.to_thread(self.ready_flag.wait, 30)
        if self.error is not None:
            raise self.error
        assert ready, "the operator did not become ready in 30s"

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    async def stop(self) -> None:
        self.stop_flag.set()
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 30)
            assert not self.thread.is_alive(), "the operator did not stop in 30s"
        if self.error is not None and not isinstance(self.error, asyncio.CancelledError):
            raise self.error


@dataclass
class Operators:
    kmock: Any
    runs: list[OperatorRun] = field(default_factory=list)

    def config(self, **changes: Any) -> OperatorConfig:
        base = OperatorConfig(
            namespaces=(NAMESPACE, "memoryguard-system"),
            standalone=True,
            api_server=str(self.kmock.url),
            token_file=None,
            metrics_port=0,
            liveness_endpoint=None,
            cycle_seconds=1.0,
            status_refresh_seconds=2.0,
            agent_timeout_seconds=1.0,
            agent_retries=1,
        )
        return base.replace(**changes)

    async def start(self, **changes: Any) -> OperatorRun:
        run = OperatorRun(self.config(**changes), OperatorMetrics())
        self.runs.append(run)
        await run.start()
        return run


@pytest.fixture
async def operators(kmock: Any) -> AsyncIterator[Operators]:
    ops = Operators(kmock)
    try:
        yield ops
    finally:
        for run in ops.runs:
            if run.running:
                await run.stop()


async def eventually(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1) -> Any:
    """Wait (without blocking the loop) until ``predicate()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


__all__ = ["NAMESPACE", "Agent", "Agents", "Cluster", "MiB", "Operators", "eventually", "free_port"]
