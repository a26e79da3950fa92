"""Forecast: time until pinned memory reaches the nearest line where the workload fails."""

from __future__ import annotations

import dataclasses

import pytest
from tests.engine.series import MIB, flat, idle_then_leak, linear, saw, series, warmup_then_flat

from memoryguard.engine import Policy, assess
from memoryguard.engine.forecast import FILE_FLOOR_BYTES, failure_lines

POLICY = Policy.default()


def _assess(samples, policy=POLICY, **kwargs):
    return assess(samples, policy, now_seconds=samples[-1].t_seconds + 0.5, **kwargs)


def _expected_eta(samples, line_bytes, rate_mib):
    latest = samples[-1]
    pinned = latest.anon_bytes + (latest.kernel_bytes or 0) + (latest.shmem_bytes or 0)
    return (line_bytes - pinned) / (rate_mib * MIB)


ETA_CASES = [
    # id, samples, runtime heap cap, expected limit source, expected line (bytes), rate MiB/s
    (
        "leak toward memory.max",
        series(linear(40, 2.0), seconds=60, max_mib=512),
        None,
        "memory.max",
        512 * MIB - FILE_FLOOR_BYTES,
        2.0,
    ),
    (
        "heap leak toward the runtime cap (Node --max-old-space-size=96)",
        series(linear(10, 2.0), seconds=30, max_mib=256),
        96 * MIB,
        "runtime heap limit",
        96 * MIB + 1 * MIB,  # the cap bounds anon; kernel memory comes on top
        2.0,
    ),
    (
        "leak toward memory.high set below memory.max",
        series(linear(40, 2.0), seconds=60, max_mib=512, high_bytes=384 * MIB),
        None,
        "memory.high",
        384 * MIB - FILE_FLOOR_BYTES,
        2.0,
    ),
    (
        "leak with swap room beyond memory.max",
        series(linear(40, 2.0), seconds=60, max_mib=256, swap_max_bytes=128 * MIB, swap_current_bytes=0),
        None,
        "memory.max",
        (256 + 128) * MIB - FILE_FLOOR_BYTES,
        2.0,
    ),
]


@pytest.mark.parametrize(
    ("samples", "heap", "source", "line", "rate"),
    [c[1:] for c in ETA_CASES],
    ids=[c[0] for c in ETA_CASES],
)
def test_forecast_eta_is_headroom_to_the_nearest_line_over_the_growth_rate(samples, heap, source, line, rate):
    fc = _assess(samples, runtime_heap_limit_bytes=heap).forecast
    assert fc is not None and fc.sustained
    assert fc.limit_source == source
    assert fc.effective_limit_bytes == pytest.approx(line, abs=64 * 1024)
    assert fc.growth_bytes_per_second / MIB == pytest.approx(rate, rel=0.03)
    assert fc.eta_seconds == pytest.approx(_expected_eta(samples, line, rate), rel=0.05, abs=1.0)
    assert fc.confidence > 0.9


NO_ETA_CASES = [
    ("flat", series(flat(120), seconds=300, noise_mib=1.0)),
    ("gc saw-tooth without a trend", series(saw(100, 60, period=40), seconds=300)),
    ("warm-up that has stopped", series(warmup_then_flat(180, 3.0), seconds=300, noise_mib=0.3)),
    ("falling", series(linear(200, -0.2), seconds=300)),
]


@pytest.mark.parametrize("samples", [c[1] for c in NO_ETA_CASES], ids=[c[0] for c in NO_ETA_CASES])
def test_no_eta_without_sustained_growth(samples):
    fc = _assess(samples).forecast
    assert fc is not None
    assert not fc.sustained
    assert fc.eta_seconds is None


def test_saw_tooth_peaks_on_a_leak_bring_the_eta_forward():
    samples = series(saw(100, 60, period=30, trend_mib_per_second=0.4), seconds=300, max_mib=512)
    fc = _assess(samples).forecast
    assert fc is not None and fc.sustained and fc.eta_seconds is not None
    floor_now = (100 + 0.4 * 299) * MIB
    line = 512 * MIB - FILE_FLOOR_BYTES
    # The floor alone would reach the line in (line − floor)/rate; the peaks ~60 MiB above it
    # reach it about 60 MiB / 0.4 MiB/s = 150 s sooner.
    assert fc.eta_seconds == pytest.approx((line - floor_now - 60 * MIB) / (0.4 * MIB), rel=0.15)
    assert fc.excursion_bytes / MIB == pytest.approx(60, abs=8)


