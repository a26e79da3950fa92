"""When will the memory a container cannot give back reach the line where it fails?

*Pinned* memory is what reclaim cannot free: anon + shmem + kernel, plus anon already pushed
to swap. Page cache is left out on purpose — the kernel drops it before it kills anything.
Pinned memory fails the workload at the nearest of these lines:

- ``memory.max`` (+ the swap it may still use): the OOM killer;
- ``memory.high`` (+ the swap it may still use), when set below max: above it the kernel
  throttles every allocation, and with nothing left to reclaim the process stalls (recorded in
  the rig: memory PSI from 3 % to 70 % within 20 s of crossing it, with or without swap). Swap
  only moves this line while it has room: reclaim at memory.high drops the page cache, then
  pushes anon out to swap — slower (PSI ~15 %) but not stalled — until swap.max is reached or
  swap-outs fail (``memory.swap.events`` fail), and from then on the process stalls at
  memory.high (recorded: swap full at 100 s, PSI 50–58 % from 112 s, anon flat, no OOM kill).
  Pinned memory counts what is already in swap, so the line is memory.high + swap.max and
  the time to it is the time for the leak to fill what resident room and swap are left
  (swap.max "max" with swap in use: the device's free space is not visible, and memory.high
  counts only once swap-outs fail);
- a runtime heap cap (Node ``--max-old-space-size``, JVM ``-Xmx``): the runtime aborts, however
  much cgroup room is left. The cap bounds the heap, which lives in anon, so the line is the cap
  plus the part of pinned memory that is not anon (shmem, kernel). Anon also holds what the
  runtime keeps outside the heap, so the process dies a little above the cap — in the recorded
  ``--max-old-space-size=96`` crash, at 99.5 MiB of anon — and the cap alone is the prudent line.

The trend is fitted at several nested time scales ending now (the whole window, a quarter of
it, a sixteenth, … down to ``min_samples`` samples), because a leak that started two minutes ago hides
in a ten-minute fit. A shorter scale may only raise the alarm when it has reached memory levels
the earlier part of the window never saw: a saw-tooth's next ramp looks like a fresh leak, but
it climbs through territory the previous cycles already visited and let go of.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from memoryguard.engine.model import Sample
from memoryguard.engine.trend import Trend, count_falls, excursion_bytes, fit_trend

MIB = 1024 * 1024
# The newest samples are kept one by one, older ones at doubling strides: the short scales see
# every sample, the long ones a thinned series (a 30-minute window becomes ~240 points).
FULL_RESOLUTION_POINTS = 24
# A heap cap is only the kill line when the heap can be what fills anon; when anon is already
# well above the cap, native memory dominates and the cap says nothing about the next OOM.
# Each time scale is this much shorter than the previous one.
SCALE_RATIO = 4.0
FILE_FLOOR_BYTES = 4 * MIB
NEW_TERRITORY_SHARE = 0.5
SHORTER_SCALE_ETA_SHARE = 0.75
RUNTIME_CAP_SLACK_FRACTION = 0.25
RUNTIME_CAP_SLACK_BYTES = 16 * MIB


def kernel_estimate_bytes(sample: Sample) -> int:
    """Kernel memory when memory.stat's ``kernel`` is not known: what memory.current holds
    beyond anon and file (page tables, slab, sockets)."""
    if sample.kernel_bytes is not None:
        return sample.kernel_bytes
    if sample.current_bytes is None:
        return 0
    return max(0, sample.current_bytes - sample.anon_bytes - sample.file_bytes)


def pinned_bytes(sample: Sample) -> int:
    """anon + shmem + kernel + swapped-out anon: memory reclaim cannot free."""
    return (
        sample.anon_bytes
        + (sample.shmem_bytes or 0)
        + kernel_estimate_bytes(sample)
        + (sample.swap_current_bytes or 0)
    )


def file_floor_bytes(sample: Sample) -> int:
    """Page cache the workload cannot run without (its own code, its hottest data).

    The kernel reclaims cache before it kills, but not the last few MiB without thrashing: in
    the recorded Buffer leak, memory PSI started to climb when file fell below ~4 MiB and the
    OOM kill came at 0.3 MiB. So the lines sit this much below the cgroup limits.
    """
    return min(FILE_FLOOR_BYTES, max(0, sample.file_bytes - (sample.shmem_bytes or 0)))


def swap_room_bytes(sample: Sample, *, swap_failing: bool = False) -> int:
    """How much pinned memory swap can hold beyond the memory limits.

    ``swap_failing``: the kernel reported failed swap-outs lately (``memory.swap.events``
    fail rising). Then what is in swap now is all it will hold, whatever swap.max says: the
    device is full, or swap.max was reached.
    """
    swapped = sample.swap_current_bytes or 0
    if swap_failing:
        return swapped
    if sample.swap_max_bytes is not None:
        return sample.swap_max_bytes
    # swap.max is "max" (or unknown): the device's free space is not visible from the cgroup,
    # so count only what is already swapped out.
    return swapped


def swap_room_known(sample: Sample, *, swap_failing: bool = False) -> bool:
    """Whether the cgroup's swap room is known: swap.max is set, swap-outs fail, or no swap
    is in use at all (nothing to move the memory.high line). With swap.max "max" and swap in
    use, the device's free space is not visible from the cgroup: the excess over memory.high
    may still go to swap, so memory.high is not taken for a stall line."""
    return swap_failing or sample.swap_max_bytes is not None or not sample.swap_current_bytes


def _mib(value: float) -> str:
    return f"{value / MIB:.0f} MiB" if value >= 100 * MIB else f"{value / MIB:.1f} MiB"


@dataclass(frozen=True, slots=True)
class Line:
    """A level of pinned memory where the workload fails, what it is, and how to say it."""

    limit_bytes: int
    source: str  # "memory.max", "memory.high", "runtime heap (--max-old-space-size=96)"
    label: str  # "memory.max 256 MiB + swap 128 MiB"
    swap_bytes: int = 0  # swap counted in the line: it is only reached once that much is swapped out


def failure_lines(
    latest: Sample,
    runtime_heap_limit_bytes: int | None,
    runtime_source: str | None = None,
    *,
    swap_failing: bool = False,
) -> tuple[list[Line], str | None]:
    """The lines in pinned-memory terms, nearest first, and a note when a runtime cap was set aside.

    ``swap_failing``: swap-outs failed lately, so swap holds no more than it does now.
    """
    swap_room = swap_room_bytes(latest, swap_failing=swap_failing)
    room = swap_room - file_floor_bytes(latest)
    swap = f" + swap {_mib(swap_room)}{' (full)' if swap_failing else ''}" if swap_room else ""
    lines: list[Line] = []
    if latest.max_bytes is not None:
        lines.append(
            Line(
                latest.max_bytes + room,
                "memory.max",
                f"memory.max {_mib(latest.max_bytes)}{swap}",
                swap_room,
            )
        )
    below_max = latest.max_bytes is None or (latest.high_bytes or 0) < latest.max_bytes
    if latest.high_bytes is not None and below_max and swap_room_known(latest, swap_failing=swap_failing):
        lines.append(
            Line(
                latest.high_bytes + room,
                "memory.high",
                f"memory.high {_mib(latest.high_bytes)}{swap}",
                swap_room,
            )
        )
    note = None
    if runtime_heap_limit_bytes is not None and runtime_heap_limit_bytes > 0:
        heap_side = latest.anon_bytes + (latest.swap_current_bytes or 0)
        slack = max(RUNTIME_CAP_SLACK_BYTES, int(RUNTIME_CAP_SLACK_FRACTION * runtime_heap_limit_bytes))
        source = runtime_source or "runtime heap limit"
        if heap_side <= runtime_heap_limit_bytes + slack:
            non_heap = pinned_bytes(latest) - heap_side
            lines.append(
                Line(
                    runtime_heap_limit_bytes + non_heap,
                    source,
                    f"{source} {_mib(runtime_heap_limit_bytes)} (+ {_mib(non_heap)} shmem/kernel)",
                )
            )
        else:
            note = (
                f"{source} of {_mib(runtime_heap_limit_bytes)} set aside: anon is already "
                f"{_mib(heap_side)}, so native memory, not the heap, fills it"
            )
    lines.sort(key=lambda line: line.limit_bytes)
    return lines, note


@dataclass(frozen=True, slots=True)
class Forecast:
    """Growth of pinned memory and the time until it reaches the nearest failure line."""

    eta_seconds: float | None  # None: no sustained growth, or no line at all
    growth_bytes_per_second: float
    confidence: float  # 0..1: how consistently the envelope rises (Kendall's tau, clipped)
    effective_limit_bytes: int | None
    limit_source: str
    limit_label: str  # the limit in words, with its size: "memory.max 256 MiB + swap 128 MiB"
    pinned_bytes: int
    sustained: bool
    evidence_seconds: float  # span of the time scale the growth was measured over
    excursion_bytes: float  # saw-tooth / burst height riding on the trend
    samples: int  # samples in the window
    swing_bytes: int = 0  # max − min of pinned memory over the window
    sustained_growth_bytes: float = 0.0  # most growth any sustained time scale showed
    # The working set (usage − inactive_file, what kubelet evicts on and `kubectl top` shows)
    # over the whole window: reported beside the pinned trend, never the kill line itself —
    # it holds active page cache the kernel would still reclaim before an OOM kill.
    working_set_growth_bytes_per_second: float = 0.0
    working_set_sustained: bool = False

    @property
    def headroom_bytes(self) -> int | None:
        if self.effective_limit_bytes is None:
            return None
        return self.effective_limit_bytes - self.pinned_bytes


def _decimated_indices(lo: int, hi: int) -> list[int]:
    indices: list[int] = []
    i = hi - 1
    stride = 1
    while i >= lo:
        indices.extend(range(i, max(lo - 1, i - stride * FULL_RESOLUTION_POINTS), -stride))
        i = indices[-1] - 2 * stride  # the next, older level starts one of its strides further back
        stride *= 2
    if indices[-1] != lo:
        indices.append(lo)  # the window's oldest sample anchors the longest scale
    indices.reverse()
    return indices


def _scale_starts(indices: list[int], hi: int, min_samples: int) -> list[int]:
    """Where each time scale starts in the decimated series: the whole window, then a quarter,
    a sixteenth, … as long as a scale holds min_samples samples, and last the newest
    min_samples samples themselves, so a leak that just began is seen as soon as it can be."""
    counts = [hi - indices[0]]
    while counts[-1] / SCALE_RATIO >= min_samples:
        counts.append(int(counts[-1] / SCALE_RATIO))
    if counts[-1] >= 1.5 * min_samples:
        counts.append(min_samples)
    starts: list[int] = []
    for count in counts:
        start = bisect_left(indices, hi - count)
        if len(indices) - start >= 4 and (not starts or start > starts[-1]):
            starts.append(start)
    return starts


def forecast_pinned(
    samples: Sequence[Sample],
    lo: int,
    hi: int,
    *,
    min_samples: int,
    lines: list[Line],
) -> Forecast:
    """Forecast over ``samples[lo:hi]`` (the policy window, at least ``min_samples`` long)."""
    indices = _decimated_indices(lo, hi)
    picked = [samples[i] for i in indices]
    t0 = picked[0].t_seconds
    times = [s.t_seconds - t0 for s in picked]
    values = [
        s.anon_bytes
        + (s.shmem_bytes or 0)
        + (s.swap_current_bytes or 0)
        + (s.kernel_bytes if s.kernel_bytes is not None else kernel_estimate_bytes(s))
        for s in picked
    ]
    latest_value = values[-1]
    working_set = fit_trend(times, [s.working_set_bytes for s in picked])
    ws_growth = working_set.slope_bytes_per_second if working_set is not None else 0.0
    ws_sustained = working_set is not None and working_set.sustained
    line = lines[0] if lines else None
    detrended: list[float] | None = None  # built on first use
    n = len(values)

    overall: Trend | None = None
    best: tuple[float, Trend, float] | None = None  # (eta, trend, excursion)
    growth_seen = 0.0
    for start in _scale_starts(indices, hi, min_samples):
        trend = fit_trend(times, values, start, n)
        if trend is None:
            continue
        if overall is None:
            overall = trend
        if not trend.sustained:
            continue
        last_quarter = bisect_left(times, times[-1] - trend.span_seconds / 4.0, start, n)
        recent_max = max(values[last_quarter:])
        if start > 0 and last_quarter > 0:
            # A ramp through levels the window already saw and let go of is the next cycle of
            # a saw-tooth, not a leak: a shorter scale counts only when its last quarter climbs
            # clearly above everything before it — after allowing for the whole window's own
            # sustained trend, so each new peak of a saw-tooth riding a slow leak is not taken for a
            # fresh, fast one — by at least half of what this scale's trend adds in a quarter
            # (plateau noise setting a new record by a few pages does not count).
            if detrended is None:
                # The whole window's slope is a drift to allow for when it is sustained, or
                # when the window rose and fell (a saw-tooth). A window that never fell and is
                # not sustained (flat, then a leak that began within it) owes its slope to the
                # very ramp being judged: taking that off would hide the leak.
                drifting = overall is not None and (overall.sustained or count_falls(values, 0, n) > 0)
                long_slope = max(0.0, overall.slope_bytes_per_second) if overall and drifting else 0.0
                detrended = [v - long_slope * t for t, v in zip(times, values, strict=True)]
            margin = NEW_TERRITORY_SHARE * trend.slope_bytes_per_second * trend.span_seconds / 4.0
            if max(detrended[last_quarter:]) <= max(detrended[:last_quarter]) + margin:
                continue
        growth_seen = max(growth_seen, trend.growth_bytes)
        # The fitted line extrapolates: when growth has just paused, it runs ahead of the
        # data. The floor now is never above what the last quarter actually reached.
        floor = min(trend.level_bytes, recent_max)
        # Over the whole window, saw-tooth peaks and bursts ride on the floor: the limit is hit
        # when floor + excursion reaches it. A shorter scale is a fresh ramp, shorter than any
        # cycle it might be part of.
        excursion = excursion_bytes(trend, times, values, start, n) if start == 0 else 0.0
        peak = max(floor + excursion, latest_value)
        if line is None:
            eta = math.inf
        else:
            headroom = line.limit_bytes - peak
            eta = 0.0 if headroom <= 0 else headroom / trend.slope_bytes_per_second
        # Scales come longest first. A shorter one takes over only when it says the limit
        # comes clearly sooner (the leak started recently or sped up), not when its noisier
        # slope happens to be a little steeper.
        if best is None or eta < SHORTER_SCALE_ETA_SHARE * best[0]:
            best = (eta, trend, excursion)

    if best is not None:
        eta, trend, excursion = best
        return Forecast(
            eta_seconds=None if math.isinf(eta) else eta,
            growth_bytes_per_second=trend.slope_bytes_per_second,
            confidence=max(0.0, min(1.0, trend.tau)),
            effective_limit_bytes=line.limit_bytes if line else None,
            limit_source=line.source if line else "no limit",
            limit_label=line.label if line else "no memory limit",
            pinned_bytes=latest_value,
            sustained=True,
            evidence_seconds=trend.span_seconds,
            excursion_bytes=excursion,
            samples=hi - lo,
            swing_bytes=max(values) - min(values),
            sustained_growth_bytes=growth_seen,
            working_set_growth_bytes_per_second=ws_growth,
            working_set_sustained=ws_sustained,
        )
    return Forecast(
        eta_seconds=None,
        growth_bytes_per_second=overall.slope_bytes_per_second if overall else 0.0,
        confidence=max(0.0, min(1.0, overall.tau)) if overall else 0.0,
        effective_limit_bytes=line.limit_bytes if line else None,
        limit_source=line.source if line else "no limit",
        limit_label=line.label if line else "no memory limit",
        pinned_bytes=latest_value,
        sustained=False,
        evidence_seconds=overall.span_seconds if overall else 0.0,
        excursion_bytes=0.0,
        samples=hi - lo,
        swing_bytes=max(values) - min(values),
        working_set_growth_bytes_per_second=ws_growth,
        working_set_sustained=ws_sustained,
    )
