"""Classification: one verdict per container, with the evidence an SRE reads in an Event."""

from __future__ import annotations

import pytest
from tests.engine.series import MIB, bursts, flat, linear, saw, series, warmup_then_flat, with_spikes

from memoryguard.engine import Policy, Verdict, assess

POLICY = Policy.default()

VERDICT_CASES = [
    (
        "too few samples",
        series(linear(40, 2.0), seconds=POLICY.min_samples - 1),
        Verdict.INSUFFICIENT_DATA,
        ["needed before forecasting"],
    ),
    (
        "idle container",
        series(flat(30), seconds=300, noise_mib=0.5),
        Verdict.HEALTHY,
        ["no sustained growth"],
    ),
    (
        "gc saw-tooth",
        series(saw(80, 90, period=45), seconds=400),
        Verdict.BOUNDED,
        ["bounded"],
    ),
    (
        "warm-up then plateau",
        series(warmup_then_flat(150, 4.0), seconds=400, noise_mib=0.3),
        Verdict.BOUNDED,
        ["bounded"],
    ),
    (
        "request bursts",
        series(bursts(120, 90, every=50, length=6), seconds=500, max_mib=512, noise_mib=0.5),
        Verdict.BOUNDED,
        ["bounded"],
    ),
    (
        "noisy plateau with single spikes",
        series(with_spikes(flat(160), every=41, spike_mib=40), seconds=500, noise_mib=1.0),
        Verdict.BOUNDED,
        ["bounded"],
    ),
    (
        "page cache fills the limit, anon flat (seed 004)",
        series(flat(20), seconds=120, file_mib=230, max_mib=256, psi_some_avg10=12.0),
        Verdict.PAGE_CACHE_PRESSURE,
        ["page cache fills the limit", "can reclaim", "PSI some 12.0%"],
    ),
    (
        "anon leak (seed 000 TEST 4)",
        series(linear(40, 2.5), seconds=60, max_mib=256),
        Verdict.ANON_GROWTH,
        ["MiB/min", "reaches memory.max 256 MiB in", "confidence"],
    ),
    (
        "slow leak, limit beyond the horizon but growth plain",
        series(linear(100, 0.05), seconds=600, max_mib=1024, noise_mib=0.2),
        Verdict.ANON_GROWTH,
        ["MiB/min over the last 10 min"],
    ),
    (
        "swap full and swap allocations failing (seed 000 TEST 3)",
        series(
            linear(300, 0.5),
            seconds=120,
            max_mib=384,
            swap_current_bytes=128 * MIB,
            swap_max_bytes=128 * MIB,
            swap_fail_events=lambda i: max(0, i - 90) * 3,
        ),
        Verdict.SWAP_EXHAUSTED,
        ["swap is exhausted", "128 MiB of 128 MiB", "swap allocations failed", "with swap full", "OOM kill"],
    ),
    (
        "leak swapped out at memory.high, swap runs out within the horizon (seed 000 TEST 3, no fail yet)",
        series(
            lambda i: min(150 + 2.0 * i, 250) * MIB,
            seconds=90,
            max_mib=256,
            file_mib=2,
            high_bytes=128 * MIB + 122 * MIB,
            swap_max_bytes=128 * MIB,
            swap_current_bytes=lambda i: int(max(0.0, 150 + 2.0 * i - 250) * MIB),
        ),
        Verdict.SWAP_EXHAUSTED,
        [
            "swap is filling up: 78.0 MiB of 128 MiB in use",
            "reaches memory.high 250 MiB + swap 128 MiB in 2",  # (250 + 128 − 2 − 329) / 2 ≈ 23 s
            "once swap is full, the kernel can only throttle it at memory.high: the process stalls",
        ],
    ),
    (
        "swap nearly full while resident memory sits at memory.high",
        series(
            flat(235),
            seconds=120,
            max_mib=512,
            high_bytes=256 * MIB,
            swap_max_bytes=64 * MIB,
            swap_current_bytes=62 * MIB,
        ),
        Verdict.SWAP_EXHAUSTED,
        ["swap is exhausted: 62.0 MiB of 64.0 MiB in use", "not growing", "with swap full"],
    ),
    (
        "cold pages parked in swap, resident memory far below its limits",
        series(
            flat(100),
            seconds=120,
            max_mib=512,
            high_bytes=256 * MIB,
            swap_max_bytes=64 * MIB,
            swap_current_bytes=63 * MIB,
        ),
        Verdict.HEALTHY,
        ["no sustained growth", "memory.high 256 MiB + swap 64.0 MiB"],
    ),
    (
        "leak below memory.high with swap room: anon growth toward memory.high + swap",
        series(
            linear(40, 2.0),
            seconds=60,
            max_mib=512,
            high_bytes=256 * MIB,
            swap_max_bytes=64 * MIB,
            swap_current_bytes=0,
        ),
        Verdict.ANON_GROWTH,
        ["reaches memory.high 256 MiB + swap 64.0 MiB in"],
    ),
    (
        "anon at memory.high, high events climbing, memory stalls (seed 000 TEST 2)",
        series(
            linear(445, 0.05),
            seconds=120,
            max_mib=512,
            high_bytes=448 * MIB,
            high_events=lambda i: 200 * i,
            psi_some_avg10=35.0,
        ),
        Verdict.THROTTLED_HIGH,
        ["throttled at memory.high", "high events/s", "PSI some 35.0%"],
    ),
]


