"""The sampler: one tick per interval reads every pod and container cgroup on the node.

Each tick (default every second) reads each discovered container's fast-moving files
(``memory.current``, ``memory.stat``) and appends a row to that container's
:class:`~memoryguard.agent.ring.SampleRing` (30 minutes by default). Slower-moving files are
read every few ticks, spread over the containers so every tick costs about the same:

- events, PSI and the rest of memory.stat (``MEDIUM``) every ``medium_every_ticks`` (10) ticks;
- limits and swap (``SLOW``: ``memory.max``, ``memory.high``, swap) every ``slow_every_ticks`` (10);
- pod cgroups (the sum of their containers), every file, every ``pod_every_ticks`` (30): only
  their latest reading is kept, no history;
- discovery (listing directories) every ``discover_every_ticks`` (10), at the next tick after
  a cgroup vanished, and at once (at most once per interval) when someone asks for a pod or
  container the sampler does not know yet — a pod that just started is answered, not missing.

A new cgroup is read in full on its first tick. Rows carry the latest value of every file, so
a limit changed a few seconds ago shows up within ``slow_every_ticks``. Containers whose
cgroup disappeared are forgotten at once (their ring is freed).

The sampler is not thread-safe: call :meth:`tick` and the read methods from one thread (the
agent runs ticks on its event loop, so a tick and an API read never interleave). It holds one
``O_PATH`` descriptor per cgroup directory (files are opened with ``openat``), raises the
process's soft limit on open files for that, and lets them go in :meth:`close`.

Interface used by the agent server (``server.py``, ``metrics.py``): :meth:`tick`, :meth:`run`,
:attr:`cgroup_version`, :attr:`last_tick_t_seconds`, :attr:`container_count`, :attr:`errors`
(cumulative, by kind: vanished, missing_file, malformed, permission, io),
:attr:`tick_seconds_last`, :meth:`pod_entries` (and :meth:`snapshot`, the same whole),
:meth:`latest` (``ContainerReading.latest`` is the Sample), :meth:`find`, :meth:`node`,
:meth:`pod_latest`, :meth:`close`. With ``full=True`` the containers of ``pod_entries`` carry
``stat`` (the full ``memory.stat``, read then) and ``limits`` (max, high, swap max, and
``memory.min/low`` read then — v1: soft limit, memsw — in bytes, None for ``max``) beside the
events and PSI of the last read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import resource
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memoryguard.agent.cgroup import (
    ALL_TIERS,
    ERROR_KINDS,
    FAST,
    MEDIUM,
    SLOW,
    CgroupProbe,
    NodeProbe,
    detect_hierarchy,
    layout_for,
)
from memoryguard.agent.discovery import (
    CONTAINER_ID_PATTERN,
    POD_UID_PATTERN,
    ContainerCgroup,
    PodCgroup,
    discover,
)
from memoryguard.agent.reading import ANON, FILE, values_as_dict
from memoryguard.agent.ring import COLUMNS, SampleRing
from memoryguard.engine.model import Sample

log = logging.getLogger(__name__)

# The sampler holds one directory descriptor per pod and container cgroup (see CgroupProbe):
# a node with hundreds of containers needs more than the common soft limit of 1024.
OPEN_FILES_WANTED = 65536


def _allow_open_files(wanted: int) -> None:
    """Raise this process's soft limit on open files toward ``wanted`` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass(frozen=True, slots=True)
class TickStats:
    t_seconds: float
    duration_seconds: float
    cpu_seconds: float
    containers: int
    pods: int
    errors: int  # errors counted during this tick, all kinds
    discovered: bool  # whether this tick re-listed the cgroup tree


class ContainerReading:
    """A container's latest reading, for ``/metrics`` and ``top``: who it is and its Sample;
    ``events``, ``swap_events`` and ``pressure`` are parsed from the last read's bytes when
    asked (a scrape holds 500 of these while it writes family after family: parsed up front,
    their dicts were ~1 MiB held for the whole scrape)."""

    __slots__ = ("_probe", "cgroup_path", "container_id", "latest", "pod_uid", "qos", "runtime")

    def __init__(self, container: ContainerCgroup, latest: Sample, probe: CgroupProbe) -> None:
        self.pod_uid = container.pod_uid
        self.container_id = container.container_id
        self.qos = container.qos
        self.runtime = container.runtime
        self.cgroup_path = container.cgroup_path
        self.latest = latest
        self._probe = probe

    @property
    def events(self) -> Mapping[str, int]:
        return self._probe.events()

    @property
    def swap_events(self) -> Mapping[str, int]:
        return self._probe.swap_events()

    @property
    def pressure(self) -> Mapping[str, Mapping[str, float | int]]:
        return self._probe.pressure()


