"""Generate the synthetic traces in tests/traces/synth-*.csv (deterministic: seeded).

    .venv/bin/python tests/traces/synth/generate.py [--out tests/traces] [--check] [--seed-offset N]

The real-kernel traces (node-*.csv, page-cache-safe.csv) cover a fast Buffer leak, a V8 heap
crash, a GC saw-tooth, a warm-up plateau and page cache at the limit. These add the shapes the
rig has not recorded yet: slow and fast leaks, a leak under a GC saw-tooth, page cache plus a
slow leak (seed 000 TEST 1), throttling at memory.high (TEST 2), swap on zram filling up
(TEST 3), a leak that starts after a long idle period, request bursts, a noisy plateau with
spikes, hot page cache, page cache held at memory.high, a saw-tooth near the limit, and a
warm-up past memory.high that leaves its cold pages in swap (TEST 3's limits without a leak).

Each trace comes from a small model of a cgroup v2 memory controller, not from a formula the
engine could be tuned to: the workload asks for anon memory and page cache every second; the
model charges it page by page (4 KiB), lets page cache fill free room, reclaims cache (inactive
first) when usage crosses memory.high or memory.max, counts `high` events and refaults
(pgmajfault) while it does, swaps anon out when swap is allowed, counts swap `fail` events when
swap is full, throttles allocations while unreclaimable memory sits above memory.high, keeps a
PSI "some" avg10 as the kernel does (10 s exponential average of stall time), and OOM-kills
when nothing is left to reclaim. The workloads add allocator noise, GC cycles and spikes.
The outcome (failure or not) is whatever the model produces; nothing is pinned by hand except
``failure_at`` for the throttling trace, where the workload is alive but stalled (PSI > 30 %
for 10 s), as DESIGN.md defines it.

--check regenerates into memory and exits 1 if a committed file differs (used by the tests).
"""

from __future__ import annotations

import argparse
import io
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

MIB = 1024 * 1024
PAGE = 4096
PSI_DECAY = math.exp(-1.0 / 10.0)  # avg10 sampled once a second

ALL_COLUMNS = (
    "t",
    "anon",
    "file",
    "inactive_file",
    "active_file",
    "shmem",
    "kernel",
    "current",
    "max",
    "high",
    "swap_current",
    "swap_max",
    "oom_kill",
    "events_high",
    "swap_events_fail",
    "pgmajfault",
    "psi_some_avg10",
    "alive",
)


