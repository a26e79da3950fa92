"""Benchmark: one ``assess`` + ``plan`` for one container over a 30-minute window of 1 s samples.

The operator evaluates thousands of containers per cycle, so one decision must cost well under
a millisecond. Measured in CPU time (robust to other load on the machine), best and median of
several rounds, next to a floor measured in the same run: one bare Python pass that reads a
field of each of the 1800 samples — the least any decision that looks at every sample costs —
and a yardstick of the machine's speed at that moment (a 1000-element list comprehension, about
30 µs on an idle core here): on a shared machine, read the figures against it.

    .venv/bin/python scripts/bench_engine.py [--samples 1800] [--rounds 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from memoryguard.engine import Action, LimiterState, Policy, Sample, Target, assess, plan

MIB = 1024 * 1024


def container(count: int, leak_bytes_per_second: int, seed: int = 7) -> list[Sample]:
    """A GC'd service: saw-tooth of ~40 MiB on top of an optional leak, page cache, noise."""
    rng = random.Random(seed)
    samples = []
    for i in range(count):
        anon = 300 * MIB + i * leak_bytes_per_second + (i % 45) * 900_000 + rng.randint(0, 3 * MIB)
        file = 200 * MIB + rng.randint(0, 8 * MIB)
        anon -= anon % 4096
        file -= file % 4096
        samples.append(
            Sample(
                t_seconds=1_763_800_000.0 + i,
                anon_bytes=anon,
                file_bytes=file,
                max_bytes=1024 * MIB,
                inactive_file_bytes=file // 2,
                active_file_bytes=file // 2,
                shmem_bytes=0,
                kernel_bytes=6 * MIB,
                psi_some_avg10=0.0,
            )
        )
    return samples


def cpu_seconds_per_call(fn, iterations: int) -> float:
    start = time.process_time()
    for _ in range(iterations):
        fn()
    return (time.process_time() - start) / iterations


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1800)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    policy = Policy(window_seconds=float(args.samples))
    target = Target(kind="workload", name="deployment/bench", pod="bench-0", container="app")
    limiter = LimiterState()
    results = []
    # A leak under a saw-tooth takes the longest path (every time scale sustained, peaks
    # measured); a steady service the common one.
    for shape, leak in (("leak under a GC saw-tooth", 200_000), ("steady GC saw-tooth", 0)):
        samples = container(args.samples, leak)
        now = samples[-1].t_seconds

        def decide(samples: list[Sample] = samples, now: float = now) -> Action:
            assessment = assess(samples, policy, now_seconds=now)
            return plan(assessment, policy, target=target, limiter=limiter, now_seconds=now).action

        def floor(samples: list[Sample] = samples) -> int:
            return max([s.anon_bytes for s in samples])

        def yardstick() -> list[int]:
            return [x * 2 for x in range(1000)]

        decide()  # warm up (and fail loudly before timing if something is off)
        decision_times = []
        floor_times = []
        yardstick_times = []
        for _ in range(args.rounds):  # interleaved, so a burst of load hits all three alike
            decision_times.append(cpu_seconds_per_call(decide, args.iterations))
            floor_times.append(cpu_seconds_per_call(floor, args.iterations))
            yardstick_times.append(cpu_seconds_per_call(yardstick, args.iterations))
        result = {
            "shape": shape,
            "samples": args.samples,
            "verdict": assess(samples, policy, now_seconds=now).verdict.value,
            "decision_us_best": round(min(decision_times) * 1e6, 1),
            "decision_us_median": round(statistics.median(decision_times) * 1e6, 1),
            "floor_us_best": round(min(floor_times) * 1e6, 1),
            "ratio_to_floor": round(min(decision_times) / min(floor_times), 2),
            "decisions_per_cpu_second": int(1 / min(decision_times)),
            "yardstick_us_best": round(min(yardstick_times) * 1e6, 1),
        }
        results.append(result)
        if not args.json:
            print(
                f"engine: {shape} ({result['verdict']}), assess+plan over {args.samples} samples: "
                f"best {result['decision_us_best']} µs, median {result['decision_us_median']} µs "
                f"CPU per decision ({result['decisions_per_cpu_second']} per CPU second); floor (one pass "
                f"reading each sample) {result['floor_us_best']} µs, ratio {result['ratio_to_floor']}x; "
                f"yardstick [x*2 for x in range(1000)] {result['yardstick_us_best']} µs"
            )
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
