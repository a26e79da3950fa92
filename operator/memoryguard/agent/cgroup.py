"""Reading cgroup memory files (adapter): cgroup v2 first, v1 as a fallback.

Which hierarchy to read is decided by what is mounted under the root (``/sys/fs/cgroup``):
a cgroup2 mount whose ``cgroup.controllers`` offers ``memory`` is v2; otherwise a v1 memory
controller at ``memory/`` (``memory.usage_in_bytes`` present) is v1. On a hybrid host
(systemd's v1 controllers plus an empty cgroup2 at ``unified/``) that picks v1.

A :class:`CgroupProbe` reads one cgroup into a reading (see ``reading.py``: a flat vector
laid out like :class:`memoryguard.engine.model.Sample`, plus its encoded uint32 row). Files are
read in three tiers so the sampling tick stays cheap — every tick only what moves fast, the
rest less often (``FAST`` picks anon, file and inactive_file out of ``memory.stat``; a read
that includes ``MEDIUM`` picks the other keys the Sample needs in the same pass):

==========  ========================================  ============================================
tier        cgroup v2                                 cgroup v1
==========  ========================================  ============================================
``FAST``    memory.current, memory.stat               memory.usage_in_bytes, memory.stat
``MEDIUM``  memory.events, memory.pressure            memory.oom_control, memory.failcnt
``SLOW``    memory.max, memory.high, memory.swap.max, memory.limit_in_bytes,
            memory.swap.current, memory.swap.events  memory.memsw.limit_in_bytes,
                                                      memory.kmem.usage_in_bytes
asked for   memory.min, memory.low                    memory.soft_limit_in_bytes
==========  ========================================  ============================================

v1 mapping: anon = ``total_rss`` (it already includes ``total_rss_huge``: transparent huge pages
are anonymous pages counted in both), file = ``total_cache``, inactive/active file, shmem,
pgmajfault and swap from the ``total_*`` keys, kernel = ``memory.kmem.usage_in_bytes``,
max = ``limit_in_bytes`` (the ≥ 2**62 sentinel means unlimited), max events = ``failcnt``,
oom_kill from ``oom_control``; swap max = memsw limit − memory limit. v1 has no ``memory.high``,
no OOM event count besides kills, and no per-cgroup PSI: those stay unknown.

The latest bytes of ``memory.events``, ``memory.swap.events`` and ``memory.pressure`` are kept
and parsed into full dicts only when asked (the HTTP API, ``/metrics``, ``explain``), never in
the tick; the full ``memory.stat`` is read afresh when asked. A ``MEDIUM`` or ``SLOW`` file whose
bytes are those it had at its last clean read is still read, but not parsed again: limits, event
counters and the PSI of a quiet cgroup rarely change.

Errors never escape a read: a cgroup that disappears is reported as vanished; a missing file,
a permission error or a malformed line is counted in the caller's error counter by kind
(:data:`ERROR_KINDS`) and the read goes on with what it has.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memoryguard.agent import parsers
from memoryguard.agent.parsers import ParseError
from memoryguard.agent.reading import (
    ACTIVE_FILE,
    ANON,
    CEILING,
    COUNTERS,
    CURRENT,
    FILE,
    HIGH,
    HIGH_EVENTS,
    INACTIVE_FILE,
    KERNEL,
    MAX,
    MAX_EVENTS,
    NONE,
    OOM_EVENTS,
    OOM_KILL,
    PGMAJFAULT,
    PSI_FULL,
    PSI_SOME,
    ROW_POS,
    SHIFTS,
    SHMEM,
    SWAP_CURRENT,
    SWAP_FAIL_EVENTS,
    SWAP_MAX,
    new_row,
    new_values,
    sample_from_values,
)
from memoryguard.engine.model import Sample

FAST, MEDIUM, SLOW = 1, 2, 4
ALL_TIERS = FAST | MEDIUM | SLOW

ERROR_KINDS = ("vanished", "missing_file", "malformed", "permission", "io")

# Big enough for any memory file in one read (memory.stat is under 2 KiB); small enough that
# thousands of reads a second do not churn the allocator with 64 KiB buffers (that cost ~2 MiB
# of RSS). A file that fills the buffer is read on to its end.
_READ_SIZE = 8192
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class NoMemoryCgroup(RuntimeError):
    """Nothing under the given root looks like a cgroup v2 or v1 memory hierarchy."""


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """Where memory cgroups live: ``memory_root`` is ``root`` on v2 and ``root/memory`` on v1."""

    version: int
    root: Path
    memory_root: Path


def detect_hierarchy(root: Path) -> Hierarchy:
    """Pick the memory hierarchy mounted under ``root`` (v2 first, then v1)."""
    controllers = _read_text(root / "cgroup.controllers")
    if controllers is not None and "memory" in controllers.split():
        return Hierarchy(2, root, root)
    if (root / "memory" / "memory.usage_in_bytes").is_file():
        return Hierarchy(1, root, root / "memory")
    if (root / "memory.usage_in_bytes").is_file():  # pointed straight at a v1 memory mount
        return Hierarchy(1, root, root)
    if controllers is not None:
        raise NoMemoryCgroup(f"the cgroup v2 hierarchy at {root} has no memory controller enabled")
    raise NoMemoryCgroup(
        f"no cgroup memory hierarchy under {root}: expected cgroup.controllers listing 'memory' (v2) "
        f"or memory/memory.usage_in_bytes (v1)"
    )


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def read_file(path: str | Path) -> bytes:
    """One cgroup file, the cheap way (``os.open``/``os.read``: no Python file object)."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        data = os.read(fd, _READ_SIZE)
        return data + _rest(fd) if len(data) == _READ_SIZE else data
    finally:
        os.close(fd)


