"""Robust growth of one memory series over one time span.

Memory that a program holds on to shows up in the *lower envelope* of its usage: a garbage
collector's saw-tooth, request bursts and single spikes all ride on top of it, while a leak
lifts it. So the trend is fitted to the minima of a dozen time buckets (each taken at the
moment it occurred), with Theil–Sen (the median of pairwise slopes, which ignores up to ~29 % of
wild points). Kendall's tau of the same points says how consistently they rise, and the minima
of the four quarters of the span must rise one after the other: a single step (a burst that
has not ended yet, a warm-up that just stopped) is not sustained growth.

Everything here is O(n) in the number of points plus O(B²) in the bucket count B, so a decision
over a 30-minute window of one-second samples costs well under a millisecond.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

ENVELOPE_BUCKETS = 10
# Share of the pairs of envelope points that must rise rather than fall (Kendall's tau).
SUSTAINED_TAU = 0.6
# Each quarter-to-quarter rise of the envelope must carry at least this share of an even split
# of the total rise: rules out one step, allows a leak that speeds up or slows down.
QUARTER_STEP_SHARE = 0.15
# Saw-tooth and burst height above the envelope: the limit is hit by the highest peak, not a
# typical one, but a single spike should not set it.
EXCURSION_RANK = 2
# A fall of this share of the series' range is the end of a cycle (a collection, a burst
# ending), not noise; a trend needs this many cycles before a saw-tooth can be told from growth.
FALL_SHARE = 0.25
MIN_CYCLES = 4


@dataclass(frozen=True, slots=True)
class Trend:
    start_seconds: float
    end_seconds: float
    points: int
    slope_bytes_per_second: float
    level_bytes: float  # the fitted envelope at end_seconds
    tau: float  # −1 (falling) .. 1 (every envelope point above every earlier one)
    quarters_rising: bool

    @property
    def span_seconds(self) -> float:
        return self.end_seconds - self.start_seconds

    @property
    def growth_bytes(self) -> float:
        return self.slope_bytes_per_second * self.span_seconds

    @property
    def sustained(self) -> bool:
        return self.slope_bytes_per_second > 0 and self.tau >= SUSTAINED_TAU and self.quarters_rising


def _median(values: list[float]) -> float:
    values.sort()
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2.0


def envelope(
    times: Sequence[float], values: Sequence[float], lo: int, hi: int, buckets: int
) -> list[tuple[float, float]]:
    """(time, value) of the minimum of each of ``buckets`` equal time slices of [lo, hi)."""
    t0 = times[lo]
    span = times[hi - 1] - t0
    if span <= 0:
        return [(times[hi - 1], float(min(values[lo:hi])))]
    points: list[tuple[float, float]] = []
    a = lo
    for k in range(1, buckets + 1):
        b = hi if k == buckets else bisect_left(times, t0 + span * k / buckets, a, hi)
        if b > a:
            chunk = values[a:b]
            v = min(chunk)
            points.append((times[a + chunk.index(v)], float(v)))
            a = b
    return points


def fit_trend(
    times: Sequence[float], values: Sequence[float], lo: int = 0, hi: int | None = None
) -> Trend | None:
    """Trend of ``values[lo:hi]`` (times ascending); ``None`` with fewer than 4 points.

    Bucket minima only trace the floor of a saw-tooth when each bucket holds a whole cycle. So
    when growth looks sustained, the cycles are counted (falls of a quarter of the range or
    more) and, if there are fewer than buckets, the fit is redone with one bucket per cycle;
    under four cycles there is no telling a saw-tooth's ramps from growth, and it is not
    called sustained.
    """
    if hi is None:
        hi = len(values)
    if hi - lo < 4:
        return None
    trend = _fit(times, values, lo, hi, ENVELOPE_BUCKETS)
    if trend is None or not trend.sustained:
        return trend
    cycles = count_falls(values, lo, hi)
    if cycles == 0 or cycles >= ENVELOPE_BUCKETS:
        return trend
    if cycles < MIN_CYCLES:
        return replace(trend, quarters_rising=False)
    return _fit(times, values, lo, hi, cycles)


def count_falls(values: Sequence[float], lo: int, hi: int) -> int:
    """How many times the series falls by a quarter of its range from a peak (GC cycles,
    bursts ending), not counting noise."""
    window = values[lo:hi]
    threshold = FALL_SHARE * (max(window) - min(window))
    if threshold <= 0:
        return 0
    falls = 0
    peak = window[0]
    for v in window:
        if v > peak:
            peak = v
        elif peak - v >= threshold:
            falls += 1
            peak = v
    return falls


def _fit(times: Sequence[float], values: Sequence[float], lo: int, hi: int, buckets: int) -> Trend | None:
    points = envelope(times, values, lo, hi, buckets)
    m = len(points)
    if m < 3:
        return None
    ts = [p[0] for p in points]
    vs = [p[1] for p in points]
    slopes = [(vs[j] - vs[i]) / (ts[j] - ts[i]) for i in range(m) for j in range(i + 1, m) if ts[j] > ts[i]]
    if not slopes:
        return None
    slopes.sort()
    k = len(slopes)
    slope = slopes[k // 2] if k % 2 else (slopes[k // 2 - 1] + slopes[k // 2]) / 2.0
    # Kendall's tau from the sorted slopes: a pair is concordant when its slope is positive.
    rising = k - bisect_right(slopes, 0.0)
    falling = bisect_left(slopes, 0.0)
    tau = (rising - falling) / k
    end = times[hi - 1]
    level = _median([v + slope * (end - t) for t, v in points])
    return Trend(
        start_seconds=times[lo],
        end_seconds=end,
        points=hi - lo,
        slope_bytes_per_second=slope,
        level_bytes=level,
        tau=tau,
        quarters_rising=_quarters_rising(times, values, lo, hi),
    )


def _quarters_rising(times: Sequence[float], values: Sequence[float], lo: int, hi: int) -> bool:
    t0 = times[lo]
    span = times[hi - 1] - t0
    if span <= 0:
        return False
    minima: list[float] = []
    a = lo
    for k in range(1, 5):
        b = hi if k == 4 else bisect_left(times, t0 + span * k / 4, a, hi)
        if b <= a:
            return False
        minima.append(min(values[a:b]))
        a = b
    total = minima[-1] - minima[0]
    if total <= 0:
        return False
    floor = QUARTER_STEP_SHARE * total / 3.0
    return all(later - earlier >= floor for earlier, later in pairwise(minima))


def excursion_bytes(trend: Trend, times: Sequence[float], values: Sequence[float], lo: int, hi: int) -> float:
    """How far the series has risen above its envelope line: the height of its saw-tooth peaks
    and bursts. The second-highest rise, so one stray sample does not set it."""
    base = trend.level_bytes - trend.slope_bytes_per_second * trend.end_seconds
    slope = trend.slope_bytes_per_second
    residuals = [v - base - slope * t for t, v in zip(times[lo:hi], values[lo:hi], strict=True)]
    if len(residuals) < 2:
        return 0.0
    return max(0.0, heapq.nlargest(EXCURSION_RANK, residuals)[-1])
