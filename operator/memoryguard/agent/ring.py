"""Bounded sample history of one cgroup, compact enough for hundreds of containers.

500 containers × 30 minutes × 1 Hz is 900 000 samples: as Python objects that would be
hundreds of MiB. A :class:`SampleRing` stores rows in ``array.array`` instead — ``t`` as a
float64 and every other field as the uint32 encoding of ``reading.py`` (bytes in KiB, PSI in
hundredths of a percent, counters as they are, a sentinel for unknown/unlimited) — in two tiers:

- a **fine** tier keeps every sample of the last ``fine_capacity`` ticks (5 minutes by default);
- a **coarse** tier keeps one sample per ``coarse_step_seconds`` (10 s) of what falls out of
  the fine tier, for the rest of the retention (30 minutes).

Rows are real samples (decimated, never averaged), so a window over both tiers is an
irregularly spaced series: every row at 1 s for the last 5 minutes, every 10th before. With
the defaults a full ring is 450 rows × 88 bytes ≈ 39 KiB per container.

Stored byte counts are truncated to whole KiB; the exact latest reading is kept by the
sampler's probe, not here.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from typing import Any

from memoryguard.agent.reading import READING_FIELDS, WIDTH, decode

COLUMNS: tuple[str, ...] = ("t_seconds", *READING_FIELDS)

_WIDTH = WIDTH
_ZERO_ROW = bytes(4 * _WIDTH)


class _Tier:
    __slots__ = ("capacity", "count", "head", "times", "values")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.times = array("d", bytes(8 * capacity))
        self.values = array("I", _ZERO_ROW * capacity)
        self.head = 0  # index of the oldest row
        self.count = 0

    def push(self, t_seconds: float, row: array[int]) -> None:
        """Append a row, overwriting the oldest when full."""
        slot = (self.head + self.count) % self.capacity
        if self.count == self.capacity:
            self.head = (self.head + 1) % self.capacity
        else:
            self.count += 1
        self.times[slot] = t_seconds
        start = slot * _WIDTH
        self.values[start : start + _WIDTH] = row

    def last_t(self) -> float | None:
        if self.count == 0:
            return None
        return self.times[(self.head + self.count - 1) % self.capacity]

    def rows(self, after_seconds: float) -> Iterator[tuple[float, array[int]]]:
        for i in range(self.count):
            slot = (self.head + i) % self.capacity
            t = self.times[slot]
            if t > after_seconds:
                start = slot * _WIDTH
                yield t, self.values[start : start + _WIDTH]


class SampleRing:
    """Every sample of the last ``fine_capacity`` appends, then one per ``coarse_step_seconds``."""

    __slots__ = ("_coarse", "_fine", "coarse_step_seconds")

    def __init__(self, fine_capacity: int, coarse_capacity: int, coarse_step_seconds: float) -> None:
        if fine_capacity < 1 or coarse_capacity < 0:
            raise ValueError("fine_capacity must be ≥ 1 and coarse_capacity ≥ 0")
        self._fine = _Tier(fine_capacity)
        self._coarse = _Tier(coarse_capacity)
        self.coarse_step_seconds = coarse_step_seconds

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
        return self._fine.count + self._coarse.count

    @property
    def capacity(self) -> int:
        return self._fine.capacity + self._coarse.capacity

    def append(self, t_seconds: float, row: array[int]) -> None:
        """Store one encoded reading (``reading.new_row``, a probe's ``row``) taken at ``t_seconds``."""
        fine = self._fine
        coarse = self._coarse
        if fine.count == fine.capacity and coarse.capacity:
            # The oldest fine row is about to go: keep it if it is a coarse step after the last kept.
            oldest_t = fine.times[fine.head]
            last = coarse.last_t()
            # 5 % slack, so rows a hair under the step apart (timer jitter) still count.
            if last is None or oldest_t - last >= self.coarse_step_seconds * 0.95:
                start = fine.head * _WIDTH
                coarse.push(oldest_t, fine.values[start : start + _WIDTH])
        fine.push(t_seconds, row)

    def rows(self, after_seconds: float = -math.inf) -> list[list[Any]]:
        """Rows with ``t_seconds > after_seconds``, oldest first, as ``[t_seconds, *values]``."""
        out = [decode(t, row) for t, row in self._coarse.rows(after_seconds)]
        out.extend(decode(t, row) for t, row in self._fine.rows(after_seconds))
        return out

    def nbytes(self) -> int:
        """Memory held by the row buffers (for reporting)."""
        return sum(
            tier.times.buffer_info()[1] * tier.times.itemsize
            + tier.values.buffer_info()[1] * tier.values.itemsize
            for tier in (self._fine, self._coarse)
        )
