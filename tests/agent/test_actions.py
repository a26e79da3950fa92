"""Node-local actions: memory.reclaim in chunks (EAGAIN = partial), drop_caches."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from tests.support.cgroup_tree import CgroupTree, GiB, MiB, write_proc

from memoryguard.agent import actions
from memoryguard.agent.actions import ReclaimUnsupported, drop_caches, reclaim


@pytest.fixture
def tree(tmp_path):
    return CgroupTree(tmp_path / "cg", version=2)


class KernelStandIn:
    """Plays the kernel behind memory.reclaim: frees what it is asked until only `floor` is left."""

    def __init__(self, tree: CgroupTree, uid: str, cid: str, *, reclaimable_bytes: int) -> None:
        self.tree, self.uid, self.cid = tree, uid, cid
        self.reclaimable_bytes = reclaimable_bytes
        self.writes: list[tuple[str, int]] = []

    def __call__(self, path: str, nbytes: int) -> None:
        self.writes.append((path, nbytes))
        take = min(nbytes, self.reclaimable_bytes)
        values = self.tree.values(self.uid, self.cid)
        self.tree.set(self.uid, self.cid, file_bytes=values.file_bytes - take)
        self.reclaimable_bytes -= take
        if take < nbytes:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")


def test_reclaim_writes_in_chunks_and_reports_bytes_freed_from_memory_current(tree):
    pod = tree.add_pod(containers=1, anon_bytes=50 * MiB, file_bytes=300 * MiB)
    cid = pod.containers[-1]
    kernel = KernelStandIn(tree, pod.uid, cid, reclaimable_bytes=GiB)

    result = reclaim(tree.path(pod.uid, cid), 100 * MiB, chunk_bytes=32 * MiB, write=kernel)

    assert [n for _, n in kernel.writes] == [32 * MiB, 32 * MiB, 32 * MiB, 4 * MiB]
    assert {p for p, _ in kernel.writes} == {str(tree.path(pod.uid, cid) / "memory.reclaim")}
    assert result.partial is False
    assert result.chunks == 4
    assert result.requested_bytes == 100 * MiB
    assert result.freed_bytes == 100 * MiB
    assert result.before.file_bytes == 300 * MiB
    assert result.after.file_bytes == 200 * MiB


def test_eagain_ends_the_reclaim_as_partial_not_as_an_error(tree):
    pod = tree.add_pod(containers=1, anon_bytes=50 * MiB, file_bytes=40 * MiB)
    cid = pod.containers[-1]
    kernel = KernelStandIn(tree, pod.uid, cid, reclaimable_bytes=40 * MiB)

    result = reclaim(tree.path(pod.uid, cid), 256 * MiB, chunk_bytes=32 * MiB, write=kernel)

    assert result.partial is True
    assert len(kernel.writes) == 2  # the second chunk hit EAGAIN: nothing more is written
    assert result.chunks == 1
    assert result.freed_bytes == 40 * MiB


def test_eagain_as_plain_oserror_is_partial_too(tree):
    pod = tree.add_pod(containers=1)

    def refuse(path: str, nbytes: int) -> None:
        raise OSError(errno.EAGAIN, "again")

    result = reclaim(tree.path(pod.uid, pod.containers[-1]), MiB, write=refuse)
    assert result.partial is True and result.chunks == 0 and result.freed_bytes == 0


def test_other_write_errors_propagate(tree):
    pod = tree.add_pod(containers=1)

    def broken(path: str, nbytes: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    with pytest.raises(OSError) as caught:
        reclaim(tree.path(pod.uid, pod.containers[-1]), MiB, write=broken)
    assert caught.value.errno == errno.EINVAL


def test_default_writer_writes_the_byte_count_to_memory_reclaim(tree):
    pod = tree.add_pod(containers=1)
    path = tree.path(pod.uid, pod.containers[-1])
    reclaim(path, 5 * MiB)
    # A plain file keeps the last chunk written, in the decimal form the kernel parses.
    assert (path / "memory.reclaim").read_text() == str(5 * MiB)


def test_pod_level_reclaim_uses_the_pod_cgroup(tree):
    pod = tree.add_pod(containers=2)
    seen: list[str] = []
    reclaim(tree.path(pod.uid), MiB, write=lambda p, n: seen.append(p))
    assert seen == [str(tree.path(pod.uid) / "memory.reclaim")]


def test_no_memory_reclaim_file_is_unsupported(tmp_path):
    v1 = CgroupTree(tmp_path / "v1", version=1)
    pod = v1.add_pod(containers=1)
    with pytest.raises(ReclaimUnsupported, match=r"memory\.reclaim"):
        reclaim(v1.path(pod.uid, pod.containers[-1]), MiB, write=pytest.fail)


def test_this_machines_cgroup_v1_has_no_memory_reclaim():
    own = _own_v1_memory_cgroup()
    if own is None:
        pytest.skip("no cgroup v1 memory controller mounted at /sys/fs/cgroup/memory")
    with pytest.raises(ReclaimUnsupported):
        reclaim(own, MiB, write=pytest.fail)


def test_a_vanished_cgroup_is_file_not_found(tree):
    with pytest.raises(FileNotFoundError):
        reclaim(tree.kubepods / "gone.scope", MiB, write=pytest.fail)


def test_reclaim_refuses_non_positive_amounts(tree):
    pod = tree.add_pod(containers=1)
    with pytest.raises(ValueError, match="requested_bytes"):
        reclaim(tree.path(pod.uid), 0, write=pytest.fail)


def test_drop_caches_writes_the_level_and_reports_memfree_gain(tmp_path):
    proc = write_proc(tmp_path / "proc", mem_free_bytes=2 * GiB)

    def kernel(target: Path, level: int) -> None:
        actions._write_level(target, level)
        write_proc(proc, mem_free_bytes=3 * GiB)  # the kernel freed 1 GiB of cache

    result = drop_caches(3, proc, write=kernel)

    assert (proc / "sys" / "vm" / "drop_caches").read_text() == "3\n"
    assert result.level == 3
    assert result.freed_bytes == GiB
    assert result.before_meminfo["MemFree"] == 2 * GiB
    assert result.after_meminfo["MemFree"] == 3 * GiB


@pytest.mark.parametrize("level", [0, 4, -1])
def test_drop_caches_refuses_unknown_levels(tmp_path, level):
    proc = write_proc(tmp_path / "proc")
    with pytest.raises(ValueError, match="level"):
        drop_caches(level, proc)
    assert (proc / "sys" / "vm" / "drop_caches").read_text() == "0\n"


def _own_v1_memory_cgroup() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidate = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return candidate if (candidate / "memory.usage_in_bytes").exists() else None
    return None
