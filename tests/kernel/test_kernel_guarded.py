"""MemoryGuard against a real kernel: the agent and the engine run inside the guest, and a
node-side stand-in carries their decisions out (a restart is a fresh pod, as a rollout makes).

One boot runs three scenarios side by side: a Buffer leak with MemoryGuard acting, its twin
where the same engine only watches (dry run), and a page-cache reader with MemoryGuard acting.
"""

from __future__ import annotations

import re

import pytest
from tests.kernel.evidence import MIB, DecisionLog

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(1200)]

ROLLOUT_SECONDS = 20.0  # --rollout-seconds of both leak stand-ins (guarded-leak.sh, leak-unguarded.sh)


@pytest.fixture(scope="module")
def guarded(scenario_batch):
    return scenario_batch(
        "guarded", ["guarded-leak", "leak-unguarded", "guarded-page-cache"], timeout_seconds=900, agent=True
    )


def _twin_exit(twin: DecisionLog) -> dict:
    """The unguarded twin's death, timed in the guest by the stand-in waiting on its process."""
    exits = twin.of_kind("exit")
    assert exits, "the unguarded twin never died: the leak did not reach memory.max in the run"
    return exits[0]


def _oom_killed_containers(dmesg: str) -> set[str]:
    """Container IDs the kernel's OOM killer named (``oom_memcg=/…/cri-containerd-<id>.scope``)."""
    return set(re.findall(r"oom-kill:.*?oom_memcg=\S*cri-containerd-([0-9a-f]{64})\.scope", dmesg))


def test_leak_without_memoryguard_ends_in_a_kernel_oom_kill(guarded):
    twin = DecisionLog.read(guarded["leak-unguarded"].directory)
    death = _twin_exit(twin)
    assert death["oom_group_kill"] == 1, f"the twin died without an OOM kill: {death}"
    assert twin.end()["oom_kills"] >= 1
    assert not twin.of_kind("restart"), "a dry run must not restart anything"
    # The kernel's own log names the twin's container.
    (start,) = twin.of_kind("start")
    assert start["container_id"] in _oom_killed_containers(guarded["leak-unguarded"].dmesg())
    # The engine saw it coming all the same: it wanted a restart before the kill.
    wanted = twin.first_tick(wanted="restart")
    assert wanted is not None and wanted["mono"] < death["exited_mono"]


def test_leak_with_memoryguard_is_restarted_a_rollout_before_the_kernel_would_kill_it(guarded):
    log = DecisionLog.read(guarded["guarded-leak"].directory)
    twin = DecisionLog.read(guarded["leak-unguarded"].directory)
    restarts = log.of_kind("restart")
    assert len(restarts) == 1
    restart = restarts[0]
    # The decision came at least a rollout ahead of the limit by the engine's own forecast ...
    assert restart["eta_seconds"] is not None and restart["eta_seconds"] >= ROLLOUT_SECONDS
    # ... and by the kernel's: the identical twin, started at the same go, was OOM-killed at
    # least a rollout later in its life than this pod's age when the restart was decided.
    lead = _twin_exit(twin)["pod_age_seconds"] - restart["decided_pod_age_seconds"]
    assert lead >= ROLLOUT_SECONDS, f"restart decided only {lead:.1f} s before the twin's OOM kill"
    # The old pod was stopped without an OOM kill, and no generation was ever OOM-killed.
    assert restart["old_events"]["oom_kill"] == 0
    assert log.end()["oom_kills"] == 0
    assert not log.of_kind("exit"), "a guarded pod died on its own"
    guarded_containers = {e["container_id"] for e in log.of_kind("start")}
    guarded_containers |= {r["new_container_id"] for r in restarts}
    assert not guarded_containers & _oom_killed_containers(guarded["guarded-leak"].dmesg())


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
