"""From a container's recent samples to a verdict an SRE can read, with the numbers behind it."""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from memoryguard.engine.forecast import Forecast, failure_lines, forecast_pinned
from memoryguard.engine.model import Sample
from memoryguard.engine.policy import Policy

MIB = 1024 * 1024
# Event rates and PSI are judged over the last minute: long enough to smooth one burst of
# reclaim, short enough that a throttle that ended a while ago no longer counts.
RECENT_SECONDS = 60.0
# memory.high breaches per second that mean continuous throttling rather than an occasional
# reclaim pass (seed 000 TEST 2 climbed by thousands per minute).
THROTTLE_EVENTS_PER_SECOND = 10.0
# Memory PSI "some" avg10, in percent, that users feel as stalls.
STALL_PSI_PERCENT = 10.0
# Pinned memory this close to memory.high cannot be brought under it by reclaiming cache.
THROTTLE_PINNED_FRACTION = 0.9
# Growth worth calling a leak even while the limit is beyond the horizon: this much of the
# limit over the span it was measured on.
LEAK_GROWTH_FRACTION = 0.02
# A series that swings by this much of its limit but does not trend is bounded (saw-tooth,
# warm-up then plateau), not idle.
BOUNDED_SWING_FRACTION = 0.1
# Swap this full has no room left worth forecasting: a few more MiB and swap-outs fail.
SWAP_FULL_FRACTION = 0.95


class Verdict(enum.StrEnum):
    INSUFFICIENT_DATA = "insufficient_data"
    HEALTHY = "healthy"
    BOUNDED = "bounded"
    PAGE_CACHE_PRESSURE = "page_cache_pressure"
    ANON_GROWTH = "anon_growth"
    SWAP_EXHAUSTED = "swap_exhausted"
    THROTTLED_HIGH = "throttled_high"


@dataclass(frozen=True, slots=True)
class Assessment:
    verdict: Verdict
    forecast: Forecast | None  # None until min_samples
    used_fraction: float | None  # pinned / effective limit
    usage_fraction: float | None  # memory.current / min(memory.max, memory.high)
    reclaimable_bytes: int  # file cache minus shmem
    usage_bytes: int
    usage_limit_bytes: int | None  # min(memory.max, memory.high): where the kernel starts reclaiming
    at_risk: bool  # warn-worthy: limit within the horizon, or pinned above the warn threshold
    evidence: str
    numbers: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def growing(self) -> bool:
        return self.forecast is not None and self.forecast.sustained


def _mib(value: float) -> str:
    mib = value / MIB
    if abs(mib) >= 10240:
        return f"{mib / 1024:.1f} GiB"
    if abs(mib) >= 100:
        return f"{mib:.0f} MiB"
    return f"{mib:.1f} MiB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _counter_delta(new: int, old: int) -> int:
    # A counter that went down belongs to a new cgroup (container restarted): count from zero.
    return new - old if new >= old else new


