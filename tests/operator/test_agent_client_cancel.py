"""A failed agent request takes its siblings down with it: none is left running (and retrying)
after the caller gave up, which Kopf would otherwise re-raise from the operator's shutdown."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from tests.support.local_server import serving

from memoryguard.controller.agentclient import MAX_UIDS_PER_REQUEST, AgentClient, AgentError, TokenSource
from memoryguard.controller.aio import gather_or_cancel


async def test_the_first_failure_cancels_and_awaits_the_siblings() -> None:
    finished: list[str] = []
    cancelled: list[str] = []

    async def slow(name: str) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        finished.append(name)
        return name

    async def fails() -> str:
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await gather_or_cancel(slow("a"), fails(), slow("b"))
    assert sorted(cancelled) == ["a", "b"] and finished == []


async def test_results_keep_the_order_of_the_awaitables() -> None:
    async def after(delay: float, value: int) -> int:
        await asyncio.sleep(delay)
        return value

    assert await gather_or_cancel(after(0.03, 1), after(0.0, 2), after(0.01, 3)) == [1, 2, 3]


async def test_a_chunk_that_fails_cancels_the_chunk_still_waiting_on_its_agent() -> None:
    # Two chunks of one node's pods: one is refused, the other hangs. The caller gets the refusal,
    # and by then the request still waiting is no longer running.
    hanging = asyncio.Event()
    shutdown = asyncio.Event()

    async def pods(request: web.Request) -> web.Response:
        if "uid-0" in request.query.getall("uid"):
            await hanging.wait()
            return web.json_response({"error": "refused"}, status=403)
        hanging.set()
        await shutdown.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v1/pods", pods)
    client = AgentClient(tokens=TokenSource(None), timeout_seconds=20.0, retries=0)
    async with serving(app) as port:
        try:
            uids = [f"uid-{i}" for i in range(MAX_UIDS_PER_REQUEST + 1)]
            before = asyncio.all_tasks()
            with pytest.raises(AgentError) as caught:
                await client.fetch_pods(f"http://127.0.0.1:{port}", uids, window_seconds=60)
            assert caught.value.status == 403
            left = {t for t in asyncio.all_tasks() - before if not t.done()} - {asyncio.current_task()}
            assert not [t for t in left if "_fetch_chunk" in repr(t.get_coro())], left
        finally:
            shutdown.set()
            await client.close()