def _rest(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, _READ_SIZE):
        chunks.append(chunk)
    return b"".join(chunks)


# --- how each file lands in the reading -------------------------------------------------------
# An applier stores what it parsed (exact value and encoded row field) and returns the number
# of malformed lines it skipped.
Applier = Callable[["CgroupProbe", bytes], int]


def _store(probe: CgroupProbe, slot: int, value: int | None) -> None:
    probe.values[slot] = value
    if value is None:
        probe.row[ROW_POS[slot]] = NONE
    else:
        stored = value >> SHIFTS[slot]
        probe.row[ROW_POS[slot]] = stored if stored <= CEILING else CEILING


def _picker(keys: tuple[str, ...], slots: tuple[int, ...], raw_name: str | None) -> Applier:
    """Store the values of ``keys`` of a flat-keyed file in ``slots``.

    This is :func:`parsers.pick_keys` fused with storing, for the hot path: it runs for every
    container every tick, and one loop instead of two (plus no intermediate list) is a
    measurable share of the tick. A property test pins it to ``pick_keys`` on arbitrary bytes.
    """
    targets = tuple(
        (
            needle,
            slot,
            ROW_POS[slot],
            SHIFTS[slot],
            0 if slot in COUNTERS else None,
            0 if slot in COUNTERS else NONE,
        )
        for (needle, _), slot in zip(parsers.key_needles(keys), slots, strict=True)
    )

    def apply(probe: CgroupProbe, data: bytes) -> int:
        buf = b"\n" + data
        values = probe.values
        row = probe.row
        malformed = 0
        for needle, slot, pos, shift, unknown, unknown_stored in targets:
            # partition: a cheaper call than find (see read_fast); the value runs to the line's end
            _, found, rest = buf.partition(needle)
            if found:
                raw = rest.partition(b"\n")[0]
                value = int(raw) if raw.isdigit() and len(raw) <= 20 else parsers.uint(raw.strip())
                if value is not None:
                    values[slot] = value
                    stored = value >> shift
                    row[pos] = stored if stored <= CEILING else CEILING
                    continue
                malformed += 1
            values[slot] = unknown
            row[pos] = unknown_stored
        if raw_name is not None:
            probe.raw[raw_name] = data
        return malformed

    return apply


def _count_into(slot: int) -> Applier:
    pos = ROW_POS[slot]
    shift = SHIFTS[slot]

    def apply(probe: CgroupProbe, data: bytes) -> int:
        value = parsers.parse_count(data)
        probe.values[slot] = value
        stored = value >> shift
        probe.row[pos] = stored if stored <= CEILING else CEILING
        return 0

    return apply


