"""`memoryguard sample`, the tick benchmark: run as the real command over fixture trees."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tests.support.cgroup_tree import CgroupTree, MiB, build_node

from memoryguard.agent import cgroup
from memoryguard.agent.sampler import Sampler


def sample(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "memoryguard.cli", "sample", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(("version", "driver"), [(2, "systemd"), (1, "cgroupfs")])
def test_sample_reports_every_container_and_positive_tick_statistics(tmp_path, version, driver):
    tree = build_node(tmp_path / "node", containers=30, version=version, driver=driver)
    report = sample("--root", str(tree.root), "--repeat", "5", "--retention", "60", "--fill-rings")
    assert report["containers"] == len(tree.containers) == 30
    assert report["pods"] == len(tree.pods)
    assert report["cgroup_version"] == version
    assert report["ticks"] == 5
    assert report["files_per_tick"] > 2 * 30  # at least usage and memory.stat of each container
    for key in ("tick_seconds", "floor_tick_seconds", "tick_cpu_seconds", "floor_cpu_seconds"):
        stats = report[key]
        assert set(stats) == {"median", "p90", "max", "mean"}, key
        assert 0 < stats["median"] <= stats["p90"] <= stats["max"], key
    assert report["ratio_median_to_floor"] > 0
    assert report["cpu_share_of_one_core_at_1hz"] > 0
    assert report["rss_bytes"] > 0 and report["rss_peak_bytes"] >= report["rss_bytes"]
    # --fill-rings: one fake second per tick over the whole retention, so every ring is full.
    assert report["rings_filled"] is True and report["fill_ticks"] == 60
    assert report["ring_bytes"] > 0
    assert sum(report["errors"].values()) == 0, report["errors"]


def test_sample_counts_a_malformed_file(tmp_path):
    tree = CgroupTree(tmp_path / "cgroup", version=2, driver="systemd")
    pod = tree.add_pod(qos="burstable", containers=1, max_bytes=256 * MiB)
    tree.add_pod(qos="besteffort", containers=1)
    tree.write_file(pod.uid, pod.containers[-1], "memory.max", "a lot\n")
    report = sample("--root", str(tree.root), "--repeat", "20")
    errors = report["errors"]
    # Read (and found malformed) at the first full read and at every SLOW read after it: a
    # malformed file is parsed and counted at every read, never skipped as unchanged.
    assert errors["malformed"] >= 2, errors
    assert sum(errors.values()) == errors["malformed"], errors
    assert report["containers"] == 4


def test_sample_serve_measures_each_request_and_a_steady_second(tmp_path):
    tree = build_node(tmp_path / "node", containers=30)
    report = sample(
        "--root", str(tree.root), "--repeat", "3", "--retention", "120", "--fill-rings",
        "--serve", "--serve-repeat", "2", "--serve-seconds", "2",
    )  # fmt: skip
    serving = report["serving"]
    assert serving["rss_bytes_idle"] > 0
    requests = serving["requests"]
    assert list(requests) == [
        "metrics",
        "pods_incremental",
        "pods_incremental_full_detail",
        "pods_window_600s",
        "pods_window_1800s",
    ]
    for name, measured in requests.items():
        assert measured["answer_bytes"] > 0, name
        assert measured["cpu_seconds"]["median"] > 0 and measured["wall_seconds"]["median"] > 0, name
        assert measured["rss_peak_bytes"] >= measured["rss_bytes_after"] > 0, name
    # The incremental answer carries one row per container; a window carries the whole ring
    # (120 s of retention: a 600 s window is all of it) and full detail adds each cgroup's files.
    incremental = requests["pods_incremental"]["answer_bytes"]
    assert requests["pods_incremental_full_detail"]["answer_bytes"] > 1.5 * incremental
    assert requests["pods_window_600s"]["answer_bytes"] > 5 * incremental
    window = requests["pods_window_600s"]["answer_bytes"]
    assert requests["pods_window_1800s"]["answer_bytes"] == pytest.approx(window, rel=0.01)
    steady = serving["steady"]
    assert (steady["ticks"], steady["pods_requests"], steady["metrics_scrapes"]) == (2, 2, 1)
    assert 1.9 <= steady["seconds"] < 10
    assert 0 < steady["tick_cpu_share_of_one_core"] < steady["cpu_share_of_one_core"]
    assert steady["rss_peak_bytes"] >= steady["rss_bytes"] > 0
    # What one answer allocates and holds at once is traced (by tracemalloc, after the timings).
    traced = serving["traced_peak_bytes"]
    assert list(traced) == ["metrics", "pods_window_600s"]
    assert traced["pods_window_600s"] > 0 and traced["metrics"] > 0
    assert sum(report["errors"].values()) == 0, report["errors"]


def test_no_skip_unchanged_parses_every_file_at_every_tick(tmp_path):
    # The switch BENCHMARKS.md measures the skip with: off, nothing is skippable; on (the
    # agent's only setting), the MEDIUM and SLOW files are and memory.stat and usage never are.
    tree = build_node(tmp_path / "node", containers=10)
    assert sample("--root", str(tree.root), "--repeat", "3")["skip_unchanged"] is True
    assert sample("--root", str(tree.root), "--repeat", "3", "--no-skip-unchanged")["skip_unchanged"] is False
    for skip in (True, False):
        sampler = Sampler(tree.root, proc_root=tree.root.parent / "proc", skip_unchanged=skip)
        sampler.tick()
        probes = [t.probe for t in sampler._containers.values()]
        assert len(probes) == 10
        for probe in probes:
            plan = probe._plans[cgroup.ALL_TIERS]
            skippable = {name for name, _, may_skip in plan if may_skip}
            assert not {"memory.current", "memory.stat"} & skippable
            assert ("memory.max" in skippable and "memory.events" in skippable) is skip, (skip, skippable)
