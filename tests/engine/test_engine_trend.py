"""The robust trend: growth of the lower envelope, and whether it is sustained."""

from __future__ import annotations

import random

import pytest

from memoryguard.engine.trend import excursion_bytes, fit_trend

MIB = 1024 * 1024


def _curve(fn, seconds=300, noise_mib=0.0, seed=3):
    rng = random.Random(seed)
    times = [float(i) for i in range(seconds)]
    values = [fn(i) * MIB + (rng.gauss(0, noise_mib * MIB) if noise_mib else 0.0) for i in range(seconds)]
    return times, values


CASES = [
    # id, curve, noise MiB, sustained, slope MiB/s (None: do not check), tolerance MiB/s
    ("steady leak", lambda i: 50 + 2.0 * i, 0.0, True, 2.0, 0.02),
    ("leak under noise", lambda i: 50 + 0.5 * i, 3.0, True, 0.5, 0.1),
    ("flat with noise", lambda i: 100, 2.0, False, None, 0),
    ("falling", lambda i: 300 - 0.5 * i, 0.5, False, -0.5, 0.1),
    ("gc saw-tooth, no trend", lambda i: 100 + 40 * (i % 30) / 30, 0.3, False, None, 0),
    ("gc saw-tooth on a leak", lambda i: 100 + 0.5 * i + 40 * (i % 30) / 30, 0.3, True, 0.5, 0.15),
    ("one step up (a burst that has not ended)", lambda i: 100 + (80 if i > 240 else 0), 0.5, False, None, 0),
    ("warm-up then plateau", lambda i: min(200, 20 + 3 * i), 0.5, False, None, 0),
    (
        "two cycles of a saw-tooth: too few to tell from growth",
        lambda i: 100 + 200 * (i % 160) / 160,
        0.3,
        False,
        None,
        0,
    ),
    (
        "slow leak under a saw-tooth taller than the leak",
        lambda i: 100 + 0.1 * i + 60 * (i % 25) / 25,
        0.3,
        True,
        0.1,
        0.05,
    ),
    (
        "leak with single-sample spikes",
        lambda i: 50 + 1.0 * i + (60 if i % 37 == 0 else 0),
        0.2,
        True,
        1.0,
        0.05,
    ),
]


@pytest.mark.parametrize(
    ("curve", "noise", "sustained", "slope", "tolerance"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_trend_separates_sustained_growth_from_saw_tooth_steps_and_noise(
    curve, noise, sustained, slope, tolerance
):
    times, values = _curve(curve, noise_mib=noise)
    trend = fit_trend(times, values)
    assert trend is not None
    assert trend.sustained is sustained
    if slope is not None:
        assert trend.slope_bytes_per_second / MIB == pytest.approx(slope, abs=tolerance)


def test_trend_level_is_the_envelope_now_not_the_saw_tooth_peak():
    times, values = _curve(lambda i: 100 + 0.5 * i + 40 * (i % 30) / 30, seconds=300)
    trend = fit_trend(times, values)
    assert trend is not None
    floor_now = (100 + 0.5 * 299) * MIB
    assert trend.level_bytes == pytest.approx(floor_now, abs=6 * MIB)
    # The saw-tooth rides ~40 MiB above that floor: the excursion says how high peaks reach.
    assert excursion_bytes(trend, times, values, 0, len(values)) / MIB == pytest.approx(40, abs=6)


def test_excursion_ignores_one_stray_sample():
    times, values = _curve(lambda i: 50 + 1.0 * i, seconds=200)
    values[150] += 100 * MIB
    trend = fit_trend(times, values)
    assert trend is not None
    assert excursion_bytes(trend, times, values, 0, len(values)) < 2 * MIB


def test_trend_needs_four_points():
    assert fit_trend([0.0, 1.0, 2.0], [1.0, 2.0, 3.0]) is None


def test_trend_with_duplicate_times_does_not_divide_by_zero():
    times = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    values = [float(v) for v in (1, 1, 2, 2, 3, 3, 4, 4, 5, 5)]
    trend = fit_trend(times, values)
    assert trend is not None and trend.slope_bytes_per_second > 0