def assess(
    samples: Sequence[Sample],
    policy: Policy,
    *,
    now_seconds: float,
    runtime_heap_limit_bytes: int | None = None,
    runtime_limit_source: str | None = None,
    runtime_soft_limit_bytes: int | None = None,
) -> Assessment:
    """Judge one container from its samples (oldest first; the caller's history, any length).

    ``runtime_soft_limit_bytes``: Go's ``GOMEMLIMIT``. The runtime collects harder near it but
    does not die there, so it is reported (a number and a note), never made a failure line.

    The window is measured back from the newest sample, not from ``now_seconds``: sample times
    are the agent's clock, and skew between machines must not shrink the window. ``now_seconds``
    only serves to report how old the newest sample is.
    """
    if not samples:
        return Assessment(
            verdict=Verdict.INSUFFICIENT_DATA,
            forecast=None,
            used_fraction=None,
            usage_fraction=None,
            reclaimable_bytes=0,
            usage_bytes=0,
            usage_limit_bytes=None,
            at_risk=False,
            evidence=f"no samples yet; {policy.min_samples} needed before forecasting",
            numbers={"samples": 0},
        )
    latest = samples[-1]
    hi = len(samples)
    lo = bisect_left(samples, latest.t_seconds - policy.window_seconds, key=lambda s: s.t_seconds)
    notes: tuple[str, ...] = ()
    if hi - lo < policy.min_samples <= hi:
        # Sampled more coarsely than the window can hold min_samples of (a trace written once a
        # minute, a 10-minute window): the window reaches back to the newest min_samples
        # samples instead of never forecasting at all.
        lo = hi - policy.min_samples
        notes += (
            f"window stretched to {_duration(latest.t_seconds - samples[lo].t_seconds)} to hold "
            f"{policy.min_samples} samples (sampled every "
            f"{(latest.t_seconds - samples[lo].t_seconds) / (policy.min_samples - 1):.0f} s on average)",
        )
    count = hi - lo

    usage = latest.usage_bytes
    limits = [x for x in (latest.max_bytes, latest.high_bytes) if x is not None]
    usage_limit = min(limits) if limits else None
    usage_fraction = usage / usage_limit if usage_limit else None
    reclaimable = max(0, latest.file_bytes - (latest.shmem_bytes or 0))

    recent = samples[
        bisect_left(samples, latest.t_seconds - RECENT_SECONDS, lo, hi, key=lambda s: s.t_seconds)
    ]
    swap_fails = _counter_delta(latest.swap_fail_events, recent.swap_fail_events)
    lines, runtime_note = failure_lines(
        latest, runtime_heap_limit_bytes, runtime_limit_source, swap_failing=swap_fails > 0
    )
    if runtime_note:
        notes += (runtime_note,)
    if runtime_soft_limit_bytes is not None:
        notes += (_soft_limit_note(latest, runtime_soft_limit_bytes),)

    numbers: dict[str, Any] = {
        "samples": count,
        "age_seconds": round(now_seconds - latest.t_seconds, 3),
        "anon_bytes": latest.anon_bytes,
        "file_bytes": latest.file_bytes,
        "reclaimable_bytes": reclaimable,
        "usage_bytes": usage,
        "working_set_bytes": latest.working_set_bytes,
        "max_bytes": latest.max_bytes,
        "high_bytes": latest.high_bytes,
        "swap_current_bytes": latest.swap_current_bytes,
        "swap_max_bytes": latest.swap_max_bytes,
        "psi_some_avg10": latest.psi_some_avg10,
        "usage_fraction": None if usage_fraction is None else round(usage_fraction, 4),
        "runtime_soft_limit_bytes": runtime_soft_limit_bytes,
    }

    if count < policy.min_samples:
        return Assessment(
            verdict=Verdict.INSUFFICIENT_DATA,
            forecast=None,
            used_fraction=None,
            usage_fraction=usage_fraction,
            reclaimable_bytes=reclaimable,
            usage_bytes=usage,
            usage_limit_bytes=usage_limit,
            at_risk=False,
            evidence=f"{count} samples in the window, {policy.min_samples} needed before forecasting",
            numbers=numbers,
            notes=notes,
        )

    fc = forecast_pinned(samples, lo, hi, min_samples=policy.min_samples, lines=lines)
    limit = fc.effective_limit_bytes
    used_fraction = fc.pinned_bytes / limit if limit else None

    recent_seconds = max(latest.t_seconds - recent.t_seconds, 1e-9)
    high_rate = _counter_delta(latest.high_events, recent.high_events) / recent_seconds
    resident_pinned = latest.anon_bytes + (latest.shmem_bytes or 0) + (latest.kernel_bytes or 0)
    psi = latest.psi_some_avg10
    stalled = psi is None or psi >= STALL_PSI_PERCENT
    throttled = (
        latest.high_bytes is not None
        and high_rate >= THROTTLE_EVENTS_PER_SECOND
        and resident_pinned >= THROTTLE_PINNED_FRACTION * latest.high_bytes
        and stalled
    )
    cache_pressure = (
        usage_fraction is not None
        and usage_fraction >= policy.act_fraction
        and reclaimable >= policy.reclaim.min_reclaimable_bytes
    )
    leak = fc.sustained and (
        (fc.eta_seconds is not None and fc.eta_seconds <= policy.horizon_seconds)
        or (limit is not None and fc.sustained_growth_bytes >= LEAK_GROWTH_FRACTION * limit)
        or limit is None
    )
    # Swap is where the excess goes only while resident memory sits at its limit (memory.high
    # or memory.max): below it, nothing is being pushed out.
    at_memory_limit = usage_limit is not None and resident_pinned >= THROTTLE_PINNED_FRACTION * usage_limit
    swap_bytes = latest.swap_current_bytes or 0
    swap_grown = swap_bytes - (recent.swap_current_bytes or 0)
    swap_nearly_full = (
        latest.swap_max_bytes is not None
        and latest.swap_max_bytes > 0
        and swap_bytes >= SWAP_FULL_FRACTION * latest.swap_max_bytes
    )
    line = lines[0] if lines else None
    # The leak is being swapped out and the forecast says swap runs out within the horizon: the
    # failure will come from swap exhaustion, at memory.high (a stall) or memory.max (OOM).
    swap_filling = (
        at_memory_limit
        and swap_grown > 0
        and line is not None
        and line.swap_bytes > 0
        and fc.sustained
        and fc.eta_seconds is not None
        and fc.eta_seconds <= policy.horizon_seconds
    )
    swap_exhausted = swap_fails > 0 or (swap_nearly_full and at_memory_limit) or swap_filling
    bounded = limit is not None and (
        (used_fraction is not None and used_fraction >= policy.warn_fraction)
        or fc.swing_bytes >= BOUNDED_SWING_FRACTION * limit
    )

    numbers.update(
        {
            "pinned_bytes": fc.pinned_bytes,
            "effective_limit_bytes": limit,
            "limit_source": fc.limit_source,
            "growth_bytes_per_second": round(fc.growth_bytes_per_second, 1),
            "eta_seconds": None if fc.eta_seconds is None else round(fc.eta_seconds, 1),
            "confidence": round(fc.confidence, 3),
            "sustained": fc.sustained,
            "working_set_growth_bytes_per_second": round(fc.working_set_growth_bytes_per_second, 1),
            "working_set_growth_sustained": fc.working_set_sustained,
            "evidence_seconds": round(fc.evidence_seconds, 1),
            "excursion_bytes": int(fc.excursion_bytes),
            "used_fraction": None if used_fraction is None else round(used_fraction, 4),
            "high_events_per_second": round(high_rate, 2),
            "swap_fail_events_recent": swap_fails,
            "swap_growth_bytes_recent": swap_grown,
        }
    )

    if swap_exhausted:
        verdict = Verdict.SWAP_EXHAUSTED
    elif throttled:
        verdict = Verdict.THROTTLED_HIGH
    elif leak:
        verdict = Verdict.ANON_GROWTH
    elif cache_pressure:
        verdict = Verdict.PAGE_CACHE_PRESSURE
    elif bounded:
        verdict = Verdict.BOUNDED
    else:
        verdict = Verdict.HEALTHY

    at_risk = (
        verdict in (Verdict.SWAP_EXHAUSTED, Verdict.THROTTLED_HIGH)
        or (fc.eta_seconds is not None and fc.eta_seconds <= policy.horizon_seconds)
        or (used_fraction is not None and used_fraction >= policy.warn_fraction)
    )
    evidence = _evidence(
        verdict,
        latest,
        fc,
        used_fraction=used_fraction,
        usage_limit=usage_limit,
        reclaimable=reclaimable,
        high_rate=high_rate,
        swap_fails=swap_fails,
        swap_grown=swap_grown,
        recent_seconds=recent_seconds,
    )
    return Assessment(
        verdict=verdict,
        forecast=fc,
        used_fraction=used_fraction,
        usage_fraction=usage_fraction,
        reclaimable_bytes=reclaimable,
        usage_bytes=usage,
        usage_limit_bytes=usage_limit,
        at_risk=at_risk,
        evidence=evidence,
        numbers=numbers,
        notes=notes,
    )


