"""Score MemoryGuard and two baselines on a directory of traces.

Every trace (``*.csv``, format in DESIGN.md "Trace files") is replayed row by row through
MemoryGuard's engine and through two baselines, as if live:

  threshold   restart when the working set reaches 90 % of memory.max
  linear      least-squares slope of the working set over the last 60 s;
              restart when the straight-line time to memory.max is under the horizon

A trace *fails* at the first row where oom_kill increases or alive drops to 0, or at the
metadata's ``failure_at``; rows from the failure on are not replayed. Outcomes:

  prevented      failing trace, first restart decided at least --lead seconds before the failure
  late           failing trace, first restart decided less than --lead seconds before it
  missed         failing trace, no restart at all
  false_restart  safe trace (no failure), any restart
  ok             safe trace, no restart (reclaims are counted, not punished)

MemoryGuard runs its default policy with restart.rolloutSeconds set to --lead — the lead the
score demands is the time a rollout is given — unless --guard names a MemoryGuard spec.
The trace's ``runtime_heap_limit_bytes`` metadata is passed to the engine as the heap cap the
operator would have parsed from the pod spec (the baselines do not use it).

--json prints {"policies": {"<policy>": {"traces": [{"name", "outcome", "lead_seconds", ...}],
"summary": {...}}}, "lead_seconds": ..., "errors": [...]}. Exit status 1 when a file could not
be read as a trace (it is listed under "errors"), else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memoryguard.engine import Action, Policy
from memoryguard.engine.baselines import BASELINES
from memoryguard.engine.replay import Tick, replay, replay_baseline
from memoryguard.traces import Failure, Trace, TraceError, parse_trace

POLICIES = ("memoryguard", *BASELINES)
OUTCOMES = ("prevented", "late", "missed", "false_restart", "ok")


@dataclass
class TraceScore:
    name: str
    outcome: str
    lead_seconds: float | None
    failure: Failure | None
    restart_seconds: float | None
    restart_reason: str | None
    reclaims: int
    drop_caches: int
    samples: int
    skipped_rows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "lead_seconds": None if self.lead_seconds is None else round(self.lead_seconds, 3),
            "failure_seconds": None if self.failure is None else self.failure.t_seconds,
            "failure_reason": None if self.failure is None else self.failure.reason,
            "restart_seconds": self.restart_seconds,
            "restart_reason": self.restart_reason,
            "reclaims": self.reclaims,
            "drop_caches": self.drop_caches,
            "samples": self.samples,
            "skipped_rows": self.skipped_rows,
        }


@dataclass
class PolicyScore:
    traces: list[TraceScore] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        counts = {outcome: 0 for outcome in OUTCOMES}
        for score in self.traces:
            counts[score.outcome] += 1
        failing = counts["prevented"] + counts["late"] + counts["missed"]
        safe = counts["false_restart"] + counts["ok"]
        leads = [
            s.lead_seconds for s in self.traces if s.outcome == "prevented" and s.lead_seconds is not None
        ]
        return {
            "traces": len(self.traces),
            "failing": failing,
            "safe": safe,
            **counts,
            "prevented_fraction": round(counts["prevented"] / failing, 4) if failing else None,
            "false_restart_fraction": round(counts["false_restart"] / safe, 4) if safe else None,
            "reclaims": sum(s.reclaims for s in self.traces),
            "drop_caches": sum(s.drop_caches for s in self.traces),
            "median_lead_seconds": round(statistics.median(leads), 3) if leads else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"traces": [s.to_dict() for s in self.traces], "summary": self.summary()}


def replayable(trace: Trace) -> tuple[list[Any], Failure | None]:
    """The samples the engine would have seen alive: everything before the failure."""
    failure = trace.failure
    if failure is None:
        return list(trace.samples), None
    return [s for s in trace.samples if s.t_seconds < failure.t_seconds], failure


def score_ticks(
    trace: Trace, ticks: Iterable[Tick], failure: Failure | None, lead_seconds: float
) -> TraceScore:
    """Apply the outcome rules to one replay; scoring stops at the first restart (or eviction),
    since the trace does not model what a restart would have changed."""
    restart_at: float | None = None
    restart_reason: str | None = None
    reclaims = drops = samples = 0
    for tick in ticks:
        samples += 1
        action = tick.decision.action
        if action is Action.RECLAIM:
            reclaims += 1
        elif action is Action.DROP_CACHES:
            drops += 1
        elif action.disruptive:
            restart_at = tick.sample.t_seconds
            restart_reason = tick.decision.reason
            break
    lead: float | None = None
    if failure is None:
        outcome = "ok" if restart_at is None else "false_restart"
    elif restart_at is None:
        outcome = "missed"
    else:
        lead = failure.t_seconds - restart_at
        outcome = "prevented" if lead >= lead_seconds else "late"
    return TraceScore(
        name=trace.name,
        outcome=outcome,
        lead_seconds=lead,
        failure=failure,
        restart_seconds=restart_at,
        restart_reason=restart_reason,
        reclaims=reclaims,
        drop_caches=drops,
        samples=samples,
        skipped_rows=trace.skipped_rows,
    )


def score_trace(trace: Trace, policy_name: str, policy: Policy, lead_seconds: float) -> TraceScore:
    samples, failure = replayable(trace)
    if policy_name == "memoryguard":
        ticks = replay(
            samples,
            policy,
            runtime_heap_limit_bytes=trace.runtime_heap_limit_bytes,
            runtime_limit_source="runtime heap cap",
        )
    else:
        ticks = replay_baseline(samples, policy_name, policy)
    return score_ticks(trace, ticks, failure, lead_seconds)


def trace_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv" and p.is_file()))
        else:
            files.append(path)
    return files


def load_traces(paths: Sequence[str]) -> tuple[list[Trace], list[dict[str, str]]]:
    """Every trace that parses; the files that do not, as errors. A trace without a readable
    row is still a trace (a workload watched for no time): it is scored, and warned about."""
    traces: list[Trace] = []
    errors: list[dict[str, str]] = []
    for path in trace_files(paths):
        try:
            trace = parse_trace(path.read_text(encoding="utf-8", errors="replace"), path.stem)
        except (OSError, TraceError) as exc:
            errors.append({"name": path.stem, "path": str(path), "error": str(exc)})
            continue
        if not trace.samples:
            print(f"memoryguard bench: warning: {path} has no readable rows", file=sys.stderr)
        traces.append(trace)
    return traces, errors


def _fails_at(trace: Trace, failure: Failure | None, unit: str) -> str:
    if failure is None:
        return "safe"
    # Relative to the first row: recorders may write wall-clock seconds.
    start = trace.samples[0].t_seconds if trace.samples else 0.0
    return f"{failure.t_seconds - start:.0f}{unit}"


def load_policy(guard: str | None, rollout_seconds: float | None, lead_seconds: float) -> Policy:
    if guard:
        import yaml

        from memoryguard.guardspec import policy_from_spec

        with open(guard, encoding="utf-8") as handle:
            policy = policy_from_spec(yaml.safe_load(handle) or {})
        return policy.with_rollout_seconds(rollout_seconds) if rollout_seconds else policy
    return Policy.default().with_rollout_seconds(rollout_seconds or lead_seconds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="DIR", help="directories of *.csv traces, or trace files")
    parser.add_argument(
        "--lead",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="a restart counts as prevented when decided this long before the failure (default 20)",
    )
    parser.add_argument(
        "--policy",
        action="append",
        choices=POLICIES,
        metavar="NAME",
        help=f"score only these policies (repeatable; default all: {', '.join(POLICIES)})",
    )
    parser.add_argument("--guard", metavar="SPEC.yaml", help="MemoryGuard spec for the memoryguard policy")
    parser.add_argument(
        "--rollout-seconds",
        type=float,
        metavar="SECONDS",
        help="restart.rolloutSeconds for the memoryguard policy (default: --lead, or the spec's)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument(
        "--markdown", action="store_true", help="print the tables as Markdown (for BENCHMARKS.md)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BrokenPipeError:  # `memoryguard bench … | head`: the reader has seen enough
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter shutdown quiet
        return 0


def _run(args: argparse.Namespace) -> int:
    lead = float(args.lead)
    try:
        policy = load_policy(args.guard, args.rollout_seconds, lead)
    except (OSError, ValueError) as exc:
        print(f"memoryguard bench: {exc}", file=sys.stderr)
        return 2
    names = list(dict.fromkeys(args.policy or POLICIES))
    traces, errors = load_traces(args.paths)
    if not traces and not errors:
        print(f"memoryguard bench: no *.csv traces in {' '.join(args.paths)}", file=sys.stderr)
        return 2
    scores = {name: PolicyScore([score_trace(t, name, policy, lead) for t in traces]) for name in names}
    for error in errors:
        print(f"memoryguard bench: skipped {error['path']}: {error['error']}", file=sys.stderr)
    if args.json:
        report = {
            "policies": {name: score.to_dict() for name, score in scores.items()},
            "lead_seconds": lead,
            "memoryguard_policy": policy.to_dict(),
            "errors": errors,
        }
        print(json.dumps(report, indent=2))
    elif args.markdown:
        print(render_markdown(traces, scores, lead))
    else:
        print(render_table(traces, scores, lead))
    return 1 if errors else 0


def _cell(score: TraceScore) -> str:
    if score.outcome in ("prevented", "late"):
        return f"{score.outcome} {score.lead_seconds:.0f}s"
    if score.outcome == "false_restart":
        return f"FALSE RESTART @{score.restart_seconds:.0f}s"
    if score.outcome == "missed":
        return "MISSED"
    return "ok" + (f" ({score.reclaims} reclaims)" if score.reclaims else "")


def _markdown_cell(score: TraceScore) -> str:
    if score.outcome == "prevented":
        return f"prevented, {score.lead_seconds:.0f} s ahead"
    if score.outcome == "late":
        return f"**late** ({score.lead_seconds:.0f} s ahead)"
    if score.outcome == "missed":
        return "**missed**"
    if score.outcome == "false_restart":
        return f"**false restart** at {score.restart_seconds:.0f} s"
    return "ok" + (f" ({score.reclaims} reclaims)" if score.reclaims else "")


def render_markdown(traces: Sequence[Trace], scores: dict[str, PolicyScore], lead: float) -> str:
    names = list(scores)
    lines = [
        "| trace | fails at | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for i, trace in enumerate(traces):
        fails = _fails_at(trace, scores[names[0]].traces[i].failure, " s")
        cells = " | ".join(_markdown_cell(scores[n].traces[i]) for n in names)
        lines.append(f"| {trace.name} | {fails} | {cells} |")
    lines += [
        "",
        f"| policy (--lead {lead:g}) | failing prevented | late | missed | false restarts | reclaims |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        s = scores[name].summary()
        share = f" ({s['prevented_fraction']:.0%})" if s["prevented_fraction"] is not None else ""
        lines.append(
            f"| {name} | {s['prevented']}/{s['failing']}{share} | {s['late']} | {s['missed']} | "
            f"{s['false_restart']} of {s['safe']} safe | {s['reclaims']} |"
        )
    return "\n".join(lines)


def render_table(traces: Sequence[Trace], scores: dict[str, PolicyScore], lead: float) -> str:
    names = list(scores)
    width = max([len(t.name) for t in traces] + [5])
    header = f"{'trace':<{width}}  {'fails at':>9}  " + "  ".join(f"{n:<24}" for n in names)
    lines = [header, "-" * len(header)]
    for i, trace in enumerate(traces):
        fails = _fails_at(trace, scores[names[0]].traces[i].failure, "s")
        cells = "  ".join(f"{_cell(scores[n].traces[i]):<24}" for n in names)
        lines.append(f"{trace.name:<{width}}  {fails:>9}  {cells}")
    lines.append("")
    for name in names:
        s = scores[name].summary()
        prevented = f"{s['prevented']}/{s['failing']} failing traces prevented"
        if s["prevented_fraction"] is not None:
            prevented += f" ({s['prevented_fraction']:.0%})"
        lead_text = (
            f", median lead {s['median_lead_seconds']:.0f}s" if s["median_lead_seconds"] is not None else ""
        )
        lines.append(
            f"{name}: {prevented}{lead_text}, {s['late']} late, {s['missed']} missed; "
            f"{s['false_restart']} false restarts on {s['safe']} safe traces; {s['reclaims']} reclaims"
        )
    lines.append(f"(--lead {lead:g}: a restart must come at least {lead:g}s before the failure)")
    return "\n".join(lines)
