"""POST /v1/reclaim and /v1/drop-caches through the real server and the real actions, on fixture files."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from tests.support.agent_app import agent_app
from tests.support.cgroup_tree import CgroupTree, MiB, write_proc

from memoryguard.agent.actions import DEFAULT_CHUNK_BYTES
from memoryguard.engine.model import Sample


@pytest.fixture
def tree(tmp_path):
    write_proc(tmp_path / "proc")
    return CgroupTree(tmp_path / "cgroup", version=2, driver="systemd")


@pytest.fixture
def web_pod(tree):
    return tree.add_pod(
        qos="burstable", containers=1, max_bytes=256 * MiB, anon_bytes=100 * MiB, file_bytes=80 * MiB
    )


async def test_reclaim_writes_the_containers_memory_reclaim_in_chunks_and_reports_readings(tree, web_pod):
    app_id = web_pod.containers[-1]
    async with agent_app(tree.root) as agent:
        agent.tick()
        resp = await agent.client.post(
            "/v1/reclaim",
            json={"pod_uid": web_pod.uid, "container_id": app_id, "bytes": 2 * DEFAULT_CHUNK_BYTES},
        )
        body = await resp.json()
    assert resp.status == 200
    assert body["requested_bytes"] == 2 * DEFAULT_CHUNK_BYTES
    assert body["partial"] is False
    assert body["chunks"] == 2
    # The fixture's memory.current does not move, so nothing was freed: the answer must say so.
    assert body["freed_bytes"] == 0
    before, after = Sample.from_dict(body["before"]), Sample.from_dict(body["after"])
    assert before.current_bytes == after.current_bytes == tree.values(web_pod.uid, app_id).current()
    assert (tree.path(web_pod.uid, app_id) / "memory.reclaim").read_text() == str(DEFAULT_CHUNK_BYTES)
    assert (tree.path(web_pod.uid) / "memory.reclaim").read_text() == ""  # the pod's was not touched


async def test_reclaim_without_container_id_targets_the_pod_cgroup(tree, web_pod):
    async with agent_app(tree.root) as agent:
        agent.tick()
        resp = await agent.client.post(
            "/v1/reclaim", json={"pod_uid": web_pod.uid, "container_id": None, "bytes": 4096}
        )
    assert resp.status == 200
    assert (tree.path(web_pod.uid) / "memory.reclaim").read_text() == "4096"


async def test_reclaim_on_cgroup_v1_is_501(tmp_path):
    tree = CgroupTree(tmp_path / "cgroup", version=1, driver="cgroupfs")
    pod = tree.add_pod(qos="burstable", containers=1, max_bytes=256 * MiB)
    async with agent_app(tree.root) as agent:
        agent.tick()
        resp = await agent.client.post(
            "/v1/reclaim", json={"pod_uid": pod.uid, "container_id": pod.containers[-1], "bytes": 4096}
        )
        body = await resp.json()
    assert resp.status == 501
    assert "memory.reclaim" in body["error"]


async def test_reclaim_of_a_container_that_vanished_since_discovery_is_404(tree, web_pod):
    app_id = web_pod.containers[-1]
    async with agent_app(tree.root) as agent:
        agent.tick()
        tree.remove_container(web_pod.uid, app_id)  # gone before the next tick notices
        resp = await agent.client.post(
            "/v1/reclaim", json={"pod_uid": web_pod.uid, "container_id": app_id, "bytes": 4096}
        )
    assert resp.status == 404


async def test_one_reclaim_at_a_time_per_cgroup_and_the_loop_stays_responsive(tree, web_pod):
    # memory.reclaim as a FIFO: the agent's write blocks until the test opens the other end,
    # like a kernel reclaim that takes a while.
    app_id = web_pod.containers[-1]
    reclaim_file = tree.path(web_pod.uid, app_id) / "memory.reclaim"
    reclaim_file.unlink()
    os.mkfifo(reclaim_file)
    body = {"pod_uid": web_pod.uid, "container_id": app_id, "bytes": 4096}
    async with agent_app(tree.root) as agent:
        agent.tick()
        first = asyncio.create_task(agent.client.post("/v1/reclaim", json=body))
        second = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            second = await agent.client.post("/v1/reclaim", json=body)
            if second.status == 409:
                break
        assert second is not None and second.status == 409, "the second reclaim was not refused as busy"
        health = await agent.client.get("/healthz")  # answered while the reclaim blocks its thread
        other_cgroup = await agent.client.post(
            "/v1/reclaim", json={"pod_uid": web_pod.uid, "container_id": None, "bytes": 4096}
        )
        assert not first.done()
        fd = await asyncio.to_thread(os.open, reclaim_file, os.O_RDONLY)  # lets the write through
        try:
            resp = await asyncio.wait_for(first, timeout=10)
            written = os.read(fd, 64)
        finally:
            os.close(fd)
        after = await agent.client.post(
            "/v1/reclaim", json={"pod_uid": web_pod.uid, "container_id": None, "bytes": 1}
        )
    assert health.status == 200
    assert other_cgroup.status == 200  # the lock is per cgroup, not global
    assert resp.status == 200
    assert written == b"4096"
    assert after.status == 200


async def test_a_reclaim_that_outlives_its_request_keeps_the_cgroup_busy(tree, web_pod):
    app_id = web_pod.containers[-1]
    reclaim_file = tree.path(web_pod.uid, app_id) / "memory.reclaim"
    reclaim_file.unlink()
    os.mkfifo(reclaim_file)
    body = {"pod_uid": web_pod.uid, "container_id": app_id, "bytes": 4096}
    async with agent_app(tree.root, request_timeout_seconds=0.3) as agent:
        agent.tick()
        timed_out = await agent.client.post("/v1/reclaim", json=body)
        timed_out_body = await timed_out.json()
        still_busy = await agent.client.post("/v1/reclaim", json=body)
        # With a reader on the FIFO, the stuck write goes through and its thread ends; from then
        # on the cgroup is free again (and later writes land in the pipe at once).
        fd = await asyncio.to_thread(os.open, reclaim_file, os.O_RDONLY)
        try:
            statuses = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                statuses.append((await agent.client.post("/v1/reclaim", json=body)).status)
                if statuses[-1] != 409:
                    break
            written = os.read(fd, 64)
        finally:
            os.close(fd)
    assert timed_out.status == 504
    assert "longer than" in timed_out_body["error"]
    assert still_busy.status == 409
    assert statuses[-1] == 200
    assert written == b"40964096"  # the timed-out reclaim's write, then the next one's


async def test_drop_caches_when_enabled_writes_the_level_then_rate_limits(tree, tmp_path):
    target = tmp_path / "proc" / "sys" / "vm" / "drop_caches"
    async with agent_app(
        tree.root, proc_root=tmp_path / "proc", enable_drop_caches=True, drop_caches_min_interval_seconds=600
    ) as agent:
        first = await agent.client.post("/v1/drop-caches", json={"level": 3})
        first_body = await first.json()
        written = target.read_text()
        agent.clock.advance(100)
        too_soon = await agent.client.post("/v1/drop-caches", json={"level": 1})
        too_soon_body = await too_soon.json()
        agent.clock.advance(500)
        later = await agent.client.post("/v1/drop-caches", json={"level": 1})
    assert first.status == 200
    assert written == "3\n"
    assert first_body["level"] == 3
    assert first_body["before_meminfo"]["MemTotal"] == 16 * 1024 * MiB
    assert first_body["freed_bytes"] == 0  # the fixture's MemFree does not move
    assert too_soon.status == 429
    assert too_soon.headers["Retry-After"] == "500"
    assert "600" in too_soon_body["error"]
    assert later.status == 200
    assert target.read_text() == "1\n"