def _soft_limit_note(latest: Sample, soft_limit_bytes: int) -> str:
    note = (
        f"GOMEMLIMIT {_mib(soft_limit_bytes)} is a soft limit: the Go runtime collects harder near "
        f"it and does not die there, so it is not a failure line"
    )
    heap_side = latest.anon_bytes + (latest.swap_current_bytes or 0)
    if heap_side > soft_limit_bytes:
        note += f"; anon ({_mib(heap_side)}) is above it: the Go GC is running continuously"
    return note


def _growth_phrase(fc: Forecast) -> str:
    return f"{fc.growth_bytes_per_second * 60 / MIB:+.1f} MiB/min"


def _evidence(
    verdict: Verdict,
    latest: Sample,
    fc: Forecast,
    *,
    used_fraction: float | None,
    usage_limit: int | None,
    reclaimable: int,
    high_rate: float,
    swap_fails: int,
    swap_grown: int,
    recent_seconds: float,
) -> str:
    limit_phrase = fc.limit_label
    pinned = f"pinned memory (anon {_mib(latest.anon_bytes)}"
    other = fc.pinned_bytes - latest.anon_bytes
    pinned += f" + {_mib(other)} shmem/kernel/swap)" if other > 0 else ")"
    pinned += f" {_mib(fc.pinned_bytes)}"
    share = f", {used_fraction:.0%} of {limit_phrase}" if used_fraction is not None else f", {limit_phrase}"
    eta = ""
    if fc.eta_seconds is not None:
        eta = f"; at that rate it reaches {limit_phrase} in {_duration(fc.eta_seconds)}"
    psi = f"; memory PSI some {latest.psi_some_avg10:.1f}%" if latest.psi_some_avg10 is not None else ""

    if verdict is Verdict.ANON_GROWTH:
        return (
            f"{pinned} has grown {_growth_phrase(fc)} over the last {_duration(fc.evidence_seconds)} "
            f"(confidence {fc.confidence:.2f}){share}{eta}."
        )
    if verdict is Verdict.SWAP_EXHAUSTED:
        swap = latest.swap_current_bytes or 0
        swap_max = f" of {_mib(latest.swap_max_bytes)}" if latest.swap_max_bytes is not None else ""
        filling = swap_fails == 0 and swap_grown > 0 and fc.sustained and fc.eta_seconds is not None
        if swap_fails > 0:
            state = (
                f"swap is exhausted: {_mib(swap)}{swap_max} in use and {swap_fails} swap allocations "
                f"failed in the last minute"
            )
        elif filling:
            state = (
                f"swap is filling up: {_mib(swap)}{swap_max} in use, {_mib(swap_grown)} more than "
                f"{_duration(recent_seconds)} ago"
            )
        else:
            state = f"swap is exhausted: {_mib(swap)}{swap_max} in use"
        when = "once swap is full" if filling else "with swap full"
        if fc.limit_source == "memory.high":
            after = f"{when}, the kernel can only throttle it at memory.high: the process stalls"
        elif fc.limit_source == "memory.max":
            after = f"{when}, the next allocation at memory.max is an OOM kill"
        else:
            after = "nothing more can be swapped out"
        growing = f"growing {_growth_phrase(fc)}" if fc.sustained else f"not growing ({_growth_phrase(fc)})"
        return f"{state}; {pinned}{share}, {growing}{eta}; {after}."
    if verdict is Verdict.THROTTLED_HIGH:
        return (
            f"throttled at memory.high ({_mib(latest.high_bytes or 0)}): {high_rate:.0f} high events/s{psi}; "
            f"{pinned} cannot be reclaimed below it, growing {_growth_phrase(fc)}{eta}."
        )
    if verdict is Verdict.PAGE_CACHE_PRESSURE:
        return (
            f"page cache fills the limit: usage {_mib(latest.usage_bytes)} of {_mib(usage_limit or 0)}, "
            f"of which {_mib(reclaimable)} is file cache the kernel can reclaim; {pinned} is not growing "
            f"({_growth_phrase(fc)}){psi}."
        )
    if verdict is Verdict.BOUNDED:
        return (
            f"{pinned}{share} is bounded: no sustained growth over {_duration(fc.evidence_seconds)} "
            f"(it moved within {_mib(fc.swing_bytes)})."
        )
    return f"{pinned}{share}, no sustained growth over {_duration(fc.evidence_seconds)}."