@dataclass(frozen=True, slots=True)
class PodEntry:
    """One pod of a ``GET /v1/pods`` answer: ``head`` (every field but ``containers``) is None
    when the pod is not on this node; ``containers`` builds each container's entry when iterated."""

    pod_uid: str
    head: dict[str, Any] | None
    containers: Iterator[dict[str, Any]]


class _Tracked:
    """A cgroup under sampling: what discovery found, its probe, its history."""

    __slots__ = ("cgroup", "fresh", "phase", "probe", "ring", "t_seconds")

    def __init__(
        self, cgroup: ContainerCgroup | PodCgroup, probe: CgroupProbe, phase: int, ring: SampleRing | None
    ):
        self.cgroup = cgroup
        self.probe = probe
        self.phase = phase
        self.ring = ring
        self.fresh = True  # not read yet: the first read takes every tier
        self.t_seconds: float | None = None  # time of the last complete reading

    def latest(self) -> Sample | None:
        if self.t_seconds is None:
            return None
        return self.probe.sample(self.t_seconds)


class Sampler:
    """Samples every pod and container memory cgroup under ``root``; see the module docstring."""

    def __init__(
        self,
        root: Path = Path("/sys/fs/cgroup"),
        *,
        interval_seconds: float = 1.0,
        retention_seconds: float = 1800.0,
        clock: Callable[[], float] = time.time,
        proc_root: Path = Path("/proc"),
        fine_seconds: float = 300.0,
        coarse_step_seconds: float = 10.0,
        discover_every_ticks: int = 10,
        medium_every_ticks: int = 10,
        slow_every_ticks: int = 10,
        pod_every_ticks: int = 30,
        skip_unchanged: bool = True,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds!r}")
        if retention_seconds < interval_seconds:
            raise ValueError(f"retention_seconds must be ≥ interval_seconds, got {retention_seconds!r}")
        for name, every in (
            ("discover_every_ticks", discover_every_ticks),
            ("medium_every_ticks", medium_every_ticks),
            ("slow_every_ticks", slow_every_ticks),
            ("pod_every_ticks", pod_every_ticks),
        ):
            if every < 1:
                raise ValueError(f"{name} must be ≥ 1, got {every!r}")
        self.hierarchy = detect_hierarchy(Path(root))
        _allow_open_files(OPEN_FILES_WANTED)
        self.cgroup_version: int = self.hierarchy.version
        self.interval_seconds = interval_seconds
        self.retention_seconds = retention_seconds
        self.proc_root = Path(proc_root)
        self._node = NodeProbe(self.hierarchy, self.proc_root)
        self._clock = clock
        self._layout = layout_for(self.cgroup_version)
        self.skip_unchanged = skip_unchanged  # False only to measure the skip (sample --no-skip-unchanged)
        self._ring_shape = {
            "retention_seconds": retention_seconds,
            "interval_seconds": interval_seconds,
            "fine_seconds": fine_seconds,
            "coarse_step_seconds": coarse_step_seconds,
        }
        self._discover_every = discover_every_ticks
        # Which tiers a cgroup reads, by (tick number + its phase) modulo the schedule's period.
        period = math.lcm(medium_every_ticks, slow_every_ticks, pod_every_ticks)
        medium = [MEDIUM if k % medium_every_ticks == 0 else 0 for k in range(period)]
        slow = [SLOW if k % slow_every_ticks == 0 else 0 for k in range(period)]
        self._container_tiers = [FAST | m | sl for m, sl in zip(medium, slow, strict=True)]
        self._pod_tiers = [ALL_TIERS if k % pod_every_ticks == 0 else 0 for k in range(period)]
        self._containers: dict[tuple[str, str], _Tracked] = {}
        self._pods: dict[str, _Tracked] = {}
        self._tick_no = 0
        self._next_phase = 0
        self._rediscover_requested = True
        self._last_on_demand: float | None = None  # monotonic time of the last on-demand listing
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self.last_tick_t_seconds: float | None = None
        self.tick_seconds_last: float = 0.0
        self.ticks = 0

    # --- state ----------------------------------------------------------------------------

    @property
    def container_count(self) -> int:
        return len(self._containers)

    @property
    def pod_count(self) -> int:
        return len(self._pods)

    @property
    def tick_no(self) -> int:
        """The number the next tick will have (ticks count from 0)."""
        return self._tick_no

    # --- sampling -------------------------------------------------------------------------

    def tick(self) -> TickStats:
        """One pass over every cgroup; never raises for what it finds on disk."""
        wall0 = time.perf_counter()
        cpu0 = time.thread_time()
        t = self._clock()
        errors = self.errors
        errors_before = sum(errors.values())
        n = self._tick_no
        discovered = self._rediscover_requested or n % self._discover_every == 0
        if discovered:
            self.rediscover_now()
        containers = self._containers
        table = self._container_tiers
        period = len(table)
        for key, tracked in list(containers.items()):
            probe = tracked.probe
            if tracked.fresh:
                tiers = ALL_TIERS
                tracked.fresh = False
            else:
                tiers = table[(n + tracked.phase) % period]
            if not (probe.read_fast(errors) if tiers == FAST else probe.read(tiers, errors)):
                del containers[key]
                probe.close()
                self._rediscover_requested = True  # its pod may be gone too
                continue
            values = probe.values
            if values[ANON] is not None and values[FILE] is not None:
                # Only MEDIUM and SLOW reads touch the ring's change-logged fields.
                tracked.ring.append(t, probe.row, tiers != FAST)  # type: ignore[union-attr]
                tracked.t_seconds = t
        pod_table = self._pod_tiers
        for uid, tracked in list(self._pods.items()):
            if tracked.fresh:
                tiers = ALL_TIERS
                tracked.fresh = False
            else:
                tiers = pod_table[(n + tracked.phase) % period]
                if not tiers:
                    continue
            if not tracked.probe.read(tiers, errors):
                del self._pods[uid]
                tracked.probe.close()
                continue
            if tracked.probe.complete:
                tracked.t_seconds = t
        self._tick_no = n + 1
        self.ticks += 1
        self.last_tick_t_seconds = t
        self.tick_seconds_last = time.perf_counter() - wall0
        return TickStats(
            t_seconds=t,
            duration_seconds=self.tick_seconds_last,
            cpu_seconds=time.thread_time() - cpu0,
            containers=len(self._containers),
            pods=len(self._pods),
            errors=sum(errors.values()) - errors_before,
            discovered=discovered,
        )

    def _tiers(self, tracked: _Tracked, n: int) -> int:
        if tracked.fresh:
            return ALL_TIERS
        table = self._container_tiers if tracked.ring is not None else self._pod_tiers
        return table[(n + tracked.phase) % len(table)]

    def planned_paths(self, n: int) -> list[str]:
        """The files tick ``n`` reads for the cgroups known now, by absolute path."""
        tracked = [*self._containers.values(), *self._pods.values()]
        return [path for tr in tracked for path in tr.probe.paths(self._tiers(tr, n))]

    def planned_opens(self, n: int) -> list[tuple[int | None, str]]:
        """The ``os.open`` calls (``dir_fd``, name) tick ``n`` makes: the benchmark's floor loop
        makes the same ones."""
        tracked = [*self._containers.values(), *self._pods.values()]
        return [entry for tr in tracked for entry in tr.probe.opens(self._tiers(tr, n))]

    def rediscover(self) -> None:
        """Re-list the cgroup tree at the next tick (cheap to call often: once per tick at most)."""
        self._rediscover_requested = True

    def rediscover_now(self) -> None:
        self._rediscover_requested = False
        found = discover(self.hierarchy.memory_root)
        for kind, count in found.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        for key, container in found.containers.items():
            tracked = self._containers.get(key)
            if tracked is None or tracked.cgroup.path != container.path:
                if tracked is not None:
                    tracked.probe.close()
                ring = SampleRing.for_retention(**self._ring_shape)
                self._containers[key] = self._track(container, ring)
        for key in self._containers.keys() - found.containers.keys():
            self._containers.pop(key).probe.close()
        for uid, pod in found.pods.items():
            tracked = self._pods.get(uid)
            if tracked is None or tracked.cgroup.path != pod.path:
                if tracked is not None:
                    tracked.probe.close()
                self._pods[uid] = self._track(pod, None)
        for uid in self._pods.keys() - found.pods.keys():
            self._pods.pop(uid).probe.close()

    def close(self) -> None:
        """Close every cgroup directory descriptor (the sampler reopens them if it ticks again)."""
        for tracked in [*self._containers.values(), *self._pods.values()]:
            tracked.probe.close()

    def _track(self, cgroup: ContainerCgroup | PodCgroup, ring: SampleRing | None) -> _Tracked:
        # Consecutive phases spread each tier's reads evenly over the ticks.
        self._next_phase += 1
        return _Tracked(
            cgroup,
            CgroupProbe(cgroup.path, self._layout, skip_unchanged=self.skip_unchanged),
            self._next_phase,
            ring,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every ``interval_seconds`` until ``stop`` is set.

        Ticks are scheduled on a fixed grid (start + k × interval), so they do not drift; a
        tick that overruns skips the slots it missed rather than running late ones back to back.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        slot = 0
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # a bug must not stop sampling on every node; it is logged loudly
                log.exception("sampling tick failed")
            now = loop.time()
            slot = max(slot + 1, math.floor((now - start) / self.interval_seconds) + 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=start + slot * self.interval_seconds - now)

    # --- reading --------------------------------------------------------------------------

    def snapshot(
        self,
        pod_uids: Collection[str] | None,
        *,
        window_seconds: float,
        since_seconds: float | None = None,
        full: bool = False,
    ) -> dict[str, Any]:
        """``{"pods": [...], "missing": [...]}`` in the shape of docs/agent-api.md ``GET /v1/pods``
        (the whole answer in memory: the server streams :meth:`pod_entries` instead)."""
        pods: list[dict[str, Any]] = []
        missing: list[str] = []
        for entry in self.pod_entries(
            pod_uids, window_seconds=window_seconds, since_seconds=since_seconds, full=full
        ):
            if entry.head is None:
                missing.append(entry.pod_uid)
            else:
                pods.append({**entry.head, "containers": list(entry.containers)})
        return {"pods": pods, "missing": missing}

    def pod_entries(
        self,
        pod_uids: Collection[str] | None,
        *,
        window_seconds: float,
        since_seconds: float | None = None,
        full: bool = False,
    ) -> Iterator[PodEntry]:
        """The pods of a ``GET /v1/pods`` answer, one at a time, each container built only when
        its turn comes (a full window of every container is tens of MiB as Python objects).

        ``pod_uids`` None means every pod that has a container read at least once, by UID;
        otherwise the pods asked, in that order, an entry without ``head`` for each one not on
        this node (asked-for UIDs not known yet make the sampler look for new cgroups first).
        Window rows are those with ``t_seconds > max(now - window_seconds, since_seconds)``;
        ``window_seconds <= 0`` gives none. ``full`` adds ``stat``, ``events``,
        ``swap_events``, ``pressure`` and ``limits`` to each container (``stat`` and the
        protections are read from the files then).

        Ticks may run between two entries (the server writes each to the network and lets the
        loop run): each container is consistent in itself (its latest reading and its rows come
        from the same moment), and a container or pod gone meanwhile is answered as it was when
        the answer began (a pod asked for and gone before its turn is missing).
        """
        if pod_uids is not None and any(uid not in self._pods for uid in pod_uids):
            self._look_for_new_cgroups()
        after = self._clock() - window_seconds
        if since_seconds is not None:
            after = max(after, since_seconds)
        if window_seconds <= 0:
            after = math.inf
        by_pod: dict[str, list[_Tracked]] = {}
        for tracked in self._containers.values():
            by_pod.setdefault(tracked.cgroup.pod_uid, []).append(tracked)
        if pod_uids is None:
            uids = sorted(
                uid for uid, members in by_pod.items() if any(tr.t_seconds is not None for tr in members)
            )
        else:
            uids = list(dict.fromkeys(pod_uids))
        return self._pod_entries(uids, by_pod, after, full, listing=pod_uids is None)

    def _pod_entries(
        self, uids: list[str], by_pod: dict[str, list[_Tracked]], after: float, full: bool, *, listing: bool
    ) -> Iterator[PodEntry]:
        for uid in uids:
            pod = self._pods.get(uid)
            if pod is None:
                if not listing:  # a pod that went away while a listing was answered is left out
                    yield PodEntry(uid, None, iter(()))
                continue
            head = {
                "pod_uid": uid,
                "qos": pod.cgroup.qos,
                "cgroup_path": pod.cgroup.cgroup_path,
                "latest": _latest_dict(pod),
            }
            containers = sorted(by_pod.get(uid, ()), key=_by_cgroup_path)
            yield PodEntry(uid, head, (self._container_entry(tr, after, full) for tr in containers))

    def _look_for_new_cgroups(self) -> None:
        """Someone asked for a pod or container not seen yet (it may have just started): list
        the tree now and read what is new, at most once per interval (the ask is cheap to
        repeat; the listing is not)."""
        now = time.monotonic()
        if self._last_on_demand is not None and now - self._last_on_demand < self.interval_seconds:
            return
        self._last_on_demand = now
        self.rediscover_now()
        t = self._clock()
        for tracked in [*self._containers.values(), *self._pods.values()]:
            if not tracked.fresh:
                continue
            tracked.fresh = False
            if tracked.probe.read(ALL_TIERS, self.errors) and tracked.probe.complete:
                tracked.t_seconds = t
                if tracked.ring is not None:
                    tracked.ring.append(t, tracked.probe.row)

    def _container_entry(self, tracked: _Tracked, after_seconds: float, full: bool) -> dict[str, Any]:
        container = tracked.cgroup
        assert isinstance(container, ContainerCgroup) and tracked.ring is not None
        entry: dict[str, Any] = {
            "container_id": container.container_id,
            "runtime": container.runtime,
            "cgroup_path": container.cgroup_path,
            "latest": _latest_dict(tracked),
        }
        if full:
            probe = tracked.probe
            entry["stat"] = probe.stat()
            entry["events"] = probe.events()
            entry["swap_events"] = probe.swap_events()
            entry["pressure"] = probe.pressure()
            entry["limits"] = probe.limits()
        entry["window"] = {
            "columns": list(COLUMNS),
            "rows": tracked.ring.rows(after_seconds) if after_seconds != math.inf else [],
        }
        return entry

    def latest(self) -> Iterator[ContainerReading]:
        """Every container's latest complete reading (those not read successfully yet are left out)."""
        for tracked in list(self._containers.values()):
            sample = tracked.latest()
            if sample is None:
                continue
            container = tracked.cgroup
            assert isinstance(container, ContainerCgroup)
            yield ContainerReading(container, sample, tracked.probe)

    def pod_latest(self, pod_uid: str) -> Sample | None:
        tracked = self._pods.get(pod_uid)
        return None if tracked is None else tracked.latest()

    def find(self, pod_uid: str, container_id: str | None) -> Path | None:
        """The cgroup directory of a discovered pod (``container_id`` None) or container.

        IDs must be canonical (pod UID with dashes, 64-hex container ID): anything else raises
        ValueError, so no path is ever built from request text. An unknown ID makes the sampler
        look for new cgroups now (at most once per interval); still unknown, it gives None.
        """
        if not POD_UID_PATTERN.match(pod_uid):
            raise ValueError(f"pod_uid is not a canonical pod UID: {pod_uid!r}")
        if container_id is not None and not CONTAINER_ID_PATTERN.match(container_id):
            raise ValueError(f"container_id is not 64 lowercase hex digits: {container_id!r}")
        tracked = self._lookup(pod_uid, container_id)
        if tracked is None:
            self._look_for_new_cgroups()
            tracked = self._lookup(pod_uid, container_id)
        return None if tracked is None else Path(tracked.cgroup.path)

    def _lookup(self, pod_uid: str, container_id: str | None) -> _Tracked | None:
        if container_id is None:
            return self._pods.get(pod_uid)
        return self._containers.get((pod_uid, container_id))

    def node(self) -> dict[str, Any]:
        """Node-level memory now: ``meminfo`` (bytes), ``pressure`` (PSI), the root cgroup's stats
        (see ``cgroup.NodeProbe``; read files count their errors with the ticks')."""
        return self._node.read(self.errors)

    def ring_bytes(self) -> int:
        """Memory held by all rings' row buffers."""
        return sum(tr.ring.nbytes() for tr in self._containers.values() if tr.ring is not None)


def _latest_dict(tracked: _Tracked) -> dict[str, Any] | None:
    """The latest reading as ``Sample.to_dict()`` gives it, without building the Sample."""
    t = tracked.t_seconds
    return None if t is None else values_as_dict(t, tracked.probe.values)


def _by_cgroup_path(tracked: _Tracked) -> str:
    return tracked.cgroup.cgroup_path
