"""`memoryguard record`: trace files from live cgroups, readable by the trace parser."""

from __future__ import annotations

import csv
import io

import pytest
from tests.support.cgroup_tree import CgroupTree, MiB

from memoryguard import cli
from memoryguard.agent.cgroup import V1_LAYOUT, V2_LAYOUT, CgroupProbe
from memoryguard.commands import record as rec
from memoryguard.traces import parse_trace


class FakeTime:
    """A clock that only moves when record sleeps; ``on_sleep`` plays the workload."""

    def __init__(self, on_sleep=None) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))


def record_rows(tree: CgroupTree, uid: str, cid: str, fake: FakeTime, **kwargs) -> tuple[str, int, str]:
    layout = V2_LAYOUT if tree.version == 2 else V1_LAYOUT
    probe = CgroupProbe(tree.path(uid, cid), layout)
    assert probe.read(7, {})
    out = io.StringIO()
    options = {"seconds": None, "interval": 1.0, "linger": 5.0, **kwargs}
    rows, reason = rec.record(
        probe, out, {"cgroup": str(tree.path(uid, cid))}, clock=fake.clock, sleep=fake.sleep, **options
    )
    return out.getvalue(), rows, reason


@pytest.mark.parametrize("version", [2, 1])
def test_a_leak_recorded_until_the_cgroup_vanishes(tmp_path, version):
    tree = CgroupTree(tmp_path / "cg", version=version)
    pod = tree.add_pod(containers=1, max_bytes=256 * MiB, anon_bytes=10 * MiB, procs=(4242,))
    cid = pod.containers[-1]

    def workload(step: int) -> None:
        if step < 5:
            tree.set(pod.uid, cid, anon_bytes=(10 + 20 * step) * MiB)
        else:
            tree.remove_container(pod.uid, cid)

    text, rows, reason = record_rows(tree, pod.uid, cid, FakeTime(workload))

    assert reason == "the cgroup disappeared"
    trace = parse_trace(text)
    assert [s.t_seconds for s in trace.samples] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [s.anon_bytes // MiB for s in trace.samples] == [10, 30, 50, 70, 90, 90]
    assert [s.alive for s in trace.samples] == [True] * 5 + [False]  # gone at t=5
    assert {s.max_bytes for s in trace.samples} == {256 * MiB}
    assert trace.samples[0].high_bytes is None
    assert trace.failure is not None and trace.failure.t_seconds == 5.0
    assert rows == 6


def test_header_columns_and_metadata(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1, procs=(1,))
    text, _, reason = record_rows(tree, pod.uid, pod.containers[-1], FakeTime(), seconds=3)
    lines = text.splitlines()
    assert lines[0] == f"# cgroup: {tree.path(pod.uid, pod.containers[-1])}"
    assert lines[1].split(",") == list(rec.COLUMNS)
    assert reason == "3 seconds recorded"
    rows = list(csv.DictReader(lines[1:]))
    assert len(rows) == 3
    assert rows[0]["max"] == "max" and rows[0]["swap_max"] == "max"
    assert rows[0]["psi_some_avg10"] == "0.00"


def test_v1_unknowns_are_empty_cells_not_zeros(tmp_path):
    tree = CgroupTree(tmp_path / "cg", version=1)
    pod = tree.add_pod(containers=1, procs=(1,))
    text, _, _ = record_rows(tree, pod.uid, pod.containers[-1], FakeTime(), seconds=1)
    [row] = list(csv.DictReader(text.splitlines()[1:]))
    assert row["psi_some_avg10"] == "" and row["psi_full_avg10"] == ""
    assert row["high"] == "max"


def test_stops_after_linger_once_no_process_is_left(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1, procs=(7,))
    cid = pod.containers[-1]

    def workload(step: int) -> None:
        if step == 3:
            tree.set(pod.uid, cid, procs=())

    text, _rows, reason = record_rows(tree, pod.uid, cid, FakeTime(workload), linger=2)
    alive = [s.alive for s in parse_trace(text).samples]
    assert reason == "no process left in the cgroup"
    assert alive == [True, True, True, False, False, False]


def test_a_slow_read_skips_slots_instead_of_drifting(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1, procs=(1,))
    fake = FakeTime()

    def slow(step: int) -> None:
        if step == 2:
            fake.t += 2.5  # this read took 2.5 intervals

    fake.on_sleep = slow
    text, _, _ = record_rows(tree, pod.uid, pod.containers[-1], fake, seconds=8)
    times = [s.t_seconds for s in parse_trace(text).samples]
    assert times == [0.0, 1.0, 4.5, 5.0, 6.0, 7.0]


def test_cli_writes_a_file_and_refuses_bad_meta(tmp_path, capsys):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1, procs=(1,))
    rel = str(tree.path(pod.uid, pod.containers[-1]).relative_to(tree.memory_root))
    out = tmp_path / "trace.csv"
    argv = ["record", rel, "--root", str(tree.root), "-o", str(out), "--seconds", "0.2", "--interval", "0.1"]
    assert cli.main([*argv, "--meta", "runtime_heap_limit_bytes=100663296"]) == 0
    trace = parse_trace(out.read_text())
    assert trace.runtime_heap_limit_bytes == 100663296
    assert len(trace.samples) == 2
    with pytest.raises(SystemExit):
        cli.main([*argv, "--meta", "no equals sign"])
    with pytest.raises(SystemExit, match="no such cgroup"):
        cli.main(["record", "nope.scope", "--root", str(tree.root), "-o", str(out)])
