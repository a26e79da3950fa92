"""Seed 000's failures reproduced in a real kernel, with the engine judging them live.

One boot: a Buffer leak to the kernel's OOM kill (TEST 4), a V8 heap leak under
--max-old-space-size that crashes far below memory.max (TEST 5), memory.high below the working
set (TEST 2: throttling) and swap on zram filling up (TEST 3). The real agent samples every
container; a watching stand-in runs the engine on what the agent serves and logs its decisions.
"""

from __future__ import annotations

import pytest
from tests.kernel.evidence import MIB, DecisionLog, load_trace

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(1200)]

BATCH = ["buffer-leak-fast", "heap-crash", "high-throttle", "swap-exhaustion"]


@pytest.fixture(scope="module")
def seeds(scenario_batch):
    return scenario_batch("seed-failures", BATCH, timeout_seconds=900, swap_mib=512, agent=True)


def test_buffer_leak_ends_in_a_kernel_oom_kill_at_memory_max(seeds):
    scenario = seeds["buffer-leak-fast"]
    assert scenario.events()["events_oom_kill"] == 1
    trace = load_trace(scenario.trace_path)
    failure = trace.failure
    assert failure is not None
    before_kill = [s for s in trace.samples if s.t_seconds < failure.t_seconds]
    assert max(s.usage_bytes for s in before_kill) >= 0.9 * 256 * MIB
    # Buffers live outside the V8 heap: the growth is anon, and the engine called it so.
    assert "anon_growth" in DecisionLog.read(scenario.directory).verdicts()


def test_heap_leak_crashes_in_v8_below_memory_max_without_a_kernel_kill(seeds):
    scenario = seeds["heap-crash"]
    assert "heap out of memory" in scenario.workload_log()
    assert scenario.events()["events_oom_kill"] == 0
    trace = load_trace(scenario.trace_path)
    assert trace.runtime_heap_limit_bytes == 96 * MIB
    assert trace.failure is not None and "alive" in trace.failure.reason
    assert max(s.usage_bytes for s in trace.samples) < 0.75 * 256 * MIB
    # Judged against the runtime's heap cap, not memory.max: a restart was wanted before the crash.
    log = DecisionLog.read(scenario.directory)
    wanted = log.first_tick(wanted="restart")
    assert wanted is not None and wanted["alive"]


def test_memory_high_below_the_working_set_throttles_and_is_classified_as_such(seeds):
    scenario = seeds["high-throttle"]
    events = scenario.events()
    assert events["events_high"] >= 1000, "memory.high breaches should climb by thousands"
    assert events["events_oom_kill"] == 0, "throttled, not killed"
    trace = load_trace(scenario.trace_path)
    assert trace.metadata.get("failure_at") is not None
    assert max(s.psi_some_avg10 or 0 for s in trace.samples) >= 30
    # anon stalls just above memory.high instead of reaching memory.max
    assert max(s.anon_bytes for s in trace.samples) < 200 * MIB
    assert "throttled_high" in DecisionLog.read(scenario.directory).verdicts()


def test_swap_on_zram_fills_up_then_swap_allocations_fail(seeds):
    scenario = seeds["swap-exhaustion"]
    events = scenario.events()
    assert events["swap_events_fail"] > 0
    trace = load_trace(scenario.trace_path)
    assert max(s.swap_current_bytes or 0 for s in trace.samples) >= 0.95 * 64 * MIB
    assert "swap_exhausted" in DecisionLog.read(scenario.directory).verdicts()