@pytest.mark.parametrize(
    ("samples", "verdict", "phrases"),
    [c[1:] for c in VERDICT_CASES],
    ids=[c[0] for c in VERDICT_CASES],
)
def test_verdict_and_evidence(samples, verdict, phrases):
    assessment = assess(samples, POLICY, now_seconds=samples[-1].t_seconds)
    assert assessment.verdict is verdict, assessment.evidence
    for phrase in phrases:
        assert phrase in assessment.evidence


def test_high_events_without_a_memory_stall_are_not_throttling():
    samples = series(
        linear(445, 0.0),
        seconds=120,
        max_mib=512,
        high_bytes=448 * MIB,
        high_events=lambda i: 200 * i,
        psi_some_avg10=1.0,
    )
    assert assess(samples, POLICY, now_seconds=samples[-1].t_seconds).verdict is not Verdict.THROTTLED_HIGH


def test_page_cache_at_memory_high_is_cache_pressure_not_throttling():
    # A cache-heavy pod under MemoryQoS: high events climb because the kernel reclaims cache at
    # memory.high, but what it holds on to (anon) is far below it.
    samples = series(
        flat(80),
        seconds=120,
        max_mib=512,
        file_mib=170,
        high_bytes=256 * MIB,
        high_events=lambda i: 30 * i,
        psi_some_avg10=12.0,
    )
    assert assess(samples, POLICY, now_seconds=samples[-1].t_seconds).verdict is Verdict.PAGE_CACHE_PRESSURE


def test_assessment_numbers_are_json_safe_and_carry_the_forecast():
    import json

    samples = series(linear(40, 2.5), seconds=60, max_mib=256)
    numbers = assess(samples, POLICY, now_seconds=samples[-1].t_seconds).numbers
    decoded = json.loads(json.dumps(numbers))
    assert decoded["limit_source"] == "memory.max"
    assert decoded["eta_seconds"] > 0
    assert decoded["growth_bytes_per_second"] == pytest.approx(2.5 * MIB, rel=0.03)


def test_no_samples_is_insufficient_data():
    assessment = assess([], POLICY, now_seconds=0.0)
    assert assessment.verdict is Verdict.INSUFFICIENT_DATA
    assert assessment.forecast is None


def test_at_risk_follows_the_horizon_and_the_warn_threshold():
    far = series(linear(40, 0.01), seconds=300, max_mib=4096)
    near = series(linear(40, 2.5), seconds=60, max_mib=256)
    assert not assess(far, POLICY, now_seconds=far[-1].t_seconds).at_risk
    assert assess(near, POLICY, now_seconds=near[-1].t_seconds).at_risk
