"""Bounded sample history of one cgroup, compact enough for hundreds of containers.

500 containers × 30 minutes × 1 Hz is 900 000 samples: as Python objects that would be
hundreds of MiB, and the whole agent must stay under 60 MiB. A :class:`SampleRing` stores the
encoded rows of ``reading.py`` in ``array.array`` buffers instead (bytes in KiB, PSI in
hundredths of a percent, a sentinel for unknown/unlimited), split by how often fields change:

- the eleven fields that move every tick (anon, file, the file lists, shmem, kernel,
  usage, swap, major faults, PSI) are stored per row with a float64 time, in two tiers:
  a **fine** tier with every sample of the last ``fine_capacity`` ticks (5 minutes by
  default), and a **coarse** tier that keeps one row per ``coarse_step_seconds`` (10 s) of
  what falls out of the fine tier, for the rest of the retention (30 minutes);
- the nine that rarely change (limits, event counters, alive) are kept as a **change log**:
  a new entry only when one of them differs from the last entry.

Rows read back are real samples (decimated, never averaged): every second for the last 5
minutes, every 10 s before, each with the rarely-changing fields as they were at its time.
With the defaults a full ring is 450 rows × 52 bytes ≈ 23 KiB per container, plus a few
change-log entries (44 bytes each).

Stored byte counts are truncated to whole KiB; the exact latest reading is kept by the
sampler's probe, not here.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from typing import Any

from memoryguard.agent.reading import DENSE_WIDTH, READING_FIELDS, WIDTH, decode

COLUMNS: tuple[str, ...] = ("t_seconds", *READING_FIELDS)

_SPARSE_WIDTH = WIDTH - DENSE_WIDTH


class _Tier:
    """A circular buffer of (time, dense row)."""

    __slots__ = ("capacity", "count", "head", "times", "values")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Repetition allocates each buffer once (no temporary object of the same size).
        self.times = array("d", [0.0]) * capacity
        self.values = array("I", [0]) * (capacity * DENSE_WIDTH)
        self.head = 0  # index of the oldest row
        self.count = 0

    def push(self, t_seconds: float, dense: array[int]) -> None:
        """Append a row, overwriting the oldest when full."""
        slot = (self.head + self.count) % self.capacity
        if self.count == self.capacity:
            self.head = (self.head + 1) % self.capacity
        else:
            self.count += 1
        self.times[slot] = t_seconds
        start = slot * DENSE_WIDTH
        self.values[start : start + DENSE_WIDTH] = dense

    def newest(self) -> float:
        """Time of the newest row (the tier must not be empty)."""
        return self.times[(self.head + self.count - 1) % self.capacity]

    def rows(self, after_seconds: float) -> Iterator[tuple[float, array[int]]]:
        return _rows(self.times, self.values, self.head, self.count, self.capacity, after_seconds)


def _rows(
    times: array[float], values: array[int], head: int, count: int, capacity: int, after_seconds: float
) -> Iterator[tuple[float, array[int]]]:
    """The (time, dense row) pairs of a circular buffer with ``t_seconds > after_seconds``, oldest first.

    Rows are appended in time order, so the first of them is found from the newest back: the
    operator's incremental request (one or two new rows per container, every second) costs
    what it returns, not a pass over the whole buffer.
    """
    first = count
    while first and times[(head + first - 1) % capacity] > after_seconds:
        first -= 1
    for i in range(first, count):
        slot = (head + i) % capacity
        start = slot * DENSE_WIDTH
        yield times[slot], values[start : start + DENSE_WIDTH]


class _ChangeLog:
    """(time, sparse fields) entries, one per change of the sparse fields."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times = array("d")
        self.values = array("I")

    def __len__(self) -> int:
        return len(self.times)

    def add(self, t_seconds: float, sparse: array[int]) -> None:
        self.times.append(t_seconds)
        self.values.extend(sparse)

    def forget_before(self, t_seconds: float) -> None:
        """Drop entries no row needs: all but the last one at or before ``t_seconds``."""
        drop = 0
        while drop + 1 < len(self.times) and self.times[drop + 1] <= t_seconds:
            drop += 1
        if drop:
            del self.times[:drop]
            del self.values[: drop * _SPARSE_WIDTH]

    def entry(self, index: int) -> array[int]:
        return self.values[index * _SPARSE_WIDTH : (index + 1) * _SPARSE_WIDTH]


