"""MemoryGuard against a real kernel: the agent and the engine run inside the guest, and a
node-side stand-in carries their decisions out (a restart is a fresh pod, as a rollout makes).

One boot runs three scenarios side by side: a Buffer leak with MemoryGuard acting, its twin
where the same engine only watches (dry run), and a page-cache reader with MemoryGuard acting.
The agent runs as the Helm chart runs it: uid 0 with every capability dropped. Each scenario's
first pod is recorded by `memoryguard record` (trace.csv), like every other scenario's.
"""

from __future__ import annotations

import json
import re

import pytest
from tests.kernel.evidence import (
    MIB,
    DecisionLog,
    agent_credentials,
    assert_runs_as_the_chart_runs_the_agent,
    load_trace,
)

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(1200)]

# --rollout-seconds of both leak stand-ins (guarded-leak.sh, leak-unguarded.sh): the spec's
# actions.restart.rolloutSeconds, the lead the user configures. The engine restarts once its
# forecast of the limit is within rolloutSeconds plus the default 50 % margin.
ROLLOUT_SECONDS = 20.0
LEAD_SECONDS = ROLLOUT_SECONDS * 1.5
LIMIT_BYTES = 256 * MIB


@pytest.fixture(scope="module")
def guarded(scenario_batch):
    return scenario_batch(
        "guarded",
        ["guarded-leak", "leak-unguarded", "guarded-page-cache"],
        timeout_seconds=900,
        agent=True,
        trace_subdir="guarded",  # not bench's corpus: see conftest
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


def test_leak_with_memoryguard_is_restarted_at_least_rollout_seconds_before_the_twins_oom_kill(guarded):
    """The lead is the spec's rolloutSeconds (the time the user says a rollout needs), measured
    against the kernel's own kill of the identical unguarded twin."""
    log = DecisionLog.read(guarded["guarded-leak"].directory)
    twin = DecisionLog.read(guarded["leak-unguarded"].directory)
    restarts = log.of_kind("restart")
    assert len(restarts) == 1
    restart = restarts[0]
    # The engine's own evidence: the restart came from its forecast, with the limit between
    # rolloutSeconds and rolloutSeconds x 1.5 away — not from a threshold crossed late (no ETA,
    # or one already shorter than a rollout).
    summary = json.loads((guarded["guarded-leak"].directory / "summary.json").read_text())
    assert summary["lead_seconds"] == LEAD_SECONDS
    eta = restart["eta_seconds"]
    assert eta is not None and ROLLOUT_SECONDS <= eta <= LEAD_SECONDS, f"forecast ETA at the restart: {eta}"
    # The kernel's evidence: the identical twin, started at the same go, was OOM-killed at
    # least rolloutSeconds later in its life than this pod's age when the restart was decided.
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


def test_the_agent_ran_as_the_chart_runs_it_uid_0_without_any_capability(guarded):
    """charts/memoryguard/values.yaml runs the agent as uid 0 with capabilities drop [ALL] and
    allowPrivilegeEscalation false, not privileged. Here is that process, read from the
    guest's /proc at the end of the batch, and what it did: memory.reclaim and drop_caches."""
    assert_runs_as_the_chart_runs_the_agent(agent_credentials(guarded["guarded-leak"].directory.parent))
    log = DecisionLog.read(guarded["guarded-page-cache"].directory)
    reclaims = log.of_kind("reclaim")
    assert reclaims, "the agent was never asked to reclaim"
    reclaim = reclaims[0]["answer"]
    assert reclaim["http_status"] == 200 and reclaim["before"]["file_bytes"] > reclaim["after"]["file_bytes"]
    (drop,) = log.of_kind("drop_caches")
    assert drop["answer"]["http_status"] == 200 and drop["answer"]["freed_bytes"] > 0


def _trace(guarded, name: str):
    trace = load_trace(guarded[name].trace_path)
    assert len(trace.samples) >= 30, f"{name}: only {len(trace.samples)} rows"
    # Recorded from the container's first moment: the held process was already in it.
    assert trace.samples[0].alive
    assert int(trace.metadata["memory_max_bytes"]) == LIMIT_BYTES
    assert trace.metadata["workload"]
    return trace


def test_guarded_leak_trace_ends_with_memoryguards_restart_not_a_kill(guarded):
    trace = _trace(guarded, "guarded-leak")
    assert trace.metadata["outcome"].startswith("restarted by MemoryGuard"), trace.metadata
    assert trace.metadata["memoryguard_actions"].startswith("carried out")
    assert all(s.oom_kill == 0 for s in trace.samples)
    # The leak was well on its way, then the rollout stopped the pod (last row alive 0).
    assert max(s.anon_bytes for s in trace.samples) >= 100 * MIB
    assert not trace.samples[-1].alive


def test_twin_trace_shows_the_kernel_oom_kill(guarded):
    trace = _trace(guarded, "leak-unguarded")
    assert trace.metadata["outcome"].startswith("kernel OOM kill"), trace.metadata
    assert trace.metadata["memoryguard_actions"].startswith("none: dry run")
    failure = trace.failure
    assert failure is not None and "oom_kill" in failure.reason


def test_guarded_page_cache_trace_is_safe(guarded):
    trace = _trace(guarded, "guarded-page-cache")
    assert trace.metadata["outcome"].startswith("safe"), trace.metadata
    assert trace.failure is None
    assert max(s.file_bytes for s in trace.samples) >= 0.5 * LIMIT_BYTES
