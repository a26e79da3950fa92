"""Fixture trees: real files shaped like a Kubernetes node's ``/sys/fs/cgroup``.

A :class:`CgroupTree` writes the directories and memory files kubelet and the container
runtimes create — cgroup v2 or v1 (memory controller under ``memory/``), the systemd or the
cgroupfs driver, containerd, CRI-O or Docker scopes, Guaranteed/Burstable/BestEffort pods —
so the agent can be pointed at it with ``--root``. Values change over time through
:meth:`CgroupTree.set`, which rewrites a container's files atomically (write + rename), the
way a live reader would see a kernel update them; a pod's own files are kept equal to the sum
of its containers, as the kernel's hierarchical accounting makes them.

    tree = CgroupTree(tmp_path / "cgroup", version=2, driver="systemd")
    pod = tree.add_pod(qos="burstable", containers=1, max_bytes=256 * MiB)
    cid = pod.containers[-1]
    tree.set(pod.uid, cid, anon_bytes=100 * MiB, file_bytes=20 * MiB)
    tree.remove_container(pod.uid, cid)          # the cgroup vanishes

From a shell (benchmarks): ``python -m tests.support.cgroup_tree --out /dev/shm/node --containers 500``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import uuid
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

V1_UNLIMITED = 9223372036854771712  # what cgroup v1 prints for "no limit" on x86-64

RUNTIME_PREFIX = {"containerd": "cri-containerd", "crio": "crio", "docker": "docker"}
QOS_CLASSES = ("guaranteed", "burstable", "besteffort")

V2_STAT_KEYS = [
    "anon",
    "file",
    "kernel",
    "kernel_stack",
    "pagetables",
    "sec_pagetables",
    "percpu",
    "sock",
    "vmalloc",
    "shmem",
    "zswap",
    "zswapped",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "swapcached",
    "anon_thp",
    "file_thp",
    "shmem_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "slab",
    "workingset_refault_anon",
    "workingset_refault_file",
    "workingset_activate_anon",
    "workingset_activate_file",
    "workingset_restore_anon",
    "workingset_restore_file",
    "workingset_nodereclaim",
    "pgscan",
    "pgsteal",
    "pgscan_kswapd",
    "pgscan_direct",
    "pgscan_khugepaged",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgsteal_khugepaged",
    "pgfault",
    "pgmajfault",
    "pgrefill",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "zswpin",
    "zswpout",
    "zswpwb",
    "thp_fault_alloc",
    "thp_collapse_alloc",
    "thp_swpout",
    "thp_swpout_fallback",
]

V1_STAT_KEYS = [
    "cache",
    "rss",
    "rss_huge",
    "shmem",
    "mapped_file",
    "dirty",
    "writeback",
    "workingset_refault_anon",
    "workingset_refault_file",
    "swap",
    "swapcached",
    "pgpgin",
    "pgpgout",
    "pgfault",
    "pgmajfault",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
]


@dataclass
class MemoryValues:
    """What one cgroup's memory files say. Byte counts in bytes; None limits mean ``max``."""

    anon_bytes: int = 8 * MiB
    file_bytes: int = 4 * MiB
    inactive_file_bytes: int | None = None  # default: half of file (minus shmem)
    active_file_bytes: int | None = None
    shmem_bytes: int = 0
    kernel_bytes: int = 512 * KiB
    current_bytes: int | None = None  # default: anon + file + kernel
    max_bytes: int | None = None
    high_bytes: int | None = None
    low_bytes: int = 0
    min_bytes: int = 0
    swap_current_bytes: int = 0
    swap_max_bytes: int | None = None
    low_events: int = 0
    high_events: int = 0
    max_events: int = 0
    oom_events: int = 0
    oom_kill: int = 0
    oom_group_kill: int = 0
    swap_high_events: int = 0
    swap_max_events: int = 0
    swap_fail_events: int = 0
    pgmajfault: int = 0
    psi_some_avg10: float = 0.0
    psi_full_avg10: float = 0.0
    psi_some_total_us: int = 0
    psi_full_total_us: int = 0
    procs: tuple[int, ...] = ()

    def current(self) -> int:
        if self.current_bytes is not None:
            return self.current_bytes
        return self.anon_bytes + self.file_bytes + self.kernel_bytes

    def file_lists(self) -> tuple[int, int]:
        """(inactive_file, active_file): given, or the evictable file pages split in half."""
        evictable = max(0, self.file_bytes - self.shmem_bytes)
        inactive = self.inactive_file_bytes if self.inactive_file_bytes is not None else evictable // 2
        active = self.active_file_bytes if self.active_file_bytes is not None else evictable - inactive
        return inactive, active