class SampleRing:
    """Every sample of the last ``fine_capacity`` appends, then one per ``coarse_step_seconds``."""

    # The fine tier's circular buffer is held here directly, not as a _Tier: the append that
    # runs for every container every tick then touches one object less (500 rings do not stay
    # in the CPU caches from one tick to the next).
    __slots__ = (
        "_changes",
        "_coarse",
        "_coarse_gap_seconds",
        "_coarse_newest",
        "_fine_capacity",
        "_fine_count",
        "_fine_head",
        "_fine_times",
        "_fine_values",
        "_sparse_last",
        "coarse_step_seconds",
    )

    def __init__(self, fine_capacity: int, coarse_capacity: int, coarse_step_seconds: float) -> None:
        if fine_capacity < 1 or coarse_capacity < 0:
            raise ValueError("fine_capacity must be ≥ 1 and coarse_capacity ≥ 0")
        self._fine_capacity = fine_capacity
        # Repetition allocates each buffer once (no temporary object of the same size).
        self._fine_times = array("d", [0.0]) * fine_capacity
        self._fine_values = array("I", [0]) * (fine_capacity * DENSE_WIDTH)
        self._fine_head = 0  # index of the oldest row
        self._fine_count = 0
        self._coarse = _Tier(coarse_capacity)
        self._changes = _ChangeLog()
        self._sparse_last: array[int] | None = None  # the change log's last entry
        self.coarse_step_seconds = coarse_step_seconds
        # The coarse tier keeps a row that falls out of the fine tier a coarse step (less 5 %
        # for timer jitter) after the last row it kept; a tier without room keeps none.
        self._coarse_gap_seconds = coarse_step_seconds * 0.95
        self._coarse_newest = -math.inf if coarse_capacity else math.inf

    @classmethod
    def for_retention(
        cls,
        *,
        retention_seconds: float,
        interval_seconds: float,
        fine_seconds: float = 300.0,
        coarse_step_seconds: float = 10.0,
    ) -> SampleRing:
        """Capacities for the given retention: fine rows at every interval, coarse rows for the rest."""
        fine_seconds = min(fine_seconds, retention_seconds)
        fine = max(1, math.ceil(fine_seconds / interval_seconds))
        rest_seconds = retention_seconds - fine * interval_seconds
        coarse = max(0, math.ceil(rest_seconds / coarse_step_seconds)) if rest_seconds > 0 else 0
        return cls(fine, coarse, coarse_step_seconds)

    def __len__(self) -> int:
        return self._fine_count + self._coarse.count

    @property
    def capacity(self) -> int:
        return self._fine_capacity + self._coarse.capacity

    def append(self, t_seconds: float, row: array[int], sparse_changed: bool = True) -> None:
        """Store one encoded reading (a probe's ``row``: ``reading.ROW_SLOTS`` order) at ``t_seconds``.

        ``sparse_changed=False`` promises that the rarely-changing fields were not read since
        the last append (the sampler knows: only its MEDIUM and SLOW reads set them), which
        saves comparing them.
        """
        # Runs for every container every tick: the fine tier's push is written out here.
        times = self._fine_times
        capacity = self._fine_capacity
        slot = self._fine_head
        if self._fine_count == capacity:
            # The oldest fine row is about to be overwritten: the coarse tier may keep it.
            oldest_t = times[slot]
            if oldest_t - self._coarse_newest >= self._coarse_gap_seconds:
                start = slot * DENSE_WIDTH
                self._coarse.push(oldest_t, self._fine_values[start : start + DENSE_WIDTH])
                self._coarse_newest = oldest_t
            self._fine_head = slot + 1 if slot + 1 < capacity else 0
        else:
            slot = (slot + self._fine_count) % capacity
            self._fine_count += 1
        times[slot] = t_seconds
        start = slot * DENSE_WIDTH
        self._fine_values[start : start + DENSE_WIDTH] = row[:DENSE_WIDTH]
        if sparse_changed or self._sparse_last is None:
            changes = self._changes
            sparse = row[DENSE_WIDTH:]
            if sparse != self._sparse_last:
                changes.add(t_seconds, sparse)
                self._sparse_last = sparse
            # Entries are added only here, so forgetting here too bounds the log as well (what
            # ages out in between is dropped at the next such append): a FAST append does not
            # touch the log at all.
            if len(changes.times) > 1:
                coarse = self._coarse
                changes.forget_before(coarse.times[coarse.head] if coarse.count else times[self._fine_head])

    def rows(self, after_seconds: float = -math.inf) -> list[list[Any]]:
        """Rows with ``t_seconds > after_seconds``, oldest first, as ``[t_seconds, *values]``."""
        changes = self._changes
        count = len(changes)
        out: list[list[Any]] = []
        if not count:  # nothing appended yet
            return out
        index = 0
        sparse = changes.entry(0)
        fine = _rows(
            self._fine_times,
            self._fine_values,
            self._fine_head,
            self._fine_count,
            self._fine_capacity,
            after_seconds,
        )
        for tier in (self._coarse.rows(after_seconds), fine):
            for t, dense in tier:
                if index + 1 < count and changes.times[index + 1] <= t:
                    while index + 1 < count and changes.times[index + 1] <= t:
                        index += 1
                    sparse = changes.entry(index)
                out.append(decode(t, dense + sparse))
        return out

    def nbytes(self) -> int:
        """Memory held by the buffers (for reporting)."""
        arrays = (
            self._fine_times,
            self._fine_values,
            self._coarse.times,
            self._coarse.values,
            self._changes.times,
            self._changes.values,
        )
        return sum(a.buffer_info()[1] * a.itemsize for a in arrays)
