"""One cgroup reading as a flat vector, and its compact uint32 form for the rings.

A reading is a list laid out like :class:`memoryguard.engine.model.Sample` without the time
(:data:`READING_FIELDS`). Bytes and counters are ints, ``psi_*`` are hundredths of a percent
(exact: the kernel prints two decimals), ``alive`` is 0/1; None means unknown, or ``max`` for
the limits. Every reading also has an encoded twin, a ``uint32`` row (fields in
:data:`ROW_SLOTS` order: those that change every tick first) that the probe keeps up to date
field by field as it reads files, so appending to a ring copies 80 bytes instead of converting
twenty Python ints every tick:

- bytes are stored in KiB (the kernel counts pages; only byte-granular kernel counters lose
  anything), which caps a stored size at 4 TiB;
- counters and KiB values saturate at ``CEILING`` (2**32 − 2);
- ``NONE`` (2**32 − 1) stands for None.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from memoryguard.engine.model import Sample

READING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Sample) if f.name != "t_seconds")
WIDTH = len(READING_FIELDS)
_SAMPLE_KEYS = ("t_seconds", *READING_FIELDS)
_INDEX = {name: i for i, name in enumerate(READING_FIELDS)}
ANON = _INDEX["anon_bytes"]
FILE = _INDEX["file_bytes"]
MAX = _INDEX["max_bytes"]
INACTIVE_FILE = _INDEX["inactive_file_bytes"]
ACTIVE_FILE = _INDEX["active_file_bytes"]
SHMEM = _INDEX["shmem_bytes"]
KERNEL = _INDEX["kernel_bytes"]
CURRENT = _INDEX["current_bytes"]
HIGH = _INDEX["high_bytes"]
SWAP_CURRENT = _INDEX["swap_current_bytes"]
SWAP_MAX = _INDEX["swap_max_bytes"]
OOM_KILL = _INDEX["oom_kill"]
OOM_EVENTS = _INDEX["oom_events"]
HIGH_EVENTS = _INDEX["high_events"]
MAX_EVENTS = _INDEX["max_events"]
SWAP_FAIL_EVENTS = _INDEX["swap_fail_events"]
PGMAJFAULT = _INDEX["pgmajfault"]
PSI_SOME = _INDEX["psi_some_avg10"]
PSI_FULL = _INDEX["psi_full_avg10"]
ALIVE = _INDEX["alive"]

# Row layout: the fields that move from tick to tick first, then those that rarely change
# (limits, event counters, alive), which the ring keeps as a change log instead of per row.
DENSE_SLOTS = (
    ANON,
    FILE,
    INACTIVE_FILE,
    ACTIVE_FILE,
    SHMEM,
    KERNEL,
    CURRENT,
    SWAP_CURRENT,
    PGMAJFAULT,
    PSI_SOME,
    PSI_FULL,
)
SPARSE_SLOTS = (MAX, HIGH, SWAP_MAX, OOM_KILL, OOM_EVENTS, HIGH_EVENTS, MAX_EVENTS, SWAP_FAIL_EVENTS, ALIVE)
ROW_SLOTS = DENSE_SLOTS + SPARSE_SLOTS  # row[i] holds the field READING_FIELDS[ROW_SLOTS[i]]
if sorted(ROW_SLOTS) != list(range(WIDTH)):
    raise AssertionError("every Sample field must be either dense or sparse in a row")
ROW_POS = tuple(ROW_SLOTS.index(slot) for slot in range(WIDTH))  # where field ``slot`` sits in a row
DENSE_WIDTH = len(DENSE_SLOTS)

# Sample fields that are plain ints (0 when the kernel does not say) rather than optional.
COUNTERS = frozenset((OOM_KILL, OOM_EVENTS, HIGH_EVENTS, MAX_EVENTS, SWAP_FAIL_EVENTS, PGMAJFAULT))
# Right shift applied before storing: bytes become KiB.
SHIFTS: tuple[int, ...] = tuple(10 if name.endswith("_bytes") else 0 for name in READING_FIELDS)

NONE = 0xFFFFFFFF
CEILING = 0xFFFFFFFE


def new_values() -> list[Any]:
    """A reading before anything was read: unknown sizes, zero counters, alive."""
    values: list[Any] = [None] * WIDTH
    for slot in COUNTERS:
        values[slot] = 0
    values[ALIVE] = 1
    return values


def new_row(values: Sequence[Any]) -> array[int]:
    """The encoded row of a reading, in :data:`ROW_SLOTS` order."""
    return array("I", [encode(slot, values[slot]) for slot in ROW_SLOTS])


def encode(slot: int, value: int | None) -> int:
    """One field's stored form (the probe inlines this for the hot fields)."""
    if value is None:
        return NONE
    stored = value >> SHIFTS[slot]
    if stored > CEILING:
        return CEILING
    return stored if stored > 0 else 0


def decode(t_seconds: float, row: Sequence[int]) -> list[Any]:
    """A stored row back as ``[t_seconds, *values]`` in Sample order and units (bytes, percent, bool)."""
    # Runs for every row an API answer carries (165 000 for a 600 s window of 500 containers):
    # two comprehensions instead of a branchy loop over the fields. (No tuple in between: the
    # interpreter keeps up to 2000 freed 20-tuples for reuse: ~0.4 MiB held after an answer.)
    values = [None if v == NONE else v << s for v, s in zip(row, _ROW_SHIFTS, strict=True)]
    out: list[Any] = [t_seconds] + [values[i] for i in ROW_POS]
    for i in _PSI_OUT:
        if out[i] is not None:
            out[i] /= 100
    alive = out[_ALIVE_OUT]
    if alive is not None:
        out[_ALIVE_OUT] = bool(alive)
    return out


_ROW_SHIFTS = tuple(SHIFTS[slot] for slot in ROW_SLOTS)
_PSI_OUT = (PSI_SOME + 1, PSI_FULL + 1)  # + 1: t_seconds comes first
_ALIVE_OUT = ALIVE + 1


def values_as_dict(t_seconds: float, values: Sequence[Any]) -> dict[str, Any]:
    """``sample_from_values(t_seconds, values).to_dict()``, without the Sample (``asdict`` copies
    every field through a generic path: for hundreds of containers per API answer it adds up)."""
    out = dict(zip(_SAMPLE_KEYS, (t_seconds, *values), strict=True))
    for slot in (PSI_SOME, PSI_FULL):
        if values[slot] is not None:
            out[READING_FIELDS[slot]] = values[slot] / 100
    out["alive"] = bool(values[ALIVE])
    return out


def sample_from_values(t_seconds: float, values: Sequence[Any]) -> Sample:
    """A Sample from an exact reading."""
    kwargs = dict(zip(READING_FIELDS, values, strict=True))
    for slot in (PSI_SOME, PSI_FULL):
        if values[slot] is not None:
            kwargs[READING_FIELDS[slot]] = values[slot] / 100
    kwargs["alive"] = bool(values[ALIVE])
    return Sample(t_seconds=t_seconds, **kwargs)
