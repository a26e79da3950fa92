"""The reader and sampler on this machine's real cgroup v1 memory controller.

Everything happens in a child of the test's own memory cgroup (from ``/proc/self/cgroup``),
never elsewhere: a ``kubepods/burstable/pod<uid>/<id>`` tree shaped like the cgroupfs driver's,
with a real process in the container cgroup that allocates anonymous memory and then writes a
file (page cache). The cgroups are removed afterwards, whatever happens.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from memoryguard.agent.cgroup import read_sample
from memoryguard.agent.sampler import Sampler
from memoryguard.engine.model import Sample

MiB = 1024 * 1024
V1_MEMORY = Path("/sys/fs/cgroup/memory")

# The workload: join the cgroup, then allocate or write on command, reporting each step.
WORKLOAD = r"""
import os, sys
with open(sys.argv[1] + "/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
print("joined", flush=True)
held = []
for line in sys.stdin:
    step = line.strip()
    if step == "anon":
        block = bytearray(64 * 1024 * 1024)
        block[::4096] = b"\x01" * len(range(0, len(block), 4096))  # touch every page
        held.append(block)
    elif step == "file":
        with open(sys.argv[2], "wb") as f:
            for _ in range(32):
                f.write(os.urandom(1024 * 1024))
            f.flush()
    print(step, flush=True)
"""


def own_memory_cgroup() -> Path:
    if os.geteuid() != 0:
        pytest.skip("creating cgroups needs root")
    if not (V1_MEMORY / "memory.usage_in_bytes").exists():
        pytest.skip("no cgroup v1 memory controller mounted at /sys/fs/cgroup/memory")
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            own = V1_MEMORY / path.lstrip("/")
            if not own.is_dir():
                pytest.skip(f"own memory cgroup {own} is not visible (another cgroup namespace?)")
            return own
    pytest.skip("this process has no cgroup v1 memory controller line in /proc/self/cgroup")


@pytest.fixture
def node_root() -> Iterator[Path]:
    """``<own memory cgroup>/mg-test-<random>``: the root of a tiny node, removed afterwards."""
    root = own_memory_cgroup() / f"mg-test-{secrets.token_hex(4)}"
    root.mkdir()
    try:
        yield root
    finally:
        # Leaf first: a cgroup with children cannot be removed. Pages still charged to a
        # cgroup (page cache) do not prevent rmdir on v1; they move to the parent.
        for dirpath, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
            Path(dirpath).rmdir()


def test_reader_and_sampler_see_anon_then_page_cache_grow(node_root, tmp_path):
    pod_uid = str(uuid.uuid4())
    container_id = secrets.token_hex(32)
    container = node_root / "kubepods" / "burstable" / f"pod{pod_uid}" / container_id
    container.mkdir(parents=True)
    (container / "memory.limit_in_bytes").write_text(str(512 * MiB))
    sampler = Sampler(node_root, interval_seconds=1.0)
    assert sampler.cgroup_version == 1

    proc = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD, str(container), str(tmp_path / "cache.bin")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:

        def step(name: str) -> Sample:
            if name != "joined":
                assert proc.stdin is not None
                proc.stdin.write(name + "\n")
                proc.stdin.flush()
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == name
            sampler.tick()
            [reading] = [r for r in sampler.latest() if r.container_id == container_id]
            assert reading.pod_uid == pod_uid and reading.qos == "burstable"
            return reading.latest

        joined = step("joined")
        anon = step("anon")
        cached = step("file")

        assert joined.max_bytes == 512 * MiB
        assert anon.anon_bytes - joined.anon_bytes >= 60 * MiB
        assert abs(anon.file_bytes - joined.file_bytes) < 8 * MiB
        assert cached.file_bytes - anon.file_bytes >= 24 * MiB
        assert cached.anon_bytes >= anon.anon_bytes - 4 * MiB
        assert cached.current_bytes is not None and cached.current_bytes >= 90 * MiB
        assert cached.working_set_bytes <= cached.current_bytes
        assert cached.kernel_bytes is not None  # memory.kmem.usage_in_bytes

        # The one-shot reader agrees with the sampler on the same cgroup.
        errors: dict[str, int] = {}
        direct = read_sample(container, 1, time.time(), errors)
        assert direct is not None
        assert abs(direct.anon_bytes - cached.anon_bytes) < 8 * MiB
        assert sampler.errors["vanished"] == 0 and sampler.errors["malformed"] == 0

        pod_dir = sampler.find(pod_uid, None)
        assert pod_dir == container.parent
        assert sampler.find(pod_uid, container_id) == container
    finally:
        proc.kill()
        proc.wait(timeout=10)

    # Once the process is gone and the cgroup removed, the sampler forgets the container.
    for dirpath in (container, container.parent, container.parent.parent, container.parent.parent.parent):
        dirpath.rmdir()
    sampler.tick()
    assert sampler.container_count == 0
