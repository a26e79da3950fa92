"""Forecast: time until pinned memory reaches the nearest line where the workload fails."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
from tests.engine.series import MIB, flat, idle_then_leak, linear, saw, series, warmup_then_flat

from memoryguard.engine import Action, Policy, assess
from memoryguard.engine.forecast import FILE_FLOOR_BYTES, failure_lines
from memoryguard.engine.policy import RestartPolicy
from memoryguard.engine.replay import replay

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


@pytest.mark.parametrize("idle_seconds", [6, 10, 15])
def test_a_leak_that_starts_after_a_short_idle_stretch_is_restarted_on_time(idle_seconds):
    # Measured in the operator latency bench: a few seconds flat, then 6 MiB/s. The whole
    # window's fit is not sustained (its first part is flat) but its slope is the ramp's own;
    # taking that slope off as "drift" made the short scale's ramp look like old territory,
    # and the restart came with 0 s left, or never (idle 15 s).
    policy = replace(Policy(window_seconds=120, min_samples=10), restart=RestartPolicy(rollout_seconds=10))
    samples = series(
        idle_then_leak(60, idle_seconds, 6.0), seconds=idle_seconds + 40, max_mib=256, noise_mib=0.5
    )
    line = 256 * MIB - FILE_FLOOR_BYTES
    restarts = [t.sample for t in replay(samples, policy) if t.decision.action is Action.RESTART]
    assert restarts, "no restart before the limit"
    pinned = restarts[0].anon_bytes + (restarts[0].kernel_bytes or 0)
    true_eta_seconds = (line - pinned) / (6.0 * MIB)
    # Due when the limit is 15 s away (rollout 10 s + 50 %); one sample late at most.
    assert 15 - 6 <= true_eta_seconds <= 15 + 6


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


@pytest.mark.parametrize(
    ("anon_mib", "above"), [(100, False), (300, True)], ids=["below GOMEMLIMIT", "above GOMEMLIMIT"]
)
def test_gomemlimit_is_reported_but_never_a_failure_line(anon_mib, above):
    samples = series(linear(anon_mib, 1.0), seconds=60, max_mib=1024)
    with_soft = _assess(samples, runtime_soft_limit_bytes=200 * MIB)
    without = _assess(samples)
    assert with_soft.forecast == without.forecast, "the soft limit does not move the forecast"
    assert with_soft.forecast.limit_source == "memory.max"
    assert with_soft.numbers["runtime_soft_limit_bytes"] == 200 * MIB
    (note,) = with_soft.notes
    assert note.startswith("GOMEMLIMIT 200 MiB is a soft limit") and "not a failure line" in note
    assert ("running continuously" in note) is above


@pytest.mark.parametrize(
    ("file_at", "sustained"),
    [(lambda i: 20 + 0.5 * i, True), (lambda i: 20 + (10 if i % 20 < 10 else 0), False)],
    ids=["active page cache growing", "cache coming and going"],
)
def test_working_set_growth_is_measured_beside_the_pinned_trend(file_at, sustained):
    samples = [
        dataclasses.replace(s, file_bytes=int(file_at(i) * MIB), inactive_file_bytes=0)
        for i, s in enumerate(series(flat(60), seconds=120, max_mib=512))
    ]
    assessment = _assess(samples)
    fc = assessment.forecast
    assert fc is not None and not fc.sustained, "anon is flat: no pinned growth"
    assert fc.working_set_sustained is sustained
    assert assessment.numbers["working_set_growth_sustained"] is sustained
    if sustained:
        assert fc.working_set_growth_bytes_per_second == pytest.approx(0.5 * MIB, rel=0.05)


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


def _at(high_mib=256, max_mib=512, swap_max_mib=None, swap_mib=0, anon_mib=200, file_mib=20):
    """One reading with the given limits and swap (swap_max_mib None: swap.max is "max")."""
    return dataclasses.replace(
        series(flat(anon_mib), seconds=1, max_mib=max_mib, file_mib=file_mib)[-1],
        high_bytes=None if high_mib is None else high_mib * MIB,
        swap_max_bytes=None if swap_max_mib is None else swap_max_mib * MIB,
        swap_current_bytes=swap_mib * MIB,
    )


SWAP_LINE_CASES = [
    # id, latest sample, swap-outs failing lately, nearest line: source, MiB before the file floor, label
    (
        "no swap (swap.max 0): the process stalls at memory.high",
        _at(swap_max_mib=0),
        False,
        "memory.high",
        256,
        "memory.high 256 MiB",
    ),
    (
        "swap headroom: memory.high alone is not a line, memory.high + swap is",
        _at(swap_max_mib=64, swap_mib=0),
        False,
        "memory.high",
        256 + 64,
        "memory.high 256 MiB + swap 64.0 MiB",
    ),
    (
        "swap half full: the line stays put, pinned memory already counts what is swapped out",
        _at(swap_max_mib=64, swap_mib=32),
        False,
        "memory.high",
        256 + 64,
        "memory.high 256 MiB + swap 64.0 MiB",
    ),
    (
        "swap full (swap-outs failing before swap.max): memory.high + what swap holds now",
        _at(swap_max_mib=64, swap_mib=40),
        True,
        "memory.high",
        256 + 40,
        "memory.high 256 MiB + swap 40.0 MiB (full)",
    ),
    (
        "swap.max unlimited and swap in use: headroom unknown, memory.high is not a line",
        _at(swap_max_mib=None, swap_mib=32),
        False,
        "memory.max",
        512 + 32,
        "memory.max 512 MiB + swap 32.0 MiB",
    ),
    (
        "swap.max unlimited, swap-outs failing: swap is full, memory.high is the line",
        _at(swap_max_mib=None, swap_mib=32),
        True,
        "memory.high",
        256 + 32,
        "memory.high 256 MiB + swap 32.0 MiB (full)",
    ),
    (
        "memory.high not below memory.max: memory.max + swap only",
        _at(high_mib=512, swap_max_mib=64, swap_mib=64),
        True,
        "memory.max",
        512 + 64,
        "memory.max 512 MiB + swap 64.0 MiB (full)",
    ),
]


@pytest.mark.parametrize(
    ("latest", "failing", "source", "line_mib", "label"),
    [c[1:] for c in SWAP_LINE_CASES],
    ids=[c[0] for c in SWAP_LINE_CASES],
)
def test_swap_moves_the_memory_high_line_only_by_the_room_it_has_left(
    latest, failing, source, line_mib, label
):
    lines, _ = failure_lines(latest, None, swap_failing=failing)
    nearest = lines[0]
    assert nearest.source == source
    assert nearest.limit_bytes == line_mib * MIB - FILE_FLOOR_BYTES
    assert nearest.label == label


def _swapping_leak(*, swap_max_mib, full_from_mib=None, fails=False):
    """2 MiB/s of leak into memory.high 256 MiB (max 512): resident pinned memory stops at
    250 MiB and the rest goes to swap, up to ``full_from_mib`` of it when set."""

    def total(i):
        return (150 + 2.0 * i) * MIB

    def swapped(i):
        out = max(0.0, total(i) - 250 * MIB)
        return int(out if full_from_mib is None else min(out, full_from_mib * MIB))

    return series(
        lambda i: min(total(i), 250 * MIB),
        seconds=90,
        max_mib=512,
        file_mib=2,
        high_bytes=256 * MIB,
        swap_max_bytes=swap_max_mib * MIB,
        swap_current_bytes=swapped,
        swap_fail_events=(lambda i: 10 * i) if fails else 0,
    )


SWAP_ETA_CASES = [
    # id, samples, expected line (MiB, before the file floor), ETA (s) at 2 MiB/s, or None: no ETA
    (
        "leak swapped out at memory.high: ETA is the time to fill the swap left",
        _swapping_leak(swap_max_mib=128),
        256 + 128,
        (256 + 128 - 2 - (150 + 2 * 89) - 1) / 2.0,  # pinned = anon + swap + 1 MiB kernel
    ),
    (
        "leak with swap full and swap-outs failing: memory.high is where it stalls, now",
        _swapping_leak(swap_max_mib=128, full_from_mib=40, fails=True),
        256 + 40,
        0.0,
    ),
]


@pytest.mark.parametrize(
    ("samples", "line_mib", "eta"),
    [c[1:] for c in SWAP_ETA_CASES],
    ids=[c[0] for c in SWAP_ETA_CASES],
)
def test_eta_with_swap_counts_the_swap_left_to_fill(samples, line_mib, eta):
    fc = _assess(samples).forecast
    assert fc is not None
    assert fc.limit_source == "memory.high"
    assert fc.effective_limit_bytes == line_mib * MIB - 2 * MIB  # the file floor: 2 MiB of cache
    assert fc.eta_seconds == pytest.approx(eta, abs=3.0)
