"""Sample series for engine tests: a few named shapes, page-granular, seeded noise."""

from __future__ import annotations

import random
from collections.abc import Callable

from memoryguard.engine import Sample

MIB = 1024 * 1024
PAGE = 4096


def pages(value: float) -> int:
    return max(0, int(value) // PAGE * PAGE)


def series(
    anon_at: Callable[[int], float],
    *,
    seconds: int,
    max_mib: float | None = 256,
    file_mib: float = 20,
    kernel_mib: float = 1,
    noise_mib: float = 0.0,
    seed: int = 1,
    t0: float = 1_763_800_000.0,
    **fields: object,
) -> list[Sample]:
    """One sample a second; ``anon_at(i)`` in bytes, other fields constant unless given as
    callables of the index (``high_events=lambda i: 50 * i``)."""
    rng = random.Random(seed)
    out = []
    for i in range(seconds):
        extra = {k: (v(i) if callable(v) else v) for k, v in fields.items()}
        anon = anon_at(i) + (rng.gauss(0, noise_mib * MIB) if noise_mib else 0.0)
        file = pages(file_mib * MIB)
        kernel = pages(kernel_mib * MIB)
        out.append(
            Sample(
                t_seconds=t0 + i,
                anon_bytes=pages(anon),
                file_bytes=file,
                max_bytes=None if max_mib is None else pages(max_mib * MIB),
                inactive_file_bytes=extra.pop("inactive_file_bytes", file // 2),  # type: ignore[arg-type]
                active_file_bytes=extra.pop("active_file_bytes", file - file // 2),  # type: ignore[arg-type]
                shmem_bytes=extra.pop("shmem_bytes", 0),  # type: ignore[arg-type]
                kernel_bytes=kernel,
                psi_some_avg10=extra.pop("psi_some_avg10", 0.0),  # type: ignore[arg-type]
                **extra,  # type: ignore[arg-type]
            )
        )
    return out


def linear(start_mib: float, mib_per_second: float) -> Callable[[int], float]:
    return lambda i: (start_mib + mib_per_second * i) * MIB


def flat(level_mib: float) -> Callable[[int], float]:
    return lambda i: level_mib * MIB


def saw(
    floor_mib: float, height_mib: float, period: int, trend_mib_per_second: float = 0.0
) -> Callable[[int], float]:
    return lambda i: (floor_mib + trend_mib_per_second * i + height_mib * (i % period) / period) * MIB


def warmup_then_flat(
    level_mib: float, mib_per_second: float, start_mib: float = 10
) -> Callable[[int], float]:
    return lambda i: min(level_mib, start_mib + mib_per_second * i) * MIB


def idle_then_leak(level_mib: float, idle_seconds: int, mib_per_second: float) -> Callable[[int], float]:
    return lambda i: (level_mib + max(0, i - idle_seconds) * mib_per_second) * MIB


def with_spikes(base: Callable[[int], float], every: int, spike_mib: float) -> Callable[[int], float]:
    return lambda i: base(i) + (spike_mib * MIB if i % every == every - 1 else 0.0)


def bursts(base_mib: float, burst_mib: float, every: int, length: int) -> Callable[[int], float]:
    return lambda i: (base_mib + (burst_mib if i % every >= every - length else 0.0)) * MIB