def _limit_into(slot: int) -> Applier:
    def apply(probe: CgroupProbe, data: bytes) -> int:
        _store(probe, slot, parsers.parse_limit(data))
        return 0

    return apply


def _extra(name: str, parse: Callable[[bytes], int | None]) -> Applier:
    def apply(probe: CgroupProbe, data: bytes) -> int:
        probe.extra[name] = parse(data)
        return 0

    return apply


def _v2_pressure(probe: CgroupProbe, data: bytes) -> int:
    probe.raw["memory.pressure"] = data
    _store(probe, PSI_SOME, parsers.psi_hundredths(data, b"some"))
    _store(probe, PSI_FULL, parsers.psi_hundredths(data, b"full"))
    return 0


def _v1_failcnt(probe: CgroupProbe, data: bytes) -> int:
    probe.raw["memory.failcnt"] = data
    _store(probe, MAX_EVENTS, parsers.parse_count(data))
    return 0


def _v1_limit(probe: CgroupProbe, data: bytes) -> int:
    _store(probe, MAX, parsers.parse_v1_limit(data))
    return 0


def _v1_memsw_limit(probe: CgroupProbe, data: bytes) -> int:
    # memsw limits memory + swap together; what is left for swap is the difference.
    memsw = parsers.parse_v1_limit(data)
    limit = probe.values[MAX]
    probe.extra["memsw_max_bytes"] = memsw
    _store(probe, SWAP_MAX, None if memsw is None or limit is None else max(0, memsw - limit))
    return 0


@dataclass(frozen=True, slots=True)
class Layout:
    """The files of one cgroup version by tier, with how each is applied, and the
    ``memory.stat`` keys each tier needs (picked in one pass from a single read of the file).

    ``derived`` names the files whose applier also uses another file's value (v1's memsw
    limit needs the memory limit): they are applied at every read, even when their bytes did
    not change (see :meth:`CgroupProbe._read`)."""

    version: int
    stat_file: str
    tiers: dict[int, tuple[tuple[str, Applier], ...]]
    stat_keys: dict[int, tuple[tuple[str, int], ...]]  # tier -> (memory.stat key, reading slot)
    derived: frozenset[str] = frozenset()


# Every tick needs usage, anon, file and inactive_file (working set = usage − inactive_file);
# the other memory.stat keys move slowly enough to be picked out at MEDIUM reads.
V2_LAYOUT = Layout(
    2,
    "memory.stat",
    {
        FAST: (("memory.current", _count_into(CURRENT)),),
        MEDIUM: (
            (
                "memory.events",
                _picker(
                    ("oom_kill", "oom", "high", "max"),
                    (OOM_KILL, OOM_EVENTS, HIGH_EVENTS, MAX_EVENTS),
                    "memory.events",
                ),
            ),
            ("memory.pressure", _v2_pressure),
        ),
        SLOW: (
            ("memory.max", _limit_into(MAX)),
            ("memory.high", _limit_into(HIGH)),
            ("memory.swap.max", _limit_into(SWAP_MAX)),
            ("memory.swap.current", _count_into(SWAP_CURRENT)),
            ("memory.swap.events", _picker(("fail",), (SWAP_FAIL_EVENTS,), "memory.swap.events")),
        ),
    },
    {
        FAST: (("anon", ANON), ("file", FILE), ("inactive_file", INACTIVE_FILE)),
        MEDIUM: (
            ("active_file", ACTIVE_FILE),
            ("shmem", SHMEM),
            ("kernel", KERNEL),
            ("pgmajfault", PGMAJFAULT),
        ),
    },
)

V1_LAYOUT = Layout(
    1,
    "memory.stat",
    {
        FAST: (("memory.usage_in_bytes", _count_into(CURRENT)),),
        MEDIUM: (
            ("memory.oom_control", _picker(("oom_kill",), (OOM_KILL,), "memory.oom_control")),
            ("memory.failcnt", _v1_failcnt),
        ),
        SLOW: (
            ("memory.limit_in_bytes", _v1_limit),
            ("memory.memsw.limit_in_bytes", _v1_memsw_limit),
            ("memory.kmem.usage_in_bytes", _count_into(KERNEL)),
        ),
    },
    {
        FAST: (("total_rss", ANON), ("total_cache", FILE), ("total_inactive_file", INACTIVE_FILE)),
        MEDIUM: (
            ("total_active_file", ACTIVE_FILE),
            ("total_shmem", SHMEM),
            ("total_pgmajfault", PGMAJFAULT),
            ("total_swap", SWAP_CURRENT),
        ),
    },
    frozenset(("memory.memsw.limit_in_bytes",)),
)