_SUMMED = (
    "anon_bytes",
    "file_bytes",
    "shmem_bytes",
    "kernel_bytes",
    "swap_current_bytes",
    "pgmajfault",
    "low_events",
    "high_events",
    "max_events",
    "oom_events",
    "oom_kill",
    "swap_fail_events",
)


@dataclass
class FixtureContainer:
    container_id: str
    runtime: str
    path: Path
    values: MemoryValues


@dataclass
class FixturePod:
    uid: str
    qos: str
    path: Path
    values: MemoryValues
    containers: list[str] = field(default_factory=list)  # IDs in creation order; sandbox first


class CgroupTree:
    """A node's cgroup tree on a real filesystem (use tmpfs: ``tmp_path`` or ``/dev/shm``)."""

    def __init__(
        self,
        root: Path,
        *,
        version: int = 2,
        driver: str = "systemd",
        seed: int = 0,
        hybrid: bool = True,
    ) -> None:
        if version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {version!r}")
        if driver not in ("systemd", "cgroupfs"):
            raise ValueError(f"driver must be 'systemd' or 'cgroupfs', got {driver!r}")
        self.root = Path(root)
        self.version = version
        self.driver = driver
        self.rng = random.Random(seed)
        self.pods: dict[str, FixturePod] = {}
        self.containers: dict[tuple[str, str], FixtureContainer] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        if version == 2:
            self.memory_root = self.root
            _write(self.root / "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
            _write(self.root / "cgroup.subtree_control", "cpuset cpu io memory pids\n")
        else:
            # A v1 host as systemd mounts it: one directory per controller, and (hybrid) an
            # empty cgroup2 hierarchy at unified/ that has no memory controller.
            self.memory_root = self.root / "memory"
            for controller in ("cpu", "cpuacct", "blkio", "pids", "memory"):
                (self.root / controller).mkdir(exist_ok=True)
            if hybrid:
                (self.root / "unified").mkdir(exist_ok=True)
                _write(self.root / "unified" / "cgroup.controllers", "\n")
        self.root_values = MemoryValues(anon_bytes=2 * GiB, file_bytes=3 * GiB, kernel_bytes=300 * MiB)
        self._write_values(self.memory_root, self.root_values, is_root=True)
        self.kubepods = self.memory_root / ("kubepods.slice" if driver == "systemd" else "kubepods")
        self.kubepods.mkdir(exist_ok=True)
        self._write_values(self.kubepods, MemoryValues())
        # Things on every node that are not pods: discovery must ignore them.
        other = "system.slice/containerd.service" if driver == "systemd" else "system/containerd"
        (self.memory_root / other).mkdir(parents=True, exist_ok=True)

    # --- building -------------------------------------------------------------------------

    def new_uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def new_container_id(self) -> str:
        return f"{self.rng.getrandbits(256):064x}"

    def qos_dir(self, qos: str) -> Path:
        if qos not in QOS_CLASSES:
            raise ValueError(f"qos must be one of {QOS_CLASSES}, got {qos!r}")
        if qos == "guaranteed":
            return self.kubepods  # Guaranteed pods sit directly under kubepods
        name = f"kubepods-{qos}.slice" if self.driver == "systemd" else qos
        path = self.kubepods / name
        if not path.is_dir():
            path.mkdir()
            self._write_values(path, MemoryValues())
        return path

    def pod_dir_name(self, uid: str, qos: str) -> str:
        if self.driver == "cgroupfs":
            return f"pod{uid}"
        systemd_uid = uid.replace("-", "_")
        if qos == "guaranteed":
            return f"kubepods-pod{systemd_uid}.slice"
        return f"kubepods-{qos}-pod{systemd_uid}.slice"

    def container_dir_name(self, container_id: str, runtime: str) -> str:
        if runtime not in RUNTIME_PREFIX:
            raise ValueError(f"runtime must be one of {tuple(RUNTIME_PREFIX)}, got {runtime!r}")
        if self.driver == "systemd":
            return f"{RUNTIME_PREFIX[runtime]}-{container_id}.scope"
        return f"crio-{container_id}" if runtime == "crio" else container_id

    def add_pod(
        self,
        *,
        qos: str = "burstable",
        uid: str | None = None,
        runtime: str = "containerd",
        containers: int = 1,
        sandbox: bool = True,
        max_bytes: int | None = None,
        **values: object,
    ) -> FixturePod:
        """A pod cgroup with a sandbox (pause) container and ``containers`` app containers.

        ``max_bytes`` and other :class:`MemoryValues` fields apply to each app container; the
        pod's own limit is the sum of its containers' limits when they all have one.
        """
        uid = uid or self.new_uid()
        path = self.qos_dir(qos) / self.pod_dir_name(uid, qos)
        path.mkdir()
        pod = FixturePod(uid=uid, qos=qos, path=path, values=MemoryValues())
        self.pods[uid] = pod
        if sandbox:
            self.add_container(
                uid, runtime=runtime, anon_bytes=200 * KiB, file_bytes=0, kernel_bytes=40 * KiB
            )
        for _ in range(containers):
            self.add_container(uid, runtime=runtime, max_bytes=max_bytes, **values)
        limits = [self.containers[(uid, c)].values.max_bytes for c in pod.containers[1 if sandbox else 0 :]]
        if limits and all(limit is not None for limit in limits):
            pod.values.max_bytes = sum(limit for limit in limits if limit is not None)
        self._write_pod(pod)
        return pod

    def add_container(
        self, pod_uid: str, *, runtime: str = "containerd", container_id: str | None = None, **values: object
    ) -> str:
        pod = self.pods[pod_uid]
        container_id = container_id or self.new_container_id()
        path = pod.path / self.container_dir_name(container_id, runtime)
        path.mkdir()
        memory = replace(MemoryValues(), **values)  # type: ignore[arg-type]
        self.containers[(pod_uid, container_id)] = FixtureContainer(container_id, runtime, path, memory)
        pod.containers.append(container_id)
        self._write_values(path, memory)
        self._write_pod(pod)
        return container_id

    # --- changing over time ---------------------------------------------------------------

    def set(self, pod_uid: str, container_id: str | None = None, **values: object) -> MemoryValues:
        """Change some of a container's (or, with no ID, the pod's own) values and rewrite its files.

        Accepts any :class:`MemoryValues` field, e.g. ``anon_bytes=..., file_bytes=..., max_bytes=...``.
        """
        unknown = set(values) - {f.name for f in fields(MemoryValues)}
        if unknown:
            raise TypeError(f"unknown memory values: {sorted(unknown)}")
        pod = self.pods[pod_uid]
        if container_id is None:
            pod.values = replace(pod.values, **values)  # type: ignore[arg-type]
            self._write_pod(pod, aggregate=False)
            return pod.values
        container = self.containers[(pod_uid, container_id)]
        container.values = replace(container.values, **values)  # type: ignore[arg-type]
        self._write_values(container.path, container.values)
        self._write_pod(pod)
        return container.values

    def values(self, pod_uid: str, container_id: str | None = None) -> MemoryValues:
        if container_id is None:
            return self.pods[pod_uid].values
        return self.containers[(pod_uid, container_id)].values

    def path(self, pod_uid: str, container_id: str | None = None) -> Path:
        if container_id is None:
            return self.pods[pod_uid].path
        return self.containers[(pod_uid, container_id)].path

    def remove_container(self, pod_uid: str, container_id: str) -> None:
        container = self.containers.pop((pod_uid, container_id))
        shutil.rmtree(container.path)
        self.pods[pod_uid].containers.remove(container_id)
        self._write_pod(self.pods[pod_uid])

    def remove_pod(self, pod_uid: str) -> None:
        pod = self.pods.pop(pod_uid)
        for container_id in pod.containers:
            del self.containers[(pod_uid, container_id)]
        shutil.rmtree(pod.path)

    def remove_file(self, pod_uid: str, container_id: str | None, name: str) -> None:
        """Delete one file, as an older kernel would not have it (e.g. ``memory.swap.current``)."""
        (self.path(pod_uid, container_id) / name).unlink()

    def write_file(self, pod_uid: str, container_id: str | None, name: str, content: bytes | str) -> None:
        """Overwrite one file with arbitrary content (malformed-input tests)."""
        _write(self.path(pod_uid, container_id) / name, content)

    # --- writing files --------------------------------------------------------------------

    def _write_pod(self, pod: FixturePod, *, aggregate: bool = True) -> None:
        if aggregate:
            children = [self.containers[(pod.uid, c)].values for c in pod.containers]
            sums = {name: sum(getattr(v, name) for v in children) for name in _SUMMED}
            pod.values = replace(pod.values, **sums)  # type: ignore[arg-type]
        self._write_values(pod.path, pod.values)

    def _write_values(self, path: Path, v: MemoryValues, *, is_root: bool = False) -> None:
        if self.version == 2:
            self._write_v2(path, v, is_root=is_root)
        else:
            self._write_v1(path, v)
        _write(path / "cgroup.procs", "".join(f"{pid}\n" for pid in v.procs))

    def _write_v2(self, path: Path, v: MemoryValues, *, is_root: bool) -> None:
        inactive_file, active_file = v.file_lists()
        stat = dict.fromkeys(V2_STAT_KEYS, 0)
        stat.update(
            anon=v.anon_bytes,
            file=v.file_bytes,
            kernel=v.kernel_bytes,
            kernel_stack=v.kernel_bytes // 8,
            pagetables=v.kernel_bytes // 8,
            percpu=v.kernel_bytes // 16,
            shmem=v.shmem_bytes,
            file_mapped=v.file_bytes // 4,
            inactive_anon=v.anon_bytes - v.anon_bytes // 10 + v.shmem_bytes,
            active_anon=v.anon_bytes // 10,
            inactive_file=inactive_file,
            active_file=active_file,
            slab_reclaimable=v.kernel_bytes // 3,
            slab_unreclaimable=v.kernel_bytes // 4,
            slab=v.kernel_bytes // 3 + v.kernel_bytes // 4,
            pgfault=v.pgmajfault * 40 + v.anon_bytes // 4096,
            pgmajfault=v.pgmajfault,
        )
        _write(path / "memory.stat", "".join(f"{k} {n}\n" for k, n in stat.items()))
        _write(path / "memory.pressure", _pressure(v))
        if is_root:
            return  # the root cgroup has no memory.current, limits or events
        _write(path / "memory.current", f"{v.current()}\n")
        _write(path / "memory.max", _limit(v.max_bytes))
        _write(path / "memory.high", _limit(v.high_bytes))
        _write(path / "memory.low", f"{v.low_bytes}\n")
        _write(path / "memory.min", f"{v.min_bytes}\n")
        events = (
            f"low {v.low_events}\nhigh {v.high_events}\nmax {v.max_events}\noom {v.oom_events}\n"
            f"oom_kill {v.oom_kill}\noom_group_kill {v.oom_group_kill}\n"
        )
        _write(path / "memory.events", events)
        _write(path / "memory.events.local", events)
        _write(path / "memory.swap.current", f"{v.swap_current_bytes}\n")
        _write(path / "memory.swap.max", _limit(v.swap_max_bytes))
        _write(
            path / "memory.swap.events",
            f"high {v.swap_high_events}\nmax {v.swap_max_events}\nfail {v.swap_fail_events}\n",
        )
        if not (path / "memory.reclaim").exists():
            _write(path / "memory.reclaim", "")

    def _write_v1(self, path: Path, v: MemoryValues) -> None:
        inactive_file, active_file = v.file_lists()
        limit = V1_UNLIMITED if v.max_bytes is None else v.max_bytes
        memsw = V1_UNLIMITED if v.max_bytes is None or v.swap_max_bytes is None else limit + v.swap_max_bytes
        local = {
            "cache": v.file_bytes,
            "rss": v.anon_bytes,
            "rss_huge": 0,
            "shmem": v.shmem_bytes,
            "mapped_file": v.file_bytes // 4,
            "dirty": 0,
            "writeback": 0,
            "workingset_refault_anon": 0,
            "workingset_refault_file": 0,
            "swap": v.swap_current_bytes,
            "swapcached": 0,
            "pgpgin": v.anon_bytes // 4096,
            "pgpgout": 0,
            "pgfault": v.anon_bytes // 4096,
            "pgmajfault": v.pgmajfault,
            "inactive_anon": v.anon_bytes - v.anon_bytes // 10 + v.shmem_bytes,
            "active_anon": v.anon_bytes // 10,
            "inactive_file": inactive_file,
            "active_file": active_file,
            "unevictable": 0,
        }
        lines = [f"{k} {n}\n" for k, n in local.items()]
        lines += [f"hierarchical_memory_limit {limit}\n", f"hierarchical_memsw_limit {memsw}\n"]
        lines += [f"total_{k} {n}\n" for k, n in local.items()]
        _write(path / "memory.stat", "".join(lines))
        _write(path / "memory.usage_in_bytes", f"{v.current()}\n")
        _write(path / "memory.limit_in_bytes", f"{limit}\n")
        _write(path / "memory.soft_limit_in_bytes", f"{V1_UNLIMITED if not v.low_bytes else v.low_bytes}\n")
        _write(path / "memory.memsw.usage_in_bytes", f"{v.current() + v.swap_current_bytes}\n")
        _write(path / "memory.memsw.limit_in_bytes", f"{memsw}\n")
        _write(path / "memory.kmem.usage_in_bytes", f"{v.kernel_bytes}\n")
        _write(path / "memory.failcnt", f"{v.max_events}\n")
        _write(path / "memory.oom_control", f"oom_kill_disable 0\nunder_oom 0\noom_kill {v.oom_kill}\n")


def _limit(value: int | None) -> str:
    return "max\n" if value is None else f"{value}\n"


def _pressure(v: MemoryValues) -> str:
    return (
        f"some avg10={v.psi_some_avg10:.2f} avg60=0.00 avg300=0.00 total={v.psi_some_total_us}\n"
        f"full avg10={v.psi_full_avg10:.2f} avg60=0.00 avg300=0.00 total={v.psi_full_total_us}\n"
    )


def _write(path: Path, content: bytes | str) -> None:
    # Write then rename: a reader sees the old file or the new one, never a half-written one.
    data = content.encode() if isinstance(content, str) else content
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def add_eventful_node(tree: CgroupTree) -> tuple[FixturePod, FixturePod, FixturePod]:
    """Pods of every QoS class: a burstable one near its limit with kernel events, swap failures,
    major faults and pressure (every metric family gets a value), a guaranteed pod of two
    containers, and a best-effort pod without a limit. Returns them in that order."""
    eventful = tree.add_pod(
        qos="burstable",
        containers=1,
        max_bytes=256 * MiB,
        anon_bytes=200 * MiB,
        file_bytes=30 * MiB,
        high_events=7,
        oom_kill=2,
        oom_events=2,
        swap_fail_events=1,
        pgmajfault=1234,
        psi_some_avg10=12.5,
        psi_some_total_us=3_500_000,
        psi_full_total_us=1_000_000,
    )
    guaranteed = tree.add_pod(qos="guaranteed", containers=2, max_bytes=512 * MiB)
    unlimited = tree.add_pod(qos="besteffort", containers=1)
    return eventful, guaranteed, unlimited


def write_proc(proc_root: Path, *, mem_total_bytes: int = 16 * GiB, mem_free_bytes: int = 6 * GiB) -> Path:
    """A minimal ``/proc`` for node-level readings: ``meminfo``, ``pressure/memory``, ``sys/vm/drop_caches``.

    Call again to change the memory figures; ``drop_caches`` keeps what was last written to it.
    """
    (proc_root / "pressure").mkdir(parents=True, exist_ok=True)
    (proc_root / "sys" / "vm").mkdir(parents=True, exist_ok=True)
    kb = 1024
    meminfo = {
        "MemTotal": mem_total_bytes // kb,
        "MemFree": mem_free_bytes // kb,
        "MemAvailable": (mem_free_bytes + 4 * GiB) // kb,
        "Buffers": 200 * MiB // kb,
        "Cached": 4 * GiB // kb,
        "SwapCached": 0,
        "Active": 5 * GiB // kb,
        "Inactive": 3 * GiB // kb,
        "Shmem": 100 * MiB // kb,
        "SReclaimable": 300 * MiB // kb,
        "SwapTotal": 0,
        "SwapFree": 0,
    }
    text = "".join(f"{k + ':':<16}{n:>8} kB\n" for k, n in meminfo.items()) + "HugePages_Total:       0\n"
    _write(proc_root / "meminfo", text)
    _write(proc_root / "pressure" / "memory", _pressure(MemoryValues()))
    if not (proc_root / "sys" / "vm" / "drop_caches").exists():
        _write(proc_root / "sys" / "vm" / "drop_caches", "0\n")
    return proc_root


def build_node(
    root: Path,
    *,
    containers: int = 500,
    version: int = 2,
    driver: str = "systemd",
    runtime: str = "containerd",
    seed: int = 0,
) -> CgroupTree:
    """A busy node: ``containers`` container cgroups (sandboxes included) in pods of all QoS classes.

    Pods have a sandbox plus 1 to 3 app containers; a fifth are Guaranteed, a fifth BestEffort.
    ``runtime="mixed"`` cycles through containerd, CRI-O and Docker.
    """
    tree = CgroupTree(root, version=version, driver=driver, seed=seed)
    runtimes = list(RUNTIME_PREFIX) if runtime == "mixed" else [runtime]
    made = 0
    index = 0
    while made < containers:
        apps = min(tree.rng.randint(1, 3), containers - made - 1)
        if apps < 1:  # one slot left: a pod without a sandbox directory of its own
            tree.add_pod(qos="besteffort", runtime=runtimes[0], containers=1, sandbox=False)
            made += 1
            break
        qos = ("guaranteed", "burstable", "burstable", "burstable", "besteffort")[index % 5]
        limit = None if qos == "besteffort" else tree.rng.choice((256, 512, 1024, 2048)) * MiB
        anon = tree.rng.randint(20, 200) * MiB
        tree.add_pod(
            qos=qos,
            runtime=runtimes[index % len(runtimes)],
            containers=apps,
            max_bytes=limit,
            anon_bytes=anon,
            file_bytes=tree.rng.randint(0, 100) * MiB,
            pgmajfault=tree.rng.randint(0, 5000),
        )
        made += apps + 1
        index += 1
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic node cgroup tree (for benchmarks).")
    parser.add_argument(
        "--out", type=Path, required=True, help="directory to create (use tmpfs, e.g. /dev/shm)"
    )
    parser.add_argument("--containers", type=int, default=500)
    parser.add_argument("--version", type=int, choices=(1, 2), default=2)
    parser.add_argument("--driver", choices=("systemd", "cgroupfs"), default="systemd")
    parser.add_argument("--runtime", choices=(*RUNTIME_PREFIX, "mixed"), default="containerd")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} exists and is not empty")
    tree = build_node(
        args.out,
        containers=args.containers,
        version=args.version,
        driver=args.driver,
        runtime=args.runtime,
        seed=args.seed,
    )
    print(json.dumps({"root": str(tree.root), "pods": len(tree.pods), "containers": len(tree.containers)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
