"""GET /v1/pods is written as it is built: bounded memory, ticks in between, a cut answer on error."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc

import aiohttp
import pytest
from tests.support.agent_app import agent_app
from tests.support.cgroup_tree import build_node, write_proc


@pytest.fixture
def node(tmp_path):
    write_proc(tmp_path / "proc")
    return build_node(tmp_path / "cgroup", containers=100)


async def test_a_full_window_of_every_container_is_not_built_whole_in_memory(node):
    async with agent_app(node.root, retention_seconds=600) as agent:
        agent.tick(count=600)  # every ring full: 300 rows of 1 s and 30 of 10 s per container
        whole = await (await agent.client.get("/v1/pods", params={"window_seconds": "600"})).read()
        body = json.loads(whole)
        assert sum(len(p["containers"]) for p in body["pods"]) == 100
        assert all(len(c["window"]["rows"]) == 330 for p in body["pods"] for c in p["containers"])

        gc.collect()
        tracemalloc.start()
        try:
            resp = await agent.client.get("/v1/pods", params={"window_seconds": "600"})
            received = 0
            async for chunk in resp.content.iter_chunked(64 * 1024):
                received += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert resp.status == 200 and received == len(whole)
    # Built whole, the answer would be in memory three times over (as encoded pods, as one text,
    # as bytes); written container by container, what is held at once is one container's rows,
    # a chunk or two, and the client's and transport's buffers (~0.9 MiB here, whatever the size).
    assert len(whole) > 3 * 2**20
    assert peak < len(whole) / 3, f"peak {peak} bytes while answering {len(whole)} bytes"


async def test_ticks_run_while_a_long_answer_is_written_and_now_comes_after_every_sample(node):
    async with agent_app(node.root, retention_seconds=600, stream_chunk_bytes=1) as agent:
        agent.tick(count=30)
        answering = True
        ticks_meanwhile = 0

        async def keep_ticking() -> None:
            nonlocal ticks_meanwhile
            while answering:
                agent.tick()
                ticks_meanwhile += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(keep_ticking())
        try:
            resp = await agent.client.get("/v1/pods", params={"window_seconds": "600"})
            body = await resp.json()
        finally:
            answering = False
            await ticker
    assert resp.status == 200
    assert ticks_meanwhile > 10  # the loop ran sampling ticks between the pieces of the answer
    containers = [c for p in body["pods"] for c in p["containers"]]
    assert len(containers) == 100
    latest = [c["latest"]["t_seconds"] for c in containers]
    assert len(set(latest)) > 1  # containers answered at different ticks...
    assert body["now_seconds"] >= max(latest)  # ...and now_seconds read after all of them
    for c in containers:  # each container is whole: its latest reading is its newest row
        assert c["window"]["rows"][-1][0] == c["latest"]["t_seconds"]


async def test_an_error_after_the_answer_began_cuts_the_connection_and_is_counted(node, monkeypatch):
    async with agent_app(node.root, stream_chunk_bytes=1024) as agent:
        agent.tick(count=3)
        real = agent.sampler._container_entry
        calls = 0

        def fails_at_the_tenth(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == 10:
                raise RuntimeError("a bug in the tenth container")
            return real(*args, **kwargs)

        monkeypatch.setattr(agent.sampler, "_container_entry", fails_at_the_tenth)
        resp = await agent.client.get("/v1/pods")
        assert resp.status == 200  # sent before the first container was built
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
        monkeypatch.undo()
        after = await agent.client.get("/v1/pods")
        body = await after.json()
        aborted = agent.metrics.http_requests.labels("/v1/pods", "aborted")._value.get()
        ok = agent.metrics.http_requests.labels("/v1/pods", "200")._value.get()
    assert after.status == 200 and len(body["pods"]) == len(node.pods)
    assert (aborted, ok) == (1, 1)