# The FAST read written out (CgroupProbe.read_fast): usage, then three memory.stat sizes.
_FAST_SLOTS = (ANON, FILE, INACTIVE_FILE)
_S1, _S2, _S3 = _FAST_SLOTS
_P1, _P2, _P3 = (ROW_POS[slot] for slot in _FAST_SLOTS)
_CURRENT_POS = ROW_POS[CURRENT]
# (usage file, stat file, the needles of the three keys) by cgroup version
_FAST_SPECS: dict[int, tuple[str, str, bytes, bytes, bytes]] = {}
for _layout in (V2_LAYOUT, V1_LAYOUT):
    ((_usage_file, _),) = _layout.tiers[FAST]
    _keys = dict((slot, key) for key, slot in _layout.stat_keys[FAST])
    _n1, _n2, _n3 = (needle for needle, _ in parsers.key_needles([_keys[slot] for slot in _FAST_SLOTS]))
    _FAST_SPECS[_layout.version] = (_usage_file, _layout.stat_file, _n1, _n2, _n3)


def layout_for(version: int) -> Layout:
    if version == 2:
        return V2_LAYOUT
    if version == 1:
        return V1_LAYOUT
    raise ValueError(f"cgroup version must be 1 or 2, got {version!r}")


# (file name, applier, whether unchanged bytes may skip the applier) in reading order
Plan = tuple[tuple[str, Applier, bool], ...]
_PLAN_CACHE: dict[tuple[int, frozenset[str], bool], dict[int, Plan]] = {}


def _plans(layout: Layout, missing: frozenset[str], skip_unchanged: bool = True) -> dict[int, Plan]:
    """One flat plan per combination of tiers, so a read is a single loop.

    ``memory.stat`` comes second (after usage), read once with one picker for the keys of all
    the tiers in the combination. Plans are shared by every probe with the same layout and
    missing files: hundreds of probes must stay small, so none holds its own copy.

    Only MEDIUM and SLOW files that are not ``derived`` may skip their applier when their
    bytes did not change: the fields they set are set by nothing else. ``memory.stat`` and the
    usage file may not: the FAST read writes their fields in between. ``skip_unchanged`` False
    (benchmarks only: `memoryguard sample --no-skip-unchanged`) makes nothing skippable.
    """
    key = (layout.version, missing, skip_unchanged)
    plans = _PLAN_CACHE.get(key)
    if plans is None:
        plans = {}
        for mask in range(1, ALL_TIERS + 1):
            tiers = [tier for tier in (FAST, MEDIUM, SLOW) if tier & mask]
            files = [
                (name, apply, skip_unchanged and tier != FAST and name not in layout.derived)
                for tier in tiers
                for name, apply in layout.tiers[tier]
                if name not in missing
            ]
            stat_keys = [pair for tier in tiers for pair in layout.stat_keys.get(tier, ())]
            if stat_keys and layout.stat_file not in missing:
                keys, slots = zip(*stat_keys, strict=True)
                files.insert(min(1, len(files)), (layout.stat_file, _picker(keys, slots, None), False))
            plans[mask] = tuple(files)
        _PLAN_CACHE[key] = plans
    return plans