def test_a_leak_that_starts_after_a_long_idle_period_is_seen_within_a_minute():
    idle = 500
    samples = series(idle_then_leak(200, idle, 1.5), seconds=idle + 40, max_mib=768, noise_mib=0.5)
    fc = _assess(samples).forecast
    assert fc is not None and fc.sustained
    assert fc.growth_bytes_per_second / MIB == pytest.approx(1.5, rel=0.1)
    assert fc.evidence_seconds <= 60  # measured on a short scale: the 10-minute fit is still flat


def test_a_ramp_through_levels_the_saw_tooth_already_visited_is_not_a_leak():
    # End mid-ramp: the last 20 s look exactly like a fresh leak, but previous cycles went
    # higher and came back down.
    samples = series(saw(100, 200, period=60), seconds=300 - 30, max_mib=512)
    fc = _assess(samples).forecast
    assert fc is not None
    assert fc.eta_seconds is None


def test_kernel_memory_is_estimated_from_memory_current_when_the_trace_lacks_it():
    samples = [
        dataclasses.replace(s, kernel_bytes=None, current_bytes=s.anon_bytes + s.file_bytes + 6 * MIB)
        for s in series(linear(40, 2.0), seconds=60, max_mib=512)
    ]
    fc = _assess(samples).forecast
    assert fc is not None
    assert fc.pinned_bytes == samples[-1].anon_bytes + 6 * MIB


def test_runtime_cap_is_set_aside_when_anon_is_already_far_above_it():
    samples = series(linear(300, 1.0), seconds=60, max_mib=1024)
    assessment = _assess(samples, runtime_heap_limit_bytes=96 * MIB)
    assert assessment.forecast is not None
    assert assessment.forecast.limit_source == "memory.max"
    assert any("set aside" in note for note in assessment.notes)


def test_lines_are_sorted_nearest_first_and_name_their_source():
    latest = series(flat(50), seconds=1, max_mib=512, high_bytes=400 * MIB)[-1]
    lines, note = failure_lines(latest, 200 * MIB, "runtime heap (--max-old-space-size=200)")
    assert [line.source for line in lines] == [
        "runtime heap (--max-old-space-size=200)",
        "memory.high",
        "memory.max",
    ]
    assert note is None
    assert "512 MiB" in lines[-1].label


def test_no_limit_at_all_still_reports_growth_but_no_eta():
    samples = series(linear(40, 2.0), seconds=60, max_mib=None)
    fc = _assess(samples).forecast
    assert fc is not None and fc.sustained
    assert fc.effective_limit_bytes is None
    assert fc.eta_seconds is None


def test_window_is_measured_from_the_newest_sample_not_the_callers_clock():
    samples = series(linear(40, 2.0), seconds=60, max_mib=512)
    skewed = assess(samples, POLICY, now_seconds=samples[-1].t_seconds + 3600)
    assert skewed.forecast is not None and skewed.forecast.sustained
    assert skewed.numbers["age_seconds"] == pytest.approx(3600)


def test_memory_high_is_a_failure_line_only_without_swap():
    # Without swap the excess over memory.high cannot go anywhere and the process stalls; with
    # swap room the kernel swaps it out instead, and only memory.max + swap kills.
    no_swap = series(linear(40, 2.0), seconds=60, max_mib=512, high_bytes=256 * MIB)
    with_swap = series(
        linear(40, 2.0),
        seconds=60,
        max_mib=512,
        high_bytes=256 * MIB,
        swap_max_bytes=64 * MIB,
        swap_current_bytes=0,
    )
    assert _assess(no_swap).forecast.limit_source == "memory.high"
    fc = _assess(with_swap).forecast
    assert fc.limit_source == "memory.max"
    assert fc.effective_limit_bytes == (512 + 64) * MIB - FILE_FLOOR_BYTES
