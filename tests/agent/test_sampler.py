"""The sampler over fixture trees: what it reads, when, what it keeps and how it survives change."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import time
from pathlib import Path

import pytest
from tests.support.cgroup_tree import CgroupTree, GiB, KiB, MiB, write_proc

from memoryguard.agent import cgroup
from memoryguard.agent.cgroup import NoMemoryCgroup
from memoryguard.agent.ring import COLUMNS
from memoryguard.agent.sampler import Sampler
from memoryguard.engine.model import Sample


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=[2, 1], ids=["v2", "v1"])
def tree(request, tmp_path):
    return CgroupTree(tmp_path / "cg", version=request.param)


def make_sampler(tree: CgroupTree, clock: FakeClock | None = None, **kwargs) -> Sampler:
    proc = write_proc(tree.root.parent / "proc")
    return Sampler(tree.root, clock=clock or FakeClock(), proc_root=proc, **kwargs)


def latest(sampler: Sampler, uid: str, cid: str) -> Sample:
    [reading] = [r for r in sampler.latest() if (r.pod_uid, r.container_id) == (uid, cid)]
    return reading.latest


def test_picks_the_mounted_hierarchy(tree):
    assert make_sampler(tree).cgroup_version == tree.version


def test_hybrid_host_with_an_empty_cgroup2_picks_the_v1_memory_controller(tmp_path):
    # This dev machine: v1 controllers under /sys/fs/cgroup, an empty cgroup2 at unified/.
    v1 = CgroupTree(tmp_path / "cg", version=1, hybrid=True)
    assert (v1.root / "unified" / "cgroup.controllers").exists()
    assert Sampler(v1.root).cgroup_version == 1


def test_no_memory_hierarchy_is_a_clear_error(tmp_path):
    with pytest.raises(NoMemoryCgroup, match="no cgroup memory hierarchy"):
        Sampler(tmp_path)


def test_latest_reading_matches_the_files_exactly(tree):
    pod = tree.add_pod(
        containers=1,
        max_bytes=512 * MiB,
        anon_bytes=100 * MiB,
        file_bytes=30 * MiB,
        inactive_file_bytes=20 * MiB,
        active_file_bytes=8 * MiB,
        shmem_bytes=2 * MiB,
        kernel_bytes=3 * MiB + 123,
        swap_current_bytes=5 * MiB,
        swap_max_bytes=64 * MiB,
        oom_kill=2,
        max_events=7,
        pgmajfault=42,
        psi_some_avg10=1.5,
        psi_full_avg10=0.25,
    )
    cid = pod.containers[-1]
    sampler = make_sampler(tree)
    sampler.tick()

    s = latest(sampler, pod.uid, cid)
    assert (s.anon_bytes, s.file_bytes) == (100 * MiB, 30 * MiB)
    assert (s.inactive_file_bytes, s.active_file_bytes, s.shmem_bytes) == (20 * MiB, 8 * MiB, 2 * MiB)
    assert s.kernel_bytes == 3 * MiB + 123
    assert s.current_bytes == 133 * MiB + 123
    assert s.working_set_bytes == 113 * MiB + 123
    assert s.max_bytes == 512 * MiB
    assert s.swap_current_bytes == 5 * MiB
    assert s.swap_max_bytes == 64 * MiB
    assert s.oom_kill == 2
    assert s.max_events == 7
    assert s.pgmajfault == 42
    if tree.version == 2:
        assert s.psi_some_avg10 == 1.5 and s.psi_full_avg10 == 0.25
        assert s.high_bytes is None  # memory.high says max
    else:
        assert s.psi_some_avg10 is None and s.high_bytes is None  # v1 has neither
    assert sampler.errors == dict.fromkeys(cgroup.ERROR_KINDS, 0)


def test_v1_unlimited_limit_and_swap_are_none(tmp_path):
    v1 = CgroupTree(tmp_path / "cg", version=1)
    pod = v1.add_pod(containers=1, max_bytes=None)
    sampler = make_sampler(v1)
    sampler.tick()
    s = latest(sampler, pod.uid, pod.containers[-1])
    assert s.max_bytes is None and s.swap_max_bytes is None


def test_changes_show_up_fast_fields_next_tick_limits_within_the_slow_period(tree):
    pod = tree.add_pod(containers=1, max_bytes=256 * MiB, anon_bytes=10 * MiB)
    cid = pod.containers[-1]
    clock = FakeClock()
    sampler = make_sampler(tree, clock, slow_every_ticks=10)
    sampler.tick()

    tree.set(pod.uid, cid, anon_bytes=80 * MiB, max_bytes=512 * MiB)
    clock.t += 1
    sampler.tick()
    assert latest(sampler, pod.uid, cid).anon_bytes == 80 * MiB

    seen = []
    for _ in range(10):
        clock.t += 1
        sampler.tick()
        seen.append(latest(sampler, pod.uid, cid).max_bytes)
    assert seen[-1] == 512 * MiB
    assert 256 * MiB in seen or seen[0] == 512 * MiB  # read on its own schedule, not every tick


def test_window_rows_rebuild_samples_and_follow_the_files(tree):
    pod = tree.add_pod(containers=1, anon_bytes=10 * MiB)
    cid = pod.containers[-1]
    clock = FakeClock(1000.0)
    sampler = make_sampler(tree, clock)
    for i in range(5):
        tree.set(pod.uid, cid, anon_bytes=(10 + i) * MiB)
        sampler.tick()
        clock.t += 1

    snap = sampler.snapshot([pod.uid], window_seconds=600)
    [container] = [c for c in snap["pods"][0]["containers"] if c["container_id"] == cid]
    window = container["window"]
    assert window["columns"] == list(COLUMNS)
    samples = [Sample.from_dict(dict(zip(window["columns"], row, strict=True))) for row in window["rows"]]
    assert [s.t_seconds for s in samples] == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0]
    assert [s.anon_bytes for s in samples] == [(10 + i) * MiB for i in range(5)]


def test_snapshot_has_the_agent_api_shape(tree):
    pod = tree.add_pod(qos="burstable", containers=1, anon_bytes=10 * MiB, max_bytes=GiB)
    sampler = make_sampler(tree)
    sampler.tick()
    brief = sampler.snapshot(None, window_seconds=600)
    snap = sampler.snapshot(None, window_seconds=600, full=True)

    assert set(snap) == {"pods", "missing"}
    for c in brief["pods"][0]["containers"]:
        assert set(c) == {"container_id", "runtime", "cgroup_path", "latest", "window"}
    [entry] = snap["pods"]
    assert entry["pod_uid"] == pod.uid
    assert entry["qos"] == "burstable"
    assert entry["cgroup_path"] == str(pod.path.relative_to(tree.memory_root))
    assert Sample.from_dict(entry["latest"]).anon_bytes == 10 * MiB + 200 * KiB  # app + sandbox
    assert len(entry["containers"]) == 2  # the sandbox is a container too
    for c in entry["containers"]:
        assert set(c) == {
            "container_id",
            "runtime",
            "cgroup_path",
            "latest",
            "stat",
            "events",
            "swap_events",
            "pressure",
            "limits",
            "window",
        }
        assert Sample.from_dict(c["latest"]) is not None
    app = next(c for c in entry["containers"] if c["container_id"] == pod.containers[-1])
    if tree.version == 2:
        assert app["stat"]["anon"] == 10 * MiB
        assert app["events"] == {"low": 0, "high": 0, "max": 0, "oom": 0, "oom_kill": 0, "oom_group_kill": 0}
        assert app["swap_events"] == {"high": 0, "max": 0, "fail": 0}
        assert app["pressure"]["some"]["avg10"] == 0.0
        assert app["limits"] == {
            "max_bytes": GiB,
            "high_bytes": None,
            "swap_max_bytes": None,
            "min_bytes": 0,
            "low_bytes": 0,
        }
    else:
        assert app["stat"]["total_rss"] == 10 * MiB
        assert app["events"] == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 0, "failcnt": 0}
        assert app["swap_events"] == {} and app["pressure"] == {}


def test_snapshot_window_since_and_missing(tree):
    pod = tree.add_pod(containers=1)
    clock = FakeClock(5000.0)
    sampler = make_sampler(tree, clock)
    for _ in range(30):
        sampler.tick()
        clock.t += 1
    clock.t -= 1  # now = time of the last tick

    def times(**kwargs):
        snap = sampler.snapshot([pod.uid, "00000000-0000-4000-8000-000000000000"], **kwargs)
        assert snap["missing"] == ["00000000-0000-4000-8000-000000000000"]
        return [r[0] for r in snap["pods"][0]["containers"][0]["window"]["rows"]]

    assert times(window_seconds=10) == [5020.0 + i for i in range(10)]
    assert times(window_seconds=600, since_seconds=5026.0) == [5027.0, 5028.0, 5029.0]
    assert times(window_seconds=0) == []


def test_retention_is_bounded_with_a_fake_clock(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1)
    clock = FakeClock(0.0)
    sampler = make_sampler(tree, clock, retention_seconds=1800)
    for _ in range(2500):
        sampler.tick()
        clock.t += 1
    clock.t -= 1
    rows = sampler.snapshot([pod.uid], window_seconds=1800)["pods"][0]["containers"][0]["window"]["rows"]
    assert 2499 - rows[0][0] <= 1800
    assert len(rows) <= 450
    # Two containers (app and sandbox): 450 rows of 52 bytes each, plus one change-log entry.
    assert sampler.ring_bytes() <= 2 * (450 * 52 + 2 * 44)


def test_new_containers_are_found_and_removed_ones_forgotten(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    first = tree.add_pod(containers=1)
    sampler = make_sampler(tree, discover_every_ticks=5)
    sampler.tick()
    assert sampler.container_count == 2

    second = tree.add_pod(containers=2)
    for _ in range(5):
        sampler.tick()
    assert sampler.container_count == 5 and sampler.pod_count == 2

    tree.remove_pod(first.uid)
    stats = sampler.tick()
    assert stats.containers == 3
    assert {r.pod_uid for r in sampler.latest()} == {second.uid}
    sampler.tick()  # a container that vanished makes the next tick look at the tree again
    assert sampler.snapshot([first.uid], window_seconds=60)["missing"] == [first.uid]
    assert sampler.pod_count == 1


def test_a_cgroup_removed_between_discovery_and_read_is_skipped_and_counted(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1)
    keep = tree.add_pod(containers=1)
    sampler = make_sampler(tree, discover_every_ticks=1000)
    sampler.tick()
    gone = pod.containers[-1]
    tree.remove_container(pod.uid, gone)

    stats = sampler.tick()

    assert sampler.errors["vanished"] == 1
    assert stats.errors == 1
    assert stats.containers == 3
    assert (pod.uid, gone) not in {(r.pod_uid, r.container_id) for r in sampler.latest()}
    assert keep.uid in {r.pod_uid for r in sampler.latest()}


def test_a_missing_file_is_counted_once_and_leaves_its_field_unknown(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1, swap_current_bytes=MiB)
    cid = pod.containers[-1]
    tree.remove_file(pod.uid, cid, "memory.swap.current")  # swap accounting off
    sampler = make_sampler(tree)
    for _ in range(20):
        sampler.tick()
    assert sampler.errors["missing_file"] == 1
    s = latest(sampler, pod.uid, cid)
    assert s.swap_current_bytes is None
    assert s.anon_bytes == tree.values(pod.uid, cid).anon_bytes


def test_a_malformed_stat_skips_the_row_counts_it_and_recovers(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1, anon_bytes=10 * MiB)
    cid = pod.containers[-1]
    clock = FakeClock(100.0)
    sampler = make_sampler(tree, clock)
    sampler.tick()
    tree.write_file(pod.uid, cid, "memory.stat", b"anon lots\nfile 4096\n\x00\xff garbage\n")
    tree.write_file(pod.uid, cid, "memory.current", b"not a number\n")
    clock.t = 101.0
    stats = sampler.tick()
    assert stats.errors >= 2 and sampler.errors["malformed"] >= 2
    tree.set(pod.uid, cid, anon_bytes=12 * MiB)
    clock.t = 102.0
    sampler.tick()

    rows = sampler.snapshot([pod.uid], window_seconds=60)["pods"][0]["containers"]
    app = next(c for c in rows if c["container_id"] == cid)
    assert [(r[0], r[1]) for r in app["window"]["rows"]] == [(100.0, 10 * MiB), (102.0, 12 * MiB)]


def test_find_returns_discovered_directories_for_valid_ids_only(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1)
    cid = pod.containers[-1]
    sampler = make_sampler(tree)
    sampler.tick()
    assert sampler.find(pod.uid, cid) == tree.path(pod.uid, cid)
    assert sampler.find(pod.uid, None) == tree.path(pod.uid)
    assert sampler.find("00000000-0000-4000-8000-000000000000", None) is None
    assert sampler.find(pod.uid, "0" * 64) is None
    for bad_uid in ("../../etc", pod.uid.upper(), pod.uid.replace("-", "_"), ""):
        with pytest.raises(ValueError, match="pod_uid"):
            sampler.find(bad_uid, None)
    for bad_id in ("../memory.max", cid[:-1], "containerd://" + cid, cid.upper()):
        with pytest.raises(ValueError, match="container_id"):
            sampler.find(pod.uid, bad_id)


def test_planned_opens_are_exactly_the_opens_a_tick_makes(tmp_path, monkeypatch):
    # The benchmark's floor loop makes planned_opens(n): it must be the tick's real work.
    tree = CgroupTree(tmp_path / "cg")
    for _ in range(4):
        tree.add_pod(containers=2)
    sampler = make_sampler(tree)
    sampler.tick()
    real_open = cgroup.os.open
    for _ in range(12):
        planned = sampler.planned_opens(sampler.tick_no)
        opened: list[tuple[int | None, str]] = []

        def recording_open(path, flags, *args, dir_fd=None, _opened=opened, **kwargs):
            _opened.append((dir_fd, path))
            return real_open(path, flags, *args, dir_fd=dir_fd, **kwargs)

        monkeypatch.setattr(cgroup.os, "open", recording_open)
        sampler.tick()
        monkeypatch.setattr(cgroup.os, "open", real_open)
        assert sorted(opened, key=str) == sorted(planned, key=str)
        assert all(dir_fd is not None and "/" not in name for dir_fd, name in opened)  # openat
    paths = sampler.planned_paths(sampler.tick_no)
    assert all(p.startswith(str(tree.memory_root)) and os.path.exists(p) for p in paths)


def test_a_cgroup_made_again_at_the_same_path_is_read_again(tmp_path):
    # The probe holds a descriptor of the directory: a new directory at the same path must be
    # noticed, not read as "every file missing" through the old one.
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1, anon_bytes=10 * MiB)
    path = tree.path(pod.uid)
    probe = cgroup.CgroupProbe(path, cgroup.V2_LAYOUT)
    errors: dict[str, int] = {}
    assert probe.read(cgroup.ALL_TIERS, errors)
    moved = path.with_name(path.name + ".old")
    path.rename(moved)
    shutil.copytree(moved, path)
    shutil.rmtree(moved)
    tree.set(pod.uid, pod.containers[-1], anon_bytes=30 * MiB)  # rewrites the pod's files too

    assert probe.read(cgroup.ALL_TIERS, errors)  # notices the replacement
    assert probe.read(cgroup.ALL_TIERS, errors)
    assert probe.values[cgroup.ANON] == 30 * MiB + 200 * KiB
    assert probe.missing == set()
    assert errors.get("missing_file", 0) == 0


def test_a_file_malformed_in_between_is_parsed_again_when_its_old_bytes_come_back(tmp_path):
    # Unchanged limits/events/PSI bytes skip their parser; bytes that were malformed must not
    # leave the reading as the malformed read set it once the good bytes return.
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1)
    cid = pod.containers[-1]
    tree.set(pod.uid, cid, oom_kill=3)
    probe = cgroup.CgroupProbe(tree.path(pod.uid, cid), cgroup.V2_LAYOUT)
    errors: dict[str, int] = {}
    assert probe.read(cgroup.ALL_TIERS, errors) and probe.values[cgroup.OOM_KILL] == 3
    good = (tree.path(pod.uid, cid) / "memory.events").read_bytes()

    tree.write_file(pod.uid, cid, "memory.events", good.replace(b"oom_kill 3", b"oom_kill x"))
    for expected_malformed in (1, 2):  # counted at every read, not once
        assert probe.read(cgroup.MEDIUM, errors)
        assert probe.values[cgroup.OOM_KILL] == 0
        assert errors["malformed"] == expected_malformed
    tree.write_file(pod.uid, cid, "memory.events", good)
    assert probe.read(cgroup.MEDIUM, errors)
    assert probe.values[cgroup.OOM_KILL] == 3
    assert errors["malformed"] == 2


def test_v1_swap_limit_follows_a_new_memory_limit_with_the_memsw_file_unchanged(tmp_path):
    # v1 swap max = memsw limit − memory limit: the memsw applier must run even when its own
    # bytes are the same as last time.
    tree = CgroupTree(tmp_path / "cg", version=1)
    pod = tree.add_pod(containers=1, max_bytes=256 * MiB)
    cid = pod.containers[-1]
    tree.set(pod.uid, cid, max_bytes=256 * MiB, swap_max_bytes=256 * MiB)
    probe = cgroup.CgroupProbe(tree.path(pod.uid, cid), cgroup.V1_LAYOUT)
    errors: dict[str, int] = {}
    assert probe.read(cgroup.ALL_TIERS, errors)
    assert probe.values[cgroup.SWAP_MAX] == 256 * MiB
    memsw = (tree.path(pod.uid, cid) / "memory.memsw.limit_in_bytes").read_bytes()

    tree.write_file(pod.uid, cid, "memory.limit_in_bytes", f"{384 * MiB}\n")
    assert (tree.path(pod.uid, cid) / "memory.memsw.limit_in_bytes").read_bytes() == memsw
    assert probe.read(cgroup.SLOW, errors)
    assert probe.values[cgroup.MAX] == 384 * MiB
    assert probe.values[cgroup.SWAP_MAX] == 128 * MiB
    assert not any(errors.values())


def test_closing_releases_the_directory_descriptors(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    for _ in range(3):
        tree.add_pod(containers=2)
    before = len(os.listdir("/proc/self/fd"))
    sampler = make_sampler(tree)
    sampler.tick()
    assert len(os.listdir("/proc/self/fd")) - before == 12  # 3 pods, each with 2 apps and a sandbox
    sampler.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_node_reading_has_meminfo_psi_and_root_stats(tree):
    tree.add_pod(containers=1, anon_bytes=10 * MiB)
    sampler = make_sampler(tree)
    node = sampler.node()
    assert node["meminfo"]["MemTotal"] == 16 * GiB
    assert set(node["pressure"]) == {"some", "full"}
    assert node["root_stat"]  # the root cgroup's memory.stat
    if tree.version == 1:
        assert node["root_usage_bytes"] == int((tree.memory_root / "memory.usage_in_bytes").read_text())
    else:
        assert "root_usage_bytes" not in node
    assert not any(sampler.errors.values())


def test_node_files_missing_are_counted_once_unreadable_ones_every_time(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    sampler = make_sampler(tree)
    proc = tree.root.parent / "proc"
    (proc / "pressure" / "memory").unlink()
    (proc / "meminfo").write_text("MemTotal: lots kB\nMemFree:  1024 kB\n")
    readings = [sampler.node() for _ in range(3)]
    assert all("pressure" not in r for r in readings)
    assert readings[-1]["meminfo"] == {"MemFree": 1024 * 1024}  # the good line kept
    assert sampler.errors["missing_file"] == 1
    assert sampler.errors["malformed"] == 3


async def test_run_ticks_on_schedule_and_stops_promptly(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    tree.add_pod(containers=1)
    sampler = Sampler(tree.root, interval_seconds=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(sampler.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(task, timeout=2)
    assert time.monotonic() - started < 0.5
    assert 3 <= sampler.ticks <= 12
    assert sampler.last_tick_t_seconds is not None


async def test_a_slow_tick_skips_slots_instead_of_bunching(tmp_path, monkeypatch):
    tree = CgroupTree(tmp_path / "cg")
    sampler = Sampler(tree.root, interval_seconds=0.02)
    starts: list[float] = []
    real_tick = sampler.tick

    def slow_tick():
        starts.append(time.monotonic())
        time.sleep(0.07)  # 3.5 intervals
        return real_tick()

    monkeypatch.setattr(sampler, "tick", slow_tick)
    stop = asyncio.Event()
    task = asyncio.create_task(sampler.run(stop))
    await asyncio.sleep(0.6)
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps and min(gaps) >= 0.07  # never back to back to catch up


def test_invalid_settings_are_refused_naming_the_field(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    with pytest.raises(ValueError, match="interval_seconds"):
        Sampler(tree.root, interval_seconds=0)
    with pytest.raises(ValueError, match="medium_every_ticks"):
        Sampler(tree.root, medium_every_ticks=0)


def test_a_permission_error_is_counted_as_permission(tmp_path):
    probe = cgroup.CgroupProbe(tmp_path, cgroup.V2_LAYOUT)
    assert probe._classify(PermissionError(13, "Permission denied"), "memory.stat") == "permission"
    assert probe._classify(OSError(5, "Input/output error"), "memory.stat") == "io"
    assert probe._classify(FileNotFoundError(2, "gone"), "memory.stat") == "missing_file"
    assert probe.missing == {"memory.stat"}
    gone = cgroup.CgroupProbe(Path(tmp_path) / "nope", cgroup.V2_LAYOUT)
    assert gone._classify(FileNotFoundError(2, "gone"), "memory.stat") == "vanished"


def test_a_memory_stat_longer_than_one_read_is_read_to_its_end(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    pod = tree.add_pod(containers=1, anon_bytes=10 * MiB)
    cid = pod.containers[-1]
    padding = "".join(f"future_key_{i} {i}\n" for i in range(1000))  # ~19 KiB before the keys
    tree.write_file(pod.uid, cid, "memory.stat", padding + f"anon {20 * MiB}\nfile {MiB}\ninactive_file 0\n")
    sampler = make_sampler(tree)
    sampler.tick()
    sampler.tick()
    s = latest(sampler, pod.uid, cid)
    assert (s.anon_bytes, s.file_bytes, s.inactive_file_bytes) == (20 * MiB, MiB, 0)
    assert sampler.errors["malformed"] == 0


def test_a_pod_asked_for_before_its_discovery_is_found_and_read_at_once(tmp_path):
    tree = CgroupTree(tmp_path / "cg")
    tree.add_pod(containers=1)
    clock = FakeClock(100.0)
    sampler = make_sampler(tree, clock, discover_every_ticks=1000, interval_seconds=0.05)
    sampler.tick()
    new = tree.add_pod(containers=1, anon_bytes=42 * MiB)  # started after the last discovery

    snap = sampler.snapshot([new.uid], window_seconds=60)

    assert snap["missing"] == []
    [pod] = snap["pods"]
    app = next(c for c in pod["containers"] if c["container_id"] == new.containers[-1])
    assert Sample.from_dict(app["latest"]).anon_bytes == 42 * MiB
    assert len(app["window"]["rows"]) == 1
    # Asking again for something that is not there does not list the tree every time.
    calls = []
    real = sampler.rediscover_now
    sampler.rediscover_now = lambda: calls.append(1) or real()  # type: ignore[method-assign]
    for _ in range(5):
        assert sampler.snapshot(["00000000-0000-4000-8000-000000000000"], window_seconds=60)["missing"]
    assert len(calls) <= 1
    # Once an interval has passed, asking (here: for a reclaim target) looks again.
    later = tree.add_pod(containers=1)
    time.sleep(sampler.interval_seconds)
    assert sampler.find(later.uid, later.containers[-1]) == tree.path(later.uid, later.containers[-1])
