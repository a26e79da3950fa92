"""`memoryguard explain`: the seed 000 screen from real readings, with the engine's verdict."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.support.agent_process import AgentProcess
from tests.support.cgroup_tree import CgroupTree, GiB, MiB, write_proc

from memoryguard import cli
from memoryguard.commands.explain import Observed, render
from memoryguard.traces import parse_trace

TRACES = Path(__file__).resolve().parents[1] / "traces"


def section(screen: str, name: str) -> list[str]:
    lines = screen.split(f"=== {name} ===\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [line.strip() for line in lines]


def before_failure(name: str, seconds: float = 120.0) -> list:
    trace = parse_trace((TRACES / name).read_text())
    samples = trace.samples
    if trace.failure is not None:
        samples = [s for s in samples if s.t_seconds < trace.failure.t_seconds]
    return [s for s in samples if s.t_seconds >= samples[-1].t_seconds - seconds]


@pytest.mark.parametrize(
    ("trace", "headline"),
    [
        ("node-buffer-leak-2mbs.csv", "ANON GROWTH"),  # seed 000: Buffer leak outside the V8 heap
        ("page-cache-safe.csv", "PAGE CACHE"),  # seed 004: cache fills the limit, reclaim frees it
        ("node-plateau-safe.csv", "HEALTHY"),
    ],
)
def test_the_verdict_on_real_kernel_traces_comes_from_the_engine(trace, headline):
    samples = before_failure(trace)
    screen = render(Observed("x", samples, {}, 2), now_seconds=samples[-1].t_seconds)
    verdict = section(screen, "VERDICT")
    assert verdict[0].startswith(headline)
    assert len(verdict) >= 2 and verdict[1]  # the engine's evidence, in words


def test_screen_shows_usage_swap_breakdown_events_and_memory_high(tmp_path, capsys):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(
        max_bytes=GiB,
        anon_bytes=300 * MiB,
        file_bytes=100 * MiB,
        high_bytes=900 * MiB,
        swap_current_bytes=10 * MiB,
        swap_max_bytes=64 * MiB,
        high_events=17,
        oom_kill=1,
        psi_some_avg10=3.25,
    )
    cid = pod.containers[-1]
    rel = str(tree.path(pod.uid, cid).relative_to(tree.memory_root))

    assert cli.main(["explain", rel, "--root", str(tree.root), "--seconds", "0.3", "--interval", "0.1"]) == 0
    screen = capsys.readouterr().out

    usage = section(screen, "USAGE")
    assert usage[0].endswith("400Mi of 1.00Gi (39.1%)")  # 300 anon + 100 file + 0.5 kernel
    assert section(screen, "SWAP") == ["swap used                10.0Mi", "swap max                 64.0Mi"]
    breakdown = dict(line.rsplit(None, 2)[:2] for line in section(screen, "BREAKDOWN"))
    assert breakdown["anon"] == "300.00" and breakdown["file"] == "100.00"
    events = dict(line.split() for line in section(screen, "EVENTS"))
    assert events["high"] == "17" and events["oom_kill"] == "1"
    assert section(screen, "SWAP EVENTS")[0].split() == ["high", "0"]
    assert section(screen, "MEMORY.HIGH") == ["900Mi", "throttled 17 times so far (memory.events high)"]
    assert section(screen, "PRESSURE (PSI)")[0].startswith("some  avg10   3.25%")
    assert "4 readings" in section(screen, "TREND")[0]
    assert section(screen, "VERDICT")[0].startswith("NOT ENOUGH DATA")


def test_a_pod_uid_explains_each_of_its_containers(tmp_path, capsys):
    tree = CgroupTree(tmp_path / "cg", version=1)
    pod = tree.add_pod(containers=2, max_bytes=512 * MiB, anon_bytes=64 * MiB)
    assert cli.main(["explain", pod.uid, "--root", str(tree.root), "--seconds", "0"]) == 0
    screen = capsys.readouterr().out
    for cid in pod.containers:
        assert f"container {cid[:13]}" in screen
    assert screen.count("=== VERDICT ===") == 3  # two app containers and the sandbox
    assert "none on cgroup v1" in screen


def test_unknown_targets_are_plain_errors(tmp_path, capsys):
    tree = CgroupTree(tmp_path / "cg")
    assert cli.main(["explain", "00000000-0000-4000-8000-000000000000", "--root", str(tree.root)]) == 1
    assert "not on this node" in capsys.readouterr().err
    assert cli.main(["explain", "no/such/cgroup", "--root", str(tree.root)]) == 1
    assert "neither a pod UID nor a cgroup" in capsys.readouterr().err


def test_explain_through_a_real_agent_uses_its_history(tmp_path, capsys):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(max_bytes=GiB, anon_bytes=200 * MiB, file_bytes=20 * MiB)
    cid = pod.containers[-1]
    with AgentProcess(root=tree.root, proc_root=write_proc(tmp_path / "proc")) as agent:
        agent.wait_ready()
        deadline = time.monotonic() + 20
        screen = ""
        while time.monotonic() < deadline:  # until the agent holds 20 samples of the container
            assert cli.main(["explain", pod.uid, "--agent", agent.url]) == 0
            screen = capsys.readouterr().out
            if f"container {cid[:13]}" in screen and "NOT ENOUGH DATA" not in screen.split("-" * 72)[0]:
                break
            time.sleep(0.5)
    app = next(part for part in screen.split("-" * 72) if f"container {cid[:13]}" in part)
    assert "anon                         200.00 MiB" in app
    assert section(app, "VERDICT")[0].startswith("HEALTHY")