class CgroupProbe:
    """One cgroup's memory files, read tier by tier into :attr:`values` and :attr:`row`.

    ``values`` is the exact reading and ``row`` its encoded twin (see ``reading``). A file
    found missing once is not tried again (its fields stay unknown): kernels do not grow
    files at run time.

    Files are opened relative to a descriptor of the cgroup directory (``openat``), which
    saves resolving the whole path (five or six levels under kubepods) for every file, every
    tick — 10 to 20 % of the reading cost. The descriptor (``O_PATH``: no buffers behind it)
    is held until :meth:`close`; without one (out of descriptors) files are opened by path.
    """

    __slots__ = (
        "_applied",
        "_by_path",
        "_dir_fd",
        "_fast",
        "_plans",
        "_prefix",
        "_skip_unchanged",
        "extra",
        "layout",
        "missing",
        "path",
        "raw",
        "row",
        "values",
    )

    def __init__(self, path: str | Path, layout: Layout, *, skip_unchanged: bool = True) -> None:
        self.path = str(path)
        self.layout = layout
        self._skip_unchanged = skip_unchanged
        self.values: list[Any] = new_values()
        self.row = new_row(self.values)
        self.raw: dict[str, bytes] = {}
        self.extra: dict[str, int | None] = {}
        self.missing: set[str] = set()
        self._applied: dict[str, bytes] = {}  # skippable file -> the bytes last applied cleanly
        self._plans = _plans(layout, frozenset(), skip_unchanged)
        self._fast = _FAST_SPECS[layout.version]
        self._dir_fd: int | None = None
        self._prefix = self.path + "/"  # what file names are joined to: "" once the directory is open
        self._by_path = False  # the directory could not be opened (no descriptors left): use paths

    def _plan(self) -> None:
        self._plans = _plans(self.layout, frozenset(self.missing), self._skip_unchanged)

    def _attach(self) -> bool:
        """Open the cgroup directory; False when it is gone. Other failures keep path opens."""
        try:
            self._dir_fd = os.open(self.path, _DIR_FLAGS)
        except OSError as exc:
            self._by_path = True
            return exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV)
        self._prefix = ""
        return True

    def close(self) -> None:
        """Let go of the directory descriptor (reading again reopens it)."""
        fd, self._dir_fd = getattr(self, "_dir_fd", None), None
        self._prefix = self.path + "/"
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.close()

    def paths(self, tiers: int) -> list[str]:
        """The files a read of these tiers opens, by absolute path."""
        if not tiers:
            return []
        return [f"{self.path}/{name}" for name, _, _ in self._plans[tiers]]

    def opens(self, tiers: int) -> list[tuple[int | None, str]]:
        """The ``(dir_fd, name)`` pairs a read of these tiers passes to ``os.open`` (the benchmark's
        floor loop opens the same files the same way)."""
        if not tiers:
            return []
        prefix = self._prefix
        return [(self._dir_fd, prefix + name) for name, _, _ in self._plans[tiers]]

    def read(self, tiers: int, errors: MutableMapping[str, int]) -> bool:
        """Read the files of ``tiers``; False when the cgroup has vanished (nothing more to read)."""
        if tiers == FAST:
            return self.read_fast(errors)
        if self._dir_fd is None and not self._by_path and not self._attach():
            errors["vanished"] = errors.get("vanished", 0) + 1
            return False
        return self._read(tiers, errors)

    def read_fast(self, errors: MutableMapping[str, int]) -> bool:
        """``read(FAST, errors)``, written out for the sampler's hot path.

        Nine reads in ten are this one, for every container every tick, so it does the general
        read's work inline for the normal case — both files there, usage a plain number, the
        three memory.stat keys present with plain numbers — and hands anything else to the
        general read (which reads again and says what was wrong).
        """
        dir_fd = self._dir_fd
        if dir_fd is None or self.missing:
            if dir_fd is None and not self._by_path and not self._attach():
                errors["vanished"] = errors.get("vanished", 0) + 1
                return False
            return self._read(FAST, errors)
        current_name, stat_name, n1, n2, n3 = self._fast
        try:
            fd = os.open(current_name, _OPEN_FLAGS, dir_fd=dir_fd)
            try:
                current = os.read(fd, _READ_SIZE)
            finally:
                os.close(fd)
            fd = os.open(stat_name, _OPEN_FLAGS, dir_fd=dir_fd)
            try:
                stat = os.read(fd, _READ_SIZE)
            finally:
                os.close(fd)
        except OSError:
            return self._read(FAST, errors)
        raw = current.strip()
        buf = b"\n" + stat  # so that the first line starts with a newline too
        # What follows a key's first "\n<key> " up to the line's end. partition is a cheaper
        # call than find (no argument tuple to parse) and a missing key gives b"", not a digit.
        d1 = buf.partition(n1)[2].partition(b"\n")[0]
        d2 = buf.partition(n2)[2].partition(b"\n")[0]
        d3 = buf.partition(n3)[2].partition(b"\n")[0]
        # Up to 12 digits (under 1 TB) a size in KiB fits a row field without saturating;
        # anything longer goes the general way, which saturates (or finds it malformed).
        if (
            not (raw.isdigit() and d1.isdigit() and d2.isdigit() and d3.isdigit())
            or len(raw) > 12 or len(d1) > 12 or len(d2) > 12 or len(d3) > 12
            or len(stat) == _READ_SIZE
        ):  # fmt: skip
            return self._read(FAST, errors)
        values = self.values
        row = self.row
        usage = int(raw)
        values[CURRENT] = usage
        row[_CURRENT_POS] = usage >> 10
        v1 = int(d1)
        values[_S1] = v1
        row[_P1] = v1 >> 10
        v2 = int(d2)
        values[_S2] = v2
        row[_P2] = v2 >> 10
        v3 = int(d3)
        values[_S3] = v3
        row[_P3] = v3 >> 10
        return True

    def _read(self, tiers: int, errors: MutableMapping[str, int]) -> bool:
        # Limits, event counters and PSI of most cgroups read the same from one read to the
        # next: bytes equal to those last applied cleanly leave the reading as it is, so the
        # applier is skipped. A file that was malformed is parsed (and counted) at every read.
        applied = self._applied
        for name, apply, skippable in self._plans[tiers]:
            try:
                fd = os.open(self._prefix + name, _OPEN_FLAGS, dir_fd=self._dir_fd)
                try:
                    data = os.read(fd, _READ_SIZE)
                    if len(data) == _READ_SIZE:
                        data += _rest(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                kind = self._classify(exc, name)
                if kind == "replaced":
                    continue  # the directory was removed and made again: reopened next read
                errors[kind] = errors.get(kind, 0) + 1
                if kind == "vanished":
                    return False
                continue
            if skippable and applied.get(name) == data:
                continue
            try:
                malformed = apply(self, data)
            except ParseError:
                malformed = 1
            if malformed:
                errors["malformed"] = errors.get("malformed", 0) + malformed
                applied.pop(name, None)
            elif skippable:
                applied[name] = data
        return True

    def _classify(self, exc: OSError, name: str) -> str:
        if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENOTDIR):
            if not os.path.isdir(self.path):
                return "vanished"
            if self._dir_fd is not None:
                # The directory we hold may be a removed one, with a new one at the same path.
                self.close()
                if os.path.exists(f"{self.path}/{name}"):
                    return "replaced"
            self.missing.add(name)
            self._plan()
            return "missing_file"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "permission"
        return "io"

    @property
    def complete(self) -> bool:
        """Whether the core of a Sample (anon and file) is known."""
        return self.values[ANON] is not None and self.values[FILE] is not None

    def sample(self, t_seconds: float) -> Sample:
        """The current values as a Sample (call only when :attr:`complete`)."""
        return sample_from_values(t_seconds, self.values)

    # --- full dicts, parsed on demand from the raw bytes of the last read ---------------------

    def stat(self) -> dict[str, int]:
        """Every memory.stat key, read now (~1.7 KiB is not worth keeping for every cgroup)."""
        try:
            return parsers.parse_flat_keyed(read_file(f"{self.path}/memory.stat"))[0]
        except OSError:
            return {}

    def events(self) -> dict[str, int]:
        if self.layout.version == 2:
            return _parsed_flat(self.raw.get("memory.events"))
        events = _parsed_flat(self.raw.get("memory.oom_control"))
        failcnt = self.raw.get("memory.failcnt")
        if failcnt is not None:
            with contextlib.suppress(ParseError):
                events["failcnt"] = parsers.parse_count(failcnt)
        return events

    def swap_events(self) -> dict[str, int]:
        return _parsed_flat(self.raw.get("memory.swap.events"))

    def pressure(self) -> dict[str, dict[str, float | int]]:
        data = self.raw.get("memory.pressure")
        return {} if data is None else parsers.parse_pressure(data)[0]

    def limits(self) -> dict[str, int | None]:
        """The limits (bytes; None = unlimited or unknown): max, high and swap max as last read;
        the protections (v2 memory.min/low, v1 soft limit) read now — nothing decides on them,
        so the tick does not spend reads on them."""
        out: dict[str, int | None] = {
            "max_bytes": self.values[MAX],
            "high_bytes": self.values[HIGH],
            "swap_max_bytes": self.values[SWAP_MAX],
        }
        out.update(self.extra)
        on_demand = (
            (
                ("min_bytes", "memory.min", parsers.parse_count),
                ("low_bytes", "memory.low", parsers.parse_count),
            )
            if self.layout.version == 2
            else (("soft_limit_bytes", "memory.soft_limit_in_bytes", parsers.parse_v1_limit),)
        )
        for key, name, parse in on_demand:
            try:
                out[key] = parse(read_file(f"{self.path}/{name}"))
            except (OSError, ParseError):
                out[key] = None
        return out


