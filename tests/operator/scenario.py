"""Fixture workloads whose cgroup files the tests rewrite over time, as a kernel would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from tests.operator.conftest import NAMESPACE, Agent, Cluster, eventually
from tests.support.cgroup_tree import MiB

LIMIT_BYTES = 256 * MiB


@dataclass
class GuardedWorkload:
    """A Deployment (or a bare pod) with one pod whose container lives in an agent's tree."""

    name: str
    agent: Agent
    pod_uid: str
    container_id: str
    pod_name: str

    def set(self, **values: object) -> None:
        self.agent.tree.set(self.pod_uid, self.container_id, **values)


def deploy(
    cluster: Cluster,
    agent: Agent,
    name: str,
    *,
    bare: bool = False,
    owner_kind: str = "Deployment",
    deployment_status: dict | None = None,
    anon_bytes: int = 60 * MiB,
    file_bytes: int = 10 * MiB,
) -> GuardedWorkload:
    """A workload with one pod on ``agent``'s node, its container in the agent's cgroup tree."""
    pod = agent.tree.add_pod(qos="burstable", containers=1, max_bytes=LIMIT_BYTES)
    container_id = pod.containers[-1]
    agent.tree.set(pod.uid, container_id, anon_bytes=anon_bytes, file_bytes=file_bytes, max_bytes=LIMIT_BYTES)
    labels = {"app": name}
    owner = None
    if bare:
        pass
    elif owner_kind == "Deployment":
        _, replicaset = cluster.add_deployment(name, labels, status=deployment_status)
        owner = {
            "kind": "ReplicaSet",
            "name": replicaset["metadata"]["name"],
            "uid": replicaset["metadata"]["uid"],
        }
    else:
        workload = cluster.add_rollable(owner_kind, name, labels)
        owner = {"kind": owner_kind, "name": name, "uid": workload["metadata"]["uid"]}
    pod_name = name if bare else f"{name}-7d9f8b6c5-x1y2z"
    cluster.add_pod(
        pod_name, uid=pod.uid, node=agent.node, labels=labels, containers={"app": container_id}, owner=owner
    )
    return GuardedWorkload(
        name=name, agent=agent, pod_uid=pod.uid, container_id=container_id, pod_name=pod_name
    )


def guard_spec(app: str, **overrides: object) -> dict:
    """A guard tuned for tests: short window, few samples, a 10 s rollout (restart at ETA ≤ 15 s)."""
    spec: dict = {
        "selector": {"matchLabels": {"app": app}},
        "forecast": {"window": "2m", "horizon": "5m", "minSamples": 10},
        "thresholds": {"warn": "80%", "act": "90%"},
        "actions": {
            "reclaim": {"enabled": True, "cooldown": "1m", "minReclaimable": "16Mi"},
            "restart": {"enabled": True, "cooldown": "30m", "maxPerHour": 1, "rolloutSeconds": 10},
            "evict": {"enabled": True},
        },
    }
    spec.update(overrides)
    return spec


@dataclass
class Leak:
    """Anonymous memory growing at a steady rate until the limit, written every ``tick`` seconds."""

    workload: GuardedWorkload
    start_bytes: int = 60 * MiB
    bytes_per_second: float = 8 * MiB
    file_bytes: int = 10 * MiB
    tick_seconds: float = 0.25
    written: list[tuple[float, int]] = field(default_factory=list)  # (wall time, anon bytes)
    started_at: float = 0.0

    def anon_at(self, elapsed_seconds: float) -> int:
        return min(LIMIT_BYTES, int(self.start_bytes + self.bytes_per_second * elapsed_seconds))

    def limit_reached_at(self) -> float:
        """Wall time at which the fixture's usage reaches memory.max (the OOM kill, if nothing acts)."""
        kernel = 512 * 1024
        headroom = LIMIT_BYTES - self.file_bytes - kernel - self.start_bytes
        return self.started_at + headroom / self.bytes_per_second

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Leak]:
        self.started_at = time.time()
        task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            now = time.time()
            anon = self.anon_at(now - self.started_at)
            self.workload.set(anon_bytes=anon, file_bytes=self.file_bytes)
            self.written.append((now, anon))
            await asyncio.sleep(self.tick_seconds)


async def fill_with_page_cache(*caches: GuardedWorkload, done: Callable[[], bool]) -> None:
    """Page cache fills the containers to 95 % of their limit while anon stays flat, until ``done``."""
    for step in range(40):
        file_bytes = min(int(0.95 * LIMIT_BYTES) - 40 * MiB - 512 * 1024, 20 * MiB + step * 8 * MiB)
        for cache in caches:
            cache.set(anon_bytes=40 * MiB, file_bytes=file_bytes, inactive_file_bytes=file_bytes * 3 // 4)
        await asyncio.sleep(0.25)
        if done():
            break
    await eventually(done, timeout=30)


__all__ = [
    "LIMIT_BYTES",
    "NAMESPACE",
    "GuardedWorkload",
    "Leak",
    "deploy",
    "fill_with_page_cache",
    "guard_spec",
]
