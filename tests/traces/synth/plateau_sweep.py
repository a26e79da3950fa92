"""How close to its limit may a warm-up level off before MemoryGuard takes it for a leak?

``synth-swap-plateau-safe``'s workload (anon rises as 1 - e^(-t/60) to a plateau, then only
allocator noise) with its plateau moved to a share of memory.max (384 MiB) from --low to --high,
several seeds each, in two settings: seed 000 TEST 3's limits (memory.high 256 MiB, 128 MiB of
zram swap) and plain memory.max without swap. Every trace is safe (nothing is ever killed), so
each restart the default policy decides is a false restart. Writes the traces to --out, scores
them like `memoryguard bench --lead N --policy memoryguard`, and prints one line per plateau:

    python -m tests.traces.synth.plateau_sweep --out /tmp/sweep --lead 10
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from functools import partial
from pathlib import Path

from tests.traces.synth.generate import MIB, SPECS, Cgroup, render, warm_up_to_plateau

from memoryguard.commands.bench import load_policy, load_traces, score_trace

MAX_BYTES = 384 * MIB  # synth-swap-plateau-safe's memory.max


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="directory for the generated traces")
    parser.add_argument("--lead", type=float, default=10.0)
    parser.add_argument("--percents", default="72,76,80,83,85,87,89,91", help="plateaus, %% of memory.max")
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args(argv)
    if not 1 <= args.seeds <= 10:
        parser.error("--seeds must be 1..10 (each plateau's seeds are 10 apart)")
    base = next(s for s in SPECS if s.name == "synth-swap-plateau-safe")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"swap": base.cgroup, "noswap": lambda rng: Cgroup(rng, MAX_BYTES)}
    percents = [int(p) for p in args.percents.split(",")]
    for percent in percents:
        for setting, cgroup in settings.items():
            for n in range(args.seeds):
                spec = replace(
                    base,
                    name=f"plateau-{percent}-{setting}-{n}",
                    seed=base.seed * 1000 + percent * 10 + n,
                    description=f"warm-up to a plateau at {percent}% of memory.max ({setting})",
                    cgroup=cgroup,
                    workload=partial(warm_up_to_plateau, plateau_bytes=percent / 100 * MAX_BYTES),
                )
                (out / f"{spec.name}.csv").write_text(render(spec))
    traces, errors = load_traces([str(out)])
    assert not errors, errors
    policy = load_policy(None, None, args.lead)
    restarted: dict[tuple[int, str], int] = {}
    for trace in traces:
        _, share, setting, _ = trace.name.split("-")
        score = score_trace(trace, "memoryguard", policy, args.lead)
        key = (int(share), setting)
        restarted[key] = restarted.get(key, 0) + (score.outcome == "false_restart")
    print(f"false restarts of {args.seeds} seeds, --lead {args.lead:g}:")
    for percent in percents:
        cells = ", ".join(f"{s} {restarted.get((percent, s), 0)}/{args.seeds}" for s in settings)
        print(f"  plateau {percent}% of memory.max: {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