def _parsed_flat(data: bytes | None) -> dict[str, int]:
    return {} if data is None else parsers.parse_flat_keyed(data)[0]


def read_sample(
    path: Path, version: int, t_seconds: float, errors: MutableMapping[str, int]
) -> Sample | None:
    """Read every file of one cgroup now: its Sample, or None when it vanished or lacks anon/file."""
    probe = CgroupProbe(path, layout_for(version))
    if not probe.read(ALL_TIERS, errors) or not probe.complete:
        return None
    return probe.sample(t_seconds)


def normalized_stat(version: int, stat: dict[str, int]) -> dict[str, int]:
    """memory.stat with v1's hierarchical ``total_*`` keys renamed to their v2 names.

    v1 ``rss`` becomes ``anon`` and ``cache`` becomes ``file``; keys without a ``total_`` form
    are dropped (they count the cgroup alone, not its children). v2 stats come back unchanged.
    """
    if version == 2:
        return dict(stat)
    renamed = {"rss": "anon", "cache": "file"}
    out: dict[str, int] = {}
    for key, value in stat.items():
        if key.startswith("total_"):
            name = key.removeprefix("total_")
            out[renamed.get(name, name)] = value
    return out


class NodeProbe:
    """Node-level memory, read when asked (the API and ``/metrics``), never in the tick.

    ``meminfo`` (``/proc/meminfo``, bytes; ``HugePages_*`` are counts), ``pressure`` (node PSI,
    ``/proc/pressure/memory``: averages in percent, ``total`` in µs), ``root_stat`` (the root
    cgroup's ``memory.stat``; v2 kernels that have none leave it out) and, on v1,
    ``root_usage_bytes``. A key is absent when its file could not be read. Errors are counted
    by kind like the cgroup reads'; a missing file (no PSI in this kernel) is counted once and
    not tried again.
    """

    def __init__(self, hierarchy: Hierarchy, proc_root: Path) -> None:
        self.sources: dict[str, Path] = {
            "meminfo": proc_root / "meminfo",
            "pressure": proc_root / "pressure" / "memory",
            "root_stat": hierarchy.memory_root / "memory.stat",
        }
        if hierarchy.version == 1:
            self.sources["root_usage_bytes"] = hierarchy.memory_root / "memory.usage_in_bytes"
        self.missing: set[str] = set()

    def read(self, errors: MutableMapping[str, int]) -> dict[str, Any]:
        node: dict[str, Any] = {}
        for key, path in self.sources.items():
            if key in self.missing:
                continue
            try:
                data = read_file(path)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EPERM):
                    kind = "permission"
                elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    kind = "missing_file"
                    self.missing.add(key)
                else:
                    kind = "io"
                errors[kind] = errors.get(kind, 0) + 1
                continue
            malformed = 0
            value: Any
            try:
                if key == "meminfo":
                    value, malformed = parsers.parse_meminfo(data)
                elif key == "pressure":
                    value, malformed = parsers.parse_pressure(data)
                elif key == "root_stat":
                    value, malformed = parsers.parse_flat_keyed(data)
                else:
                    value = parsers.parse_count(data)
            except ParseError:
                errors["malformed"] = errors.get("malformed", 0) + 1
                continue
            if malformed:
                errors["malformed"] = errors.get("malformed", 0) + malformed
            node[key] = value
        return node
