"""Feed a trace to the engine row by row, as if live, and print each decision.

One line per tick with the numbers behind it (senpai-style); by default only the ticks where
the verdict or the decision changes, every tick with --verbose:

  t=  75.0s anon  212.0M file  40.2M pinned  213.3M/256.0M  83%  +169.5M/min eta   14s conf 1.00
            anon_growth  -> RESTART  restart deployment/replayed: pinned memory 213 MiB grows ...

The engine judges *pinned* memory — anon + shmem + kernel + swapped-out anon, what reclaim
cannot free — against the nearest line where the workload fails (memory.max, memory.high, or
the runtime heap cap from the trace's runtime_heap_limit_bytes metadata). Its trend is fitted to
the lower envelope of the samples (minima of time buckets, Theil–Sen) at several time scales,
so GC saw-tooth, bursts and single spikes do not read as growth. A restart is decided when
sustained growth reaches the line within restart.rolloutSeconds plus a 50 % margin.

Rows from the trace's failure on (first oom_kill increase, alive 1 -> 0, or failure_at
metadata) are not replayed unless --all-rows; the summary scores the replay as
``memoryguard bench`` does. Without --guard, the default policy is used with
restart.rolloutSeconds set to --lead, as bench does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from memoryguard.commands.bench import load_policy, replayable, score_ticks
from memoryguard.engine import Action
from memoryguard.engine.replay import Tick, replay
from memoryguard.traces import parse_trace

MIB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", help="trace file (CSV, see DESIGN.md 'Trace files')")
    parser.add_argument(
        "--guard", metavar="SPEC.yaml", help="MemoryGuard (or its spec) to take the policy from"
    )
    parser.add_argument(
        "--lead",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="lead a restart needs to count as prevented in the summary (default 20)",
    )
    parser.add_argument(
        "--rollout-seconds",
        type=float,
        metavar="SECONDS",
        help="restart.rolloutSeconds (default: --lead, or the spec's)",
    )
    parser.add_argument(
        "--runtime-heap-limit",
        type=int,
        metavar="BYTES",
        help="heap cap of the runtime (default: the trace's runtime_heap_limit_bytes metadata)",
    )
    parser.add_argument("--all-rows", action="store_true", help="also replay the rows after the failure")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every tick, not only changes")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per printed tick, then a summary"
    )


def _m(value: float | None) -> str:
    return "     -" if value is None else f"{value / MIB:6.1f}M"


def format_tick(tick: Tick) -> str:
    """One line with all the state, senpai-style."""
    s = tick.sample
    a = tick.assessment
    d = tick.decision
    fc = a.forecast if a else None
    if fc is not None:
        limit = fc.effective_limit_bytes
        used = f"{fc.pinned_bytes / limit:4.0%}" if limit else "   -"
        eta = f"{fc.eta_seconds:5.0f}s" if fc.eta_seconds is not None else "     -"
        numbers = (
            f"pinned {_m(fc.pinned_bytes)}/{_m(limit).strip()} {used} "
            f"{fc.growth_bytes_per_second * 60 / MIB:+7.1f}M/min eta {eta} conf {fc.confidence:.2f}"
        )
    else:
        numbers = f"{'(collecting samples)':<64}"
    verdict = a.verdict.value if a else "-"
    action = d.action.value.upper() if d.action is not Action.NONE else "none"
    blocked = f" [blocked: {d.blocked_by}]" if d.blocked_by else ""
    return (
        f"t={s.t_seconds:7.1f}s anon {_m(s.anon_bytes)} file {_m(s.file_bytes)} {numbers} "
        f"{verdict:<19} {action:<11} {d.reason}{blocked}"
    )


def tick_dict(tick: Tick) -> dict[str, Any]:
    a = tick.assessment
    return {
        "t_seconds": tick.sample.t_seconds,
        "verdict": a.verdict.value if a else None,
        "evidence": a.evidence if a else None,
        "decision": tick.decision.to_dict(),
        "numbers": a.numbers if a else {},
    }


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BrokenPipeError:  # `memoryguard replay … | head`: the reader has seen enough
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter shutdown quiet
        return 0


def _run(args: argparse.Namespace) -> int:
    try:
        with open(args.trace, encoding="utf-8", errors="replace") as handle:
            trace = parse_trace(handle.read(), args.trace.rsplit("/", 1)[-1].rsplit(".", 1)[0])
        policy = load_policy(args.guard, args.rollout_seconds, args.lead)
    except (OSError, ValueError) as exc:
        print(f"memoryguard replay: {exc}", file=sys.stderr)
        return 2
    if not trace.samples:
        print(f"memoryguard replay: {args.trace}: no readable rows", file=sys.stderr)
        return 2
    samples, failure = replayable(trace)
    if args.all_rows:
        samples = list(trace.samples)
    heap = args.runtime_heap_limit or trace.runtime_heap_limit_bytes
    source = "runtime heap limit (--runtime-heap-limit)" if args.runtime_heap_limit else None
    if source is None and heap is not None:
        source = "runtime heap limit (trace metadata)"

    if not args.json:
        print(f"trace {trace.name}: {len(trace.samples)} rows, {trace.skipped_rows} skipped", end="")
        print(f"; fails at t={failure.t_seconds:g}s ({failure.reason})" if failure else "; no failure (safe)")
        for key, value in trace.metadata.items():
            print(f"  # {key}: {value}")
        print(
            f"policy: window {policy.window_seconds:g}s, min {policy.min_samples} samples, restart when the "
            f"limit is < {policy.restart.lead_seconds:g}s away (rollout {policy.restart.rollout_seconds:g}s "
            f"+ {policy.restart.margin_fraction:.0%}), runtime heap cap "
            + (f"{heap / MIB:.0f} MiB" if heap else "none")
        )

    ticks: list[Tick] = []
    previous: tuple[str, str, str] | None = None
    for tick in replay(samples, policy, runtime_heap_limit_bytes=heap, runtime_limit_source=source):
        ticks.append(tick)
        state = (
            tick.assessment.verdict.value if tick.assessment else "",
            tick.decision.action.value,
            tick.decision.wanted.value,
        )
        changed = state != previous or tick.decision.action is not Action.NONE
        previous = state
        if not (changed or args.verbose):
            continue
        if args.json:
            print(json.dumps(tick_dict(tick)))
        else:
            print(format_tick(tick))

    score = score_ticks(trace, ticks, failure, args.lead)
    if args.json:
        print(json.dumps({"summary": score.to_dict(), "lead_seconds": args.lead}))
    else:
        detail = f", lead {score.lead_seconds:.0f}s" if score.lead_seconds is not None else ""
        first = (
            f", first restart at t={score.restart_seconds:g}s" if score.restart_seconds is not None else ""
        )
        print(f"outcome: {score.outcome}{detail}{first}; {score.reclaims} reclaims (--lead {args.lead:g})")
    return 0
