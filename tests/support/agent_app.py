"""The agent's HTTP application in-process, on a real localhost port, over a real cgroup tree.

For tests that need to drive the sampler's clock and ticks by hand. Tests that need the
real ``memoryguard agent`` process use :mod:`tests.support.agent_process` instead.

    async with agent_app(tree.root) as agent:
        agent.tick()
        resp = await agent.client.get("/v1/pods")
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from memoryguard.agent import auth
from memoryguard.agent.main import NodeActions
from memoryguard.agent.metrics import AgentMetrics
from memoryguard.agent.sampler import Sampler
from memoryguard.agent.server import ServerSettings, create_app

START_SECONDS = 1_763_805_600.0


class ManualClock:
    """Wall clock for the sampler and the server, moved only by the test."""

    def __init__(self, now: float = START_SECONDS) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class AgentUnderTest:
    client: TestClient
    sampler: Sampler
    metrics: AgentMetrics
    clock: ManualClock
    settings: ServerSettings

    def tick(self, seconds: float = 1.0, count: int = 1) -> None:
        """Advance the clock by ``seconds`` and run a sampling tick, ``count`` times."""
        for _ in range(count):
            self.clock.advance(seconds)
            self.sampler.tick()


@asynccontextmanager
async def agent_app(
    root: Path,
    *,
    proc_root: Path | None = None,
    sys_vm_dir: Path | None = None,
    api: auth.ApiServer | None = None,
    node_name: str = "node-a",
    enable_drop_caches: bool = False,
    drop_caches_min_interval_seconds: float = 600.0,
    request_timeout_seconds: float = 30.0,
    retention_seconds: float = 1800.0,
    review_timeout_seconds: float = 5.0,
    stream_chunk_bytes: int = 64 * 1024,
) -> AsyncIterator[AgentUnderTest]:
    """Serve the agent over ``root``; with ``api`` requests are authorized through it, else no auth."""
    clock = ManualClock()
    proc = proc_root or root.parent / "proc"
    sampler = Sampler(
        root, interval_seconds=1.0, retention_seconds=retention_seconds, clock=clock, proc_root=proc
    )
    metrics = AgentMetrics(sampler)
    authorizer = None
    if api is not None:
        authorizer = auth.Authorizer(
            auth.Reviewer(api, timeout_seconds=review_timeout_seconds), on_review=metrics.observe_review
        )
    settings = ServerSettings(
        node_name=node_name,
        interval_seconds=1.0,
        retention_seconds=retention_seconds,
        enable_drop_caches=enable_drop_caches,
        drop_caches_min_interval_seconds=drop_caches_min_interval_seconds,
        request_timeout_seconds=request_timeout_seconds,
        stream_chunk_bytes=stream_chunk_bytes,
    )
    app = create_app(
        sampler,
        NodeActions(proc, sys_vm_dir),
        settings,
        authorizer=authorizer,
        metrics=metrics,
        clock=clock,
        monotonic=clock,
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield AgentUnderTest(client=client, sampler=sampler, metrics=metrics, clock=clock, settings=settings)
    finally:
        await client.close()