def pages(value: float) -> int:
    return max(0, int(value) // PAGE * PAGE)


@dataclass
class Cgroup:
    """A cgroup v2 memory controller, one tick per second."""

    rng: random.Random
    max_bytes: int
    high_bytes: int | None = None
    swap_max_bytes: int | None = None  # None: no swap device
    base_kernel_bytes: int = int(1.2 * MIB)
    # Hot file pages the process cannot run without (its own text, hot data): squeezing the
    # cache below this makes every access a refault.
    file_min_bytes: int = 2 * MIB
    # How fast the workload can pull files into the cache (disk or network throughput).
    read_bytes_per_second: int = 32 * MIB
    anon: int = 0  # resident anon
    swap: int = 0
    active_file: int = 0
    inactive_file: int = 0
    shmem: int = 0
    oom_kill: int = 0
    events_high: int = 0
    swap_fail: int = 0
    pgmajfault: int = 0
    psi: float = 0.0
    alive: bool = True
    throttle: float = 0.0  # 0..1: share of the last second the workload spent throttled

    @property
    def file(self) -> int:
        return self.active_file + self.inactive_file

    def kernel(self) -> int:
        # Page tables and slab grow with what the process maps.
        return pages(self.base_kernel_bytes + (self.anon + self.swap) / 350)

    def usage(self) -> int:
        return self.anon + self.file + self.kernel()

    def _reclaim_file(self, want: int, floor: int) -> int:
        """Take up to ``want`` bytes of cache, inactive first, never below ``floor``."""
        room = max(0, self.file - floor)
        take = min(want, room)
        from_inactive = min(take, self.inactive_file)
        self.inactive_file -= from_inactive
        from_active = take - from_inactive
        self.active_file -= from_active
        return take

    def step(self, anon_want: int, file_want: int, active_share: float, hot_file: int) -> None:
        """The workload holds ``anon_want`` bytes of anon and touches ``file_want`` bytes of files."""
        if not self.alive:
            return
        stall = 0.0
        anon_total = pages(anon_want)
        # Anon comes back from swap only when touched; a leak does not touch what it leaked.
        self.anon = max(0, anon_total - self.swap)
        if anon_total < self.swap:
            self.swap = anon_total
        # Page cache grows toward what the workload reads.
        wanted_file = pages(file_want)
        if wanted_file > self.file:
            grow = min(wanted_file - self.file, self.read_bytes_per_second)
            self.active_file += pages(grow * active_share)
            self.inactive_file += grow - pages(grow * active_share)
        elif wanted_file < self.file:
            self._reclaim_file(self.file - wanted_file, 0)
        # Aging: some active pages drift to the inactive list each second.
        drift = pages(self.active_file * 0.02)
        self.active_file -= drift
        self.inactive_file += drift

        refault = 0
        # memory.high: reclaim cache, then swap, then throttle the allocator.
        if self.high_bytes is not None and self.usage() > self.high_bytes:
            excess = self.usage() - self.high_bytes
            self.events_high += 1 + int(excess / MIB) + self.rng.randint(0, 4)
            freed = self._reclaim_file(excess, self.file_min_bytes)
            excess -= freed
            stall += min(0.1, freed / (400 * MIB))
            if excess > 0 and self.swap_max_bytes is not None:
                out = min(excess, self.swap_max_bytes - self.swap, self.anon)
                self.anon -= out
                self.swap += out
                excess -= out
                stall += min(0.3, out / (40 * MIB))
                if excess > 0:
                    self.swap_fail += 1 + int(excess / (256 * 1024))
            if excess > 0:
                # Allocations sleep in the high-limit penalty: the workload slows down.
                self.events_high += 40 + self.rng.randint(0, 40) + int(excess / (64 * 1024))
                stall += min(0.85, 0.35 + excess / (16 * MIB))
        # memory.max: the same, and the OOM killer when nothing is left.
        if self.usage() > self.max_bytes:
            excess = self.usage() - self.max_bytes
            freed = self._reclaim_file(excess, self.file_min_bytes)
            excess -= freed
            stall += min(0.15, freed / (300 * MIB))
            if excess > 0 and self.swap_max_bytes is not None:
                out = min(excess, self.swap_max_bytes - self.swap, self.anon)
                self.anon -= out
                self.swap += out
                excess -= out
                stall += min(0.3, out / (40 * MIB))
                if excess > 0:
                    self.swap_fail += 1 + int(excess / (256 * 1024))
            if excess > 0:
                self.oom_kill += 1
                self.alive = False
                self.anon = 0
                self.swap = 0
                self.shmem = 0
                self._reclaim_file(self.file // 2, 0)
        if self.alive and self.file < hot_file:
            # The workload's hot files were evicted: it reads them again (major faults, stalls).
            missing = hot_file - self.file
            refault = int(missing / PAGE * 0.05) + self.rng.randint(0, 3)
            stall += min(0.5, missing / (64 * MIB))
        self.pgmajfault += refault
        # The kernel keeps the inactive list from running dry under reclaim: it deactivates
        # active pages until the lists are back near the workload's own balance.
        target_inactive = pages(self.file * (1 - active_share))
        if self.inactive_file < target_inactive:
            move = min(self.active_file, pages((target_inactive - self.inactive_file) / 2))
            self.active_file -= move
            self.inactive_file += move
        self.throttle = min(1.0, stall) if self.alive else 0.0
        stall_percent = 100.0 * min(1.0, stall * (0.9 + 0.2 * self.rng.random()))
        self.psi = self.psi * PSI_DECAY + stall_percent * (1 - PSI_DECAY)

    def row(self, t: float) -> dict[str, object]:
        kernel = self.kernel() if self.alive else pages(0.14 * MIB)
        return {
            "t": t,
            "anon": self.anon,
            "file": self.file,
            "inactive_file": self.inactive_file,
            "active_file": self.active_file,
            "shmem": self.shmem,
            "kernel": kernel,
            "current": min(self.max_bytes, self.anon + self.file + kernel),
            "max": self.max_bytes,
            "high": "max" if self.high_bytes is None else self.high_bytes,
            "swap_current": self.swap,
            "swap_max": "max" if self.swap_max_bytes is None else self.swap_max_bytes,
            "oom_kill": self.oom_kill,
            "events_high": self.events_high,
            "swap_events_fail": self.swap_fail,
            "pgmajfault": self.pgmajfault,
            "psi_some_avg10": round(self.psi, 2),
            "alive": 1 if self.alive else 0,
        }


Workload = Callable[[int, float], tuple[float, float, float, float]]
"""(tick, throttle of the last tick) -> (anon bytes, page cache bytes, active share, hot file bytes)."""


@dataclass
class Spec:
    name: str
    seed: int
    seconds: int
    description: str
    cgroup: Callable[[random.Random], Cgroup]
    workload: Callable[[random.Random], Workload]
    columns: tuple[str, ...] = ALL_COLUMNS
    extra: dict[str, Callable[[Cgroup, random.Random], object]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    jitter: float = 0.0  # sampling-time jitter in seconds (the recorder's timer is not exact)
    failure_at_psi: float | None = None  # write failure_at when PSI stays above this for 10 s
    tail_seconds: int = 5  # rows recorded after a kill


def allocator_noise(rng: random.Random, scale: float) -> float:
    return rng.gauss(0.0, scale)


# --- workloads -----------------------------------------------------------------------------


def slow_leak(rng: random.Random) -> Workload:
    state = {"leaked": 0.0}

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        warm = 85 * MIB * (1 - math.exp(-tick / 12))
        state["leaked"] += max(0.0, rng.gauss(0.22 * MIB, 0.15 * MIB)) * (1 - throttle)
        anon = 8 * MIB + warm + state["leaked"] + allocator_noise(rng, 0.6 * MIB)
        return anon, 28 * MIB, 0.3, 6 * MIB

    return step


def fast_leak(rng: random.Random) -> Workload:
    state = {"leaked": 0.0}

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        if tick > 3:
            state["leaked"] += rng.uniform(9, 15) * MIB * (1 - throttle)
        return 95 * MIB + state["leaked"] + allocator_noise(rng, 0.3 * MIB), 35 * MIB, 0.2, 5 * MIB

    return step


def leak_under_gc(rng: random.Random) -> Workload:
    """A garbage-collected runtime: live set leaks, garbage piles up and is collected."""
    state = {"live": 110 * MIB, "garbage": 0.0, "threshold": 60 * MIB}

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        state["live"] += max(0.0, rng.gauss(0.55 * MIB, 0.3 * MIB)) * (1 - throttle)
        state["garbage"] += rng.uniform(4, 7) * MIB * (1 - throttle)
        if state["garbage"] >= state["threshold"]:
            state["garbage"] = rng.uniform(0, 3) * MIB  # the collector returns pages to the OS
            state["threshold"] = rng.uniform(45, 95) * MIB
        anon = state["live"] + state["garbage"] + allocator_noise(rng, 0.5 * MIB)
        return anon, 22 * MIB, 0.4, 5 * MIB

    return step


def cache_plus_leak(rng: random.Random) -> Workload:
    """Seed 000 TEST 1: a service re-reading 250 MiB of files while its anon memory leaks."""
    state = {"leaked": 0.0}

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        if tick > 30:
            state["leaked"] += max(0.0, rng.gauss(0.45 * MIB, 0.25 * MIB)) * (1 - throttle)
        cache = min(250 * MIB, tick * 25 * MIB)
        return 42 * MIB + state["leaked"] + allocator_noise(rng, 0.4 * MIB), cache, 0.95, 40 * MIB

    return step


def high_throttle_leak(rng: random.Random) -> Workload:
    """Seed 000 TEST 2: MemoryQoS sets memory.high below the limit; anon keeps growing into it."""
    state = {"leaked": 0.0}

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        state["leaked"] += max(0.0, rng.gauss(0.9 * MIB, 0.4 * MIB)) * (1 - throttle) ** 3
        cache = min(60 * MIB, tick * 6 * MIB)
        return 70 * MIB + state["leaked"] + allocator_noise(rng, 0.4 * MIB), cache, 0.5, 8 * MIB

    return step


def swap_leak(rng: random.Random) -> Workload:
    """Seed 000 TEST 3: NodeSwap on zram; the leak is pushed to swap until swap is full."""
    state = {"leaked": 0.0}

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        state["leaked"] += max(0.0, rng.gauss(1.1 * MIB, 0.5 * MIB)) * (1 - 0.6 * throttle)
        cache = min(40 * MIB, tick * 4 * MIB)
        return 55 * MIB + state["leaked"] + allocator_noise(rng, 0.3 * MIB), cache, 0.5, 6 * MIB

    return step


def leak_after_idle(rng: random.Random) -> Workload:
    """Idle for 15 minutes, then a request starts a leak (seed 000's curl /start-all)."""
    state = {"leaked": 0.0}

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        if tick >= 900:
            state["leaked"] += max(0.0, rng.gauss(1.8 * MIB, 0.6 * MIB)) * (1 - throttle)
        gc = 6 * MIB * ((tick % 37) / 37)
        return 190 * MIB + gc + state["leaked"] + allocator_noise(rng, 0.8 * MIB), 45 * MIB, 0.3, 10 * MIB

    return step


def node_heap_leak(rng: random.Random) -> Workload:
    """Node with --max-old-space-size=384: JS heap leak with scavenger saw-tooth, crash at the cap."""
    state = {"live": 60 * MIB, "young": 0.0}

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        state["live"] += max(0.0, rng.gauss(0.7 * MIB, 0.3 * MIB))
        state["young"] += rng.uniform(1.5, 3.0) * MIB
        if state["young"] > 16 * MIB:
            state["young"] = rng.uniform(0, 1) * MIB
        return (
            24 * MIB + state["live"] + state["young"] + allocator_noise(rng, 0.3 * MIB),
            48 * MIB,
            0.1,
            4 * MIB,
        )

    return step


def bursts(rng: random.Random) -> Workload:
    """Request bursts: batches allocate 60–220 MiB for a few seconds and free it again."""
    state = {"next": 30, "until": 0, "size": 0.0, "ramp": 1}

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        if tick >= state["next"]:
            state["size"] = rng.uniform(60, 220) * MIB
            state["ramp"] = rng.randint(1, 4)
            state["until"] = tick + state["ramp"] + rng.randint(3, 10)
            state["next"] = state["until"] + rng.randint(15, 80)
            state["start"] = tick
        burst = 0.0
        if tick < state["until"]:
            burst = state["size"] * min(1.0, (tick - state.get("start", tick) + 1) / state["ramp"])
        anon = 230 * MIB + burst + allocator_noise(rng, 1.0 * MIB)
        return anon, 30 * MIB, 0.3, 6 * MIB

    return step


def plateau_noise(rng: random.Random) -> Workload:
    """Warm-up to a plateau (caches filling, pools growing), then noise and single spikes."""

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        anon = 30 * MIB + 385 * MIB * (1 - math.exp(-tick / 55)) + allocator_noise(rng, 1.5 * MIB)
        if rng.random() < 0.008:
            anon += rng.uniform(15, 40) * MIB  # one request's buffers, gone a second later
        return anon, 35 * MIB, 0.6, 8 * MIB

    return step


def hot_cache(rng: random.Random) -> Workload:
    """A database-like service: small anon, a hot data set that fills the limit with cache."""

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        anon = 118 * MIB + allocator_noise(rng, 1.0 * MIB)
        return anon, min(900 * MIB, tick * 30 * MIB), 0.8, 60 * MIB

    return step


def cache_at_high(rng: random.Random) -> Workload:
    """A log shipper streaming files; MemoryQoS holds its page cache at memory.high."""

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        anon = 78 * MIB + allocator_noise(rng, 0.8 * MIB)
        return anon, tick * 12 * MIB, 0.1, 3 * MIB

    return step


def saw_near_limit(rng: random.Random) -> Workload:
    """A collector that lets garbage pile up to ~80 % of the limit before each cycle."""
    state = {"garbage": 0.0, "threshold": 220 * MIB}

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        state["garbage"] += rng.uniform(2.5, 5.0) * MIB
        if state["garbage"] >= state["threshold"]:
            state["garbage"] = rng.uniform(0, 10) * MIB
            state["threshold"] = rng.uniform(170, 250) * MIB
        return 160 * MIB + state["garbage"] + allocator_noise(rng, 0.8 * MIB), 25 * MIB, 0.3, 5 * MIB

    return step


def warm_up_to_plateau(rng: random.Random, plateau_bytes: float) -> Workload:
    """Anon rises from 40 MiB as 1 - e^(-t/60) to ``plateau_bytes``, then only allocator noise."""
    base_bytes = 40 * MIB

    def step(tick: int, throttle: float) -> tuple[float, float, float, float]:
        anon = base_bytes + (plateau_bytes - base_bytes) * (1 - math.exp(-tick / 60))
        return anon + allocator_noise(rng, 1.0 * MIB), 30 * MIB, 0.5, 6 * MIB

    return step


def swap_plateau(rng: random.Random) -> Workload:
    """A cache service warming up past memory.high: its cold pages go to swap, then it levels off."""
    return warm_up_to_plateau(rng, 310 * MIB)


def extra_slab(cg: Cgroup, rng: random.Random) -> object:
    return pages(cg.kernel() * 0.4)


def extra_refaults(cg: Cgroup, rng: random.Random) -> object:
    return cg.pgmajfault * 3 + rng.randint(0, 2)


SPECS: tuple[Spec, ...] = (
    Spec(
        "synth-slow-leak",
        101,
        2400,
        "service leaking ~13 MiB/min after warm-up, memory.max 512 MiB; only the contract's core columns",
        lambda rng: Cgroup(rng, 512 * MIB),
        slow_leak,
        columns=("t", "anon", "file", "max", "current", "oom_kill", "alive"),
        jitter=0.02,
    ),
    Spec(
        "synth-fast-leak",
        102,
        200,
        "leak of ~12 MiB/s from a 95 MiB baseline, memory.max 1 GiB",
        lambda rng: Cgroup(rng, 1024 * MIB),
        fast_leak,
    ),
    Spec(
        "synth-leak-gc-saw",
        103,
        1200,
        "GC runtime: live set leaks ~0.55 MiB/s under a 45–95 MiB garbage saw-tooth, memory.max 512 MiB",
        lambda rng: Cgroup(rng, 512 * MIB),
        leak_under_gc,
        extra={"slab_reclaimable": extra_slab},
    ),
    Spec(
        "synth-cache-plus-leak",
        104,
        1400,
        "seed 000 TEST 1 shape: 250 MiB of hot page cache, anon leaking ~0.45 MiB/s, memory.max 512 MiB",
        lambda rng: Cgroup(rng, 512 * MIB),
        cache_plus_leak,
        extra={"workingset_refault_file": extra_refaults},
    ),
    Spec(
        "synth-high-throttle-leak",
        105,
        700,
        "seed 000 TEST 2 shape: MemoryQoS memory.high 473 MiB under memory.max 512 MiB, anon grows into it "
        "and the allocator is throttled (high events, PSI) instead of killed",
        lambda rng: Cgroup(rng, 512 * MIB, high_bytes=pages(128 * MIB + 0.9 * 384 * MIB)),
        high_throttle_leak,
        failure_at_psi=30.0,
    ),
    Spec(
        "synth-swap-exhaustion",
        106,
        700,
        "seed 000 TEST 3 shape: memory.high 320 MiB, memory.max 384 MiB, 128 MiB of zram swap; the leak "
        "is swapped out until swap is full (swap fail events), then killed",
        lambda rng: Cgroup(rng, 384 * MIB, high_bytes=320 * MIB, swap_max_bytes=128 * MIB),
        swap_leak,
    ),
    Spec(
        "synth-leak-after-idle",
        107,
        1400,
        "steady 200 MiB for 15 min, then a request starts a ~1.8 MiB/s leak, memory.max 768 MiB",
        lambda rng: Cgroup(rng, 768 * MIB),
        leak_after_idle,
        jitter=0.03,
    ),
    Spec(
        "synth-node-heap-leak",
        108,
        800,
        "node --max-old-space-size=384 in a 1 GiB container: heap leak with scavenger saw-tooth; V8 aborts "
        "when the old space reaches its cap",
        lambda rng: Cgroup(rng, 1024 * MIB),
        node_heap_leak,
        metadata={"runtime_heap_limit_bytes": str(384 * MIB)},
    ),
    Spec(
        "synth-bursts-safe",
        109,
        1500,
        "request bursts of 60–220 MiB for a few seconds on a 230 MiB baseline, memory.max 512 MiB",
        lambda rng: Cgroup(rng, 512 * MIB),
        bursts,
    ),
    Spec(
        "synth-plateau-noise-safe",
        110,
        1500,
        "warm-up to a ~415 MiB plateau of 512 MiB, then allocator noise and single-sample spikes",
        lambda rng: Cgroup(rng, 512 * MIB),
        plateau_noise,
        jitter=0.02,
    ),
    Spec(
        "synth-hot-cache-safe",
        111,
        900,
        "118 MiB anon, a hot data set keeps page cache (80 % active) at memory.max 512 MiB",
        lambda rng: Cgroup(rng, 512 * MIB),
        hot_cache,
    ),
    Spec(
        "synth-cache-at-high-safe",
        112,
        900,
        "streaming reads; MemoryQoS memory.high 256 MiB holds page cache there, memory.max 512 MiB",
        lambda rng: Cgroup(rng, 512 * MIB, high_bytes=256 * MIB, read_bytes_per_second=12 * MIB),
        cache_at_high,
    ),
    Spec(
        "synth-swap-plateau-safe",
        114,
        900,
        "seed 000 TEST 3 limits (memory.high 256 MiB, memory.max 384 MiB, 128 MiB of zram swap) without a "
        "leak: warm-up to ~310 MiB of anon, the coldest ~60 MiB swapped out at memory.high, then flat",
        lambda rng: Cgroup(rng, 384 * MIB, high_bytes=256 * MIB, swap_max_bytes=128 * MIB),
        swap_plateau,
    ),
    Spec(
        "synth-saw-near-limit-safe",
        113,
        1500,
        "GC saw-tooth from 160 MiB up to 330–410 MiB and back, memory.max 512 MiB",
        lambda rng: Cgroup(rng, 512 * MIB),
        saw_near_limit,
    ),
)


def _node_heap_crash(spec: Spec, cg: Cgroup, anon_want: float) -> bool:
    # V8 aborts ("JavaScript heap out of memory") when the heap reaches its cap: the heap is
    # anon minus the ~24 MiB the process holds outside it.
    heap_cap = int(spec.metadata["runtime_heap_limit_bytes"])
    return anon_want - 24 * MIB >= heap_cap


def render(spec: Spec) -> str:
    rng = random.Random(spec.seed)
    cg = spec.cgroup(rng)
    workload = spec.workload(rng)
    rows: list[dict[str, object]] = []
    failure_at: float | None = None
    psi_high_since: float | None = None
    dead_since: int | None = None
    for tick in range(spec.seconds):
        t = tick + (rng.uniform(-spec.jitter, spec.jitter) if spec.jitter and tick else 0.0)
        anon_want, file_want, active_share, hot_file = workload(tick, cg.throttle)
        if cg.alive and spec.name == "synth-node-heap-leak" and _node_heap_crash(spec, cg, anon_want):
            cg.alive = False
            cg.anon = 0
        if tick == 0:
            cg.step(0, 0, active_share, 0)
        else:
            cg.step(max(0, int(anon_want)), max(0, int(file_want)), active_share, int(hot_file))
        row = cg.row(round(t, 3))
        for name, fn in spec.extra.items():
            row[name] = fn(cg, rng)
        rows.append(row)
        if spec.failure_at_psi is not None and failure_at is None:
            if cg.psi >= spec.failure_at_psi:
                psi_high_since = t if psi_high_since is None else psi_high_since
                if t - psi_high_since >= 10:
                    failure_at = round(t, 3)
            else:
                psi_high_since = None
        if failure_at is not None and t >= failure_at + 60:
            break
        if not cg.alive:
            dead_since = tick if dead_since is None else dead_since
            if tick - dead_since >= spec.tail_seconds:
                break

    out = io.StringIO()
    out.write(f"# source: synthetic (generate.py seed={spec.seed})\n")
    out.write(f"# workload: {spec.description}\n")
    for key, value in spec.metadata.items():
        out.write(f"# {key}: {value}\n")
    if failure_at is not None:
        out.write(f"# failure_at: {failure_at:g}\n")
    if any(r["oom_kill"] for r in rows):
        outcome = "kernel OOM kill (oom_kill 0 -> 1)"
    elif not rows[-1]["alive"]:
        outcome = "runtime abort (alive 1 -> 0, oom_kill stays 0)"
    elif failure_at is not None:
        outcome = (
            f"stalled at memory.high: memory PSI some above {spec.failure_at_psi:g}% from t={failure_at:g}"
        )
    else:
        outcome = "safe, no kill"
    out.write(f"# outcome: {outcome}\n")
    columns = list(spec.columns) + list(spec.extra)
    out.write(",".join(columns) + "\n")
    for row in rows:
        out.write(",".join(_format(row[c]) for c in columns) + "\n")
    return out.getvalue()


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed files instead of writing"
    )
    parser.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="add this to every seed: other draws of the same shapes (do results hang on one draw?)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stale = []
    for spec in SPECS:
        text = render(replace(spec, seed=spec.seed + args.seed_offset))
        path = out / f"{spec.name}.csv"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale synthetic traces (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
