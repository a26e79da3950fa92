"""MemoryGuard against a real kernel: the agent and the engine run inside the guest, and a
node-side stand-in carries their decisions out (a restart is a fresh pod, as a rollout makes).

One boot runs three scenarios side by side: a Buffer leak with MemoryGuard acting, its twin
where the same engine only watches (dry run), and a page-cache reader with MemoryGuard acting.
"""

from __future__ import annotations

import pytest
from tests.kernel.evidence import MIB, DecisionLog

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(1200)]

ROLLOUT_SECONDS = 20.0  # --rollout-seconds of both leak stand-ins (guarded-leak.sh, leak-unguarded.sh)


@pytest.fixture(scope="module")
def guarded(scenario_batch):
    return scenario_batch(
        "guarded", ["guarded-leak", "leak-unguarded", "guarded-page-cache"], timeout_seconds=900, agent=True
    )


def _twin_oom_kill_age(twin: DecisionLog) -> float:
    """Age of the unguarded twin's pod at the first tick that saw its OOM kill."""
    killed = next((t for t in twin.ticks if t["oom_kill"] > 0), None)
    assert killed is not None, "the unguarded twin was never OOM-killed: the leak is too slow for the run"
    return float(killed["pod_age_seconds"])


def test_leak_without_memoryguard_ends_in_a_kernel_oom_kill(guarded):
    twin = DecisionLog.read(guarded["leak-unguarded"].directory)
    assert twin.end()["oom_kills"] == 1
    assert not twin.of_kind("restart"), "a dry run must not restart anything"
    # The engine saw it coming all the same: it wanted a restart before the kill.
    assert "restart" in twin.wanted()


def test_leak_with_memoryguard_is_restarted_before_the_kernel_would_kill_it(guarded):
    log = DecisionLog.read(guarded["guarded-leak"].directory)
    twin = DecisionLog.read(guarded["leak-unguarded"].directory)
    restarts = log.of_kind("restart")
    assert len(restarts) == 1
    restart = restarts[0]
    # The decision came at least a rollout ahead of the limit by the engine's own forecast ...
    assert restart["eta_seconds"] is not None and restart["eta_seconds"] >= ROLLOUT_SECONDS
    # ... and by the kernel's: the identical twin was OOM-killed at least that much later.
    lead = _twin_oom_kill_age(twin) - restart["old_pod_age_seconds"]
    assert lead >= ROLLOUT_SECONDS, f"restart only {lead:.0f} s before the twin's OOM kill"
    # The old pod was stopped without an OOM kill, and no generation was ever OOM-killed.
    assert restart["old_events"]["oom_kill"] == 0
    assert log.end()["oom_kills"] == 0
    assert all(t["oom_kill"] == 0 for t in log.ticks)


def test_leak_restart_is_explained_as_anon_growth(guarded):
    log = DecisionLog.read(guarded["guarded-leak"].directory)
    deciding_tick = log.first_tick(action="restart")
    assert deciding_tick is not None
    assert deciding_tick["verdict"] == "anon_growth"
    assert "memory.max" in deciding_tick["reason"]


def test_page_cache_is_reclaimed_through_the_agent_and_never_restarted(guarded):
    log = DecisionLog.read(guarded["guarded-page-cache"].directory)
    assert "page_cache_pressure" in log.verdicts()
    assert not log.of_kind("restart")
    assert "restart" not in log.wanted()
    reclaims = log.of_kind("reclaim")
    assert reclaims, "no reclaim was carried out"
    answer = reclaims[0]["answer"]
    assert answer["http_status"] == 200
    freed_file_bytes = answer["before"]["file_bytes"] - answer["after"]["file_bytes"]
    assert freed_file_bytes >= 16 * MIB, f"memory.reclaim freed only {freed_file_bytes / MIB:.1f} MiB of file"
    assert log.end()["oom_kills"] == 0


def test_drop_caches_runs_for_real_on_the_node(guarded):
    log = DecisionLog.read(guarded["guarded-page-cache"].directory)
    (drop,) = log.of_kind("drop_caches")
    answer = drop["answer"]
    assert answer["http_status"] == 200
    assert answer["level"] == 1
    # Node-wide: the guest's page cache shrank by at least part of the reader's file.
    assert answer["freed_bytes"] >= 16 * MIB
