"""The memory shapes the engine must tell apart, as a real kernel produces them.

One boot, recorded without MemoryGuard: a slow leak, a leak under a GC saw-tooth, page cache
plus a leak (seed 000 TEST 1), a page-cache reader (seed 004), a warm-up plateau and bursts.
These runs are also where tests/traces/kernel-*.csv come from (MEMORYGUARD_RECORD_TRACES=1).
"""

from __future__ import annotations

import itertools

import pytest
from tests.kernel.evidence import MIB, load_trace

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(1200)]

BATCH = ["buffer-leak-slow", "leak-gc-saw", "page-cache-leak", "page-cache", "plateau", "bursts"]


@pytest.fixture(scope="module")
def shapes(scenario_batch):
    return scenario_batch("memory-shapes", BATCH, timeout_seconds=900)


def _drops(values: list[int], at_least: int) -> int:
    return sum(1 for a, b in itertools.pairwise(values) if a - b >= at_least)


def test_slow_leak_is_killed_at_its_smaller_limit(shapes):
    scenario = shapes["buffer-leak-slow"]
    assert scenario.events()["events_oom_group_kill"] == 1
    assert load_trace(scenario.trace_path).failure is not None


def test_gc_saw_tooth_rides_on_a_leak_that_is_still_killed(shapes):
    scenario = shapes["leak-gc-saw"]
    assert scenario.events()["events_oom_group_kill"] == 1
    anon = [s.anon_bytes for s in load_trace(scenario.trace_path).samples]
    assert _drops(anon, 16 * MIB) >= 3, "the collected garbage should show as repeated drops"


def test_page_cache_is_given_back_before_a_leak_is_killed(shapes):
    scenario = shapes["page-cache-leak"]
    # memory.oom.group: the kill takes the cache reader too.
    assert scenario.events()["events_oom_group_kill"] == 1
    trace = load_trace(scenario.trace_path)
    failure = trace.failure
    assert failure is not None
    alive = [s for s in trace.samples if s.t_seconds < failure.t_seconds]
    peak_file = max(s.file_bytes for s in alive)
    assert peak_file >= 100 * MIB
    # By the kill the kernel had reclaimed most of the cache: only anon was left to take.
    assert min(s.file_bytes for s in alive[-5:]) <= peak_file / 2


def test_page_cache_fills_the_limit_without_a_kill(shapes):
    scenario = shapes["page-cache"]
    assert scenario.events()["events_oom_kill"] == 0
    samples = load_trace(scenario.trace_path).samples
    assert max(s.file_bytes for s in samples) >= 0.8 * 256 * MIB
    assert max(s.anon_bytes for s in samples) < 32 * MIB
    # The kernel reclaims at the limit (memory.events max) instead of killing.
    assert scenario.events()["events_max"] > 0


def test_warm_up_plateau_holds_without_a_kill(shapes):
    scenario = shapes["plateau"]
    assert scenario.events()["events_oom_kill"] == 0
    samples = load_trace(scenario.trace_path).samples
    last_30s = [s.anon_bytes for s in samples if s.t_seconds >= samples[-1].t_seconds - 30]
    assert max(last_30s) - min(last_30s) < 8 * MIB
    assert max(last_30s) >= 100 * MIB


def test_bursts_come_and_go_without_a_kill(shapes):
    scenario = shapes["bursts"]
    assert scenario.events()["events_oom_kill"] == 0
    anon = [s.anon_bytes for s in load_trace(scenario.trace_path).samples]
    assert _drops(anon, 50 * MIB) >= 3
