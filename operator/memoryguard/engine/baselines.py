"""The two rules MemoryGuard is measured against in ``memoryguard bench``.

- ``threshold``: restart when the working set (what kubelet and most dashboards watch) reaches
  90 % of ``memory.max`` — the classic alert turned into an action;
- ``linear``: least-squares slope of the working set over the last 60 s, restart when the
  straight-line time to ``memory.max`` is under the policy's horizon.

Both see only ``memory.max``, as a generic tool would: no runtime heap caps, no memory.high.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from memoryguard.engine.decision import Action, Decision
from memoryguard.engine.model import Sample
from memoryguard.engine.policy import Policy

THRESHOLD_FRACTION = 0.9
LINEAR_WINDOW_SECONDS = 60.0
MIB = 1024 * 1024

BASELINES = ("threshold", "linear")


def threshold_decision(history: Sequence[Sample], policy: Policy) -> Decision:
    latest = history[-1]
    if latest.max_bytes is None:
        return Decision(Action.NONE, "no memory.max")
    ws = latest.working_set_bytes
    if ws >= THRESHOLD_FRACTION * latest.max_bytes:
        return Decision(
            Action.RESTART,
            f"working set {ws / MIB:.0f} MiB ≥ {THRESHOLD_FRACTION:.0%} of memory.max "
            f"{latest.max_bytes / MIB:.0f} MiB",
            wanted=Action.RESTART,
        )
    return Decision(Action.NONE, f"working set {ws / latest.max_bytes:.0%} of memory.max")


def linear_decision(history: Sequence[Sample], policy: Policy) -> Decision:
    latest = history[-1]
    # Same warm-up as MemoryGuard: no decision on fewer samples than the policy asks for.
    if latest.max_bytes is None or len(history) < policy.min_samples:
        return Decision(Action.NONE, "not enough data")
    lo = bisect_left(history, latest.t_seconds - LINEAR_WINDOW_SECONDS, key=lambda s: s.t_seconds)
    window = [history[i] for i in range(lo, len(history))]
    if len(window) < 3:
        return Decision(Action.NONE, "not enough data")
    t0 = window[0].t_seconds
    xs = [s.t_seconds - t0 for s in window]
    ys = [float(s.working_set_bytes) for s in window]
    n = len(xs)
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx <= 0:
        return Decision(Action.NONE, "no time span")
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    if slope <= 0:
        return Decision(Action.NONE, f"working set slope {slope * 60 / MIB:+.1f} MiB/min")
    eta = (latest.max_bytes - ys[-1]) / slope
    if eta < policy.horizon_seconds:
        return Decision(
            Action.RESTART,
            f"working set grows {slope * 60 / MIB:+.1f} MiB/min, memory.max in {max(eta, 0):.0f} s "
            f"< horizon {policy.horizon_seconds:.0f} s",
            wanted=Action.RESTART,
        )
    return Decision(Action.NONE, f"memory.max in {eta:.0f} s")


def baseline_decision(name: str, history: Sequence[Sample], policy: Policy) -> Decision:
    if name == "threshold":
        return threshold_decision(history, policy)
    if name == "linear":
        return linear_decision(history, policy)
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
