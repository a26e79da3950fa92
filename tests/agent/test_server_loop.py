"""The agent's own loop (memoryguard.agent.main): timed ticks, the periodic summary line, flags."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import time

import pytest
from tests.support.cgroup_tree import CgroupTree, MiB

from memoryguard.agent import main
from memoryguard.agent.metrics import AgentMetrics
from memoryguard.agent.sampler import Sampler


@pytest.fixture
def tree(tmp_path):
    tree = CgroupTree(tmp_path / "cgroup", version=2)
    tree.add_pod(qos="burstable", containers=1, max_bytes=64 * MiB)
    return tree


async def test_loop_ticks_every_interval_times_each_tick_and_logs_a_summary(tree, caplog):
    sampler = Sampler(tree.root, interval_seconds=0.05)
    metrics = AgentMetrics(sampler)
    ticks = main.TickLog.empty()
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="memoryguard.agent")

    def summaries() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("containers=")]

    started = time.monotonic()
    tasks = [
        asyncio.create_task(main.sample_forever(sampler, metrics, ticks, stop)),
        asyncio.create_task(main.log_summaries(sampler, ticks, stop, every_seconds=0.3)),
    ]
    # Wait for the behaviour rather than a fixed time: this machine may be busy.
    deadline = started + 30
    while time.monotonic() < deadline and (sampler.ticks < 5 or not summaries()):
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    elapsed = time.monotonic() - started
    observed = metrics.registry.get_sample_value("memoryguard_agent_tick_duration_seconds_count")
    assert sampler.ticks >= 5
    assert sampler.ticks <= elapsed / 0.05 + 2  # paced by the interval, never bursting to catch up
    assert observed == sampler.ticks
    assert summaries(), "no summary line"
    assert re.fullmatch(
        r"containers=2 ticks=\d+ tick_p50=[\d.]+ms tick_max=[\d.]+ms errors=none", summaries()[0]
    )


async def test_a_failing_tick_is_logged_and_sampling_goes_on(tree, caplog):
    sampler = Sampler(tree.root, interval_seconds=0.02)
    real_tick = sampler.tick
    calls = []

    def flaky_tick():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("bug in one tick")
        return real_tick()

    sampler.tick = flaky_tick  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(
        main.sample_forever(sampler, AgentMetrics(sampler), main.TickLog.empty(), stop)
    )
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert len(calls) >= 4
    assert any("sampling tick failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("500ms", 0.5), ("30m", 1800.0), ("2h", 7200.0), ("1.5", 1.5), ("10m", 600.0)],
)
def test_durations(text, seconds):
    assert main.duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1s", "1d", "1 s s"])
def test_bad_durations_are_rejected(text):
    with pytest.raises(argparse.ArgumentTypeError):
        main.duration_seconds(text)


@pytest.mark.parametrize(
    ("text", "address"),
    [("0.0.0.0:9732", ("0.0.0.0", 9732)), (":9732", ("0.0.0.0", 9732)), ("[::1]:80", ("::1", 80))],
)
def test_listen_addresses(text, address):
    assert main.listen_address(text) == address


@pytest.mark.parametrize("text", ["9732", "host:", "host:http", "host:70000"])
def test_bad_listen_addresses_are_rejected(text):
    with pytest.raises(argparse.ArgumentTypeError):
        main.listen_address(text)


def test_defaults_match_the_documented_flags(monkeypatch):
    monkeypatch.setenv("NODE_NAME", "node-from-env")
    parser = argparse.ArgumentParser()
    main.add_arguments(parser)
    args = parser.parse_args([])
    assert str(args.root) == "/sys/fs/cgroup" and str(args.proc_root) == "/proc"
    assert args.listen == ("0.0.0.0", 9732)
    assert args.interval == 1.0 and args.retention == 1800.0
    assert args.drop_caches_min_interval == 600.0 and not args.enable_drop_caches
    assert args.node_name == "node-from-env"
    assert not args.insecure_no_auth
    assert args.log_level == "INFO" and args.log_format == "text"
