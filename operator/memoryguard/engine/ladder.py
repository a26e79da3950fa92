"""The runbook as a ladder: observe → reclaim → drop_caches → restart (→ evict for bare pods).

Each rung is taken only when the one below cannot help:

- **reclaim** (``memory.reclaim``) when the cgroup is at the act threshold of its limit and
  enough of it is file cache — worth a write, harmless to the workload;
- **drop_caches** (node-wide, opt-in) only when reclaim is unavailable (cgroup v1, old kernel)
  or held back by its cooldown while the pressure persists;
- **restart** only for sustained growth of pinned memory whose forecast reaches the failure
  line within the time a rollout needs plus a margin: reclaim cannot free pinned memory, and
  restarting any earlier costs an outage the forecast does not yet justify. Sustained is the
  forecast's confidence at work: Kendall's tau of the growth's lower envelope at least 0.6
  (``trend.SUSTAINED_TAU``), its quarters rising one after the other, over enough saw-tooth
  cycles to tell them from growth;
- **evict** instead of restart for a bare pod, which has no owner to roll it.

Every decision passes the rate limiter; a refused rung falls back to the rung below and says
what blocked it.
"""

from __future__ import annotations

from memoryguard.engine.assessment import SWAP_FULL_FRACTION, Assessment, Verdict
from memoryguard.engine.decision import Action, Decision, Target
from memoryguard.engine.limiter import LimiterState, RateLimits, check
from memoryguard.engine.policy import Policy

MIB = 1024 * 1024


def _mib(value: float) -> str:
    return f"{value / MIB:.0f} MiB" if value >= 100 * MIB else f"{value / MIB:.1f} MiB"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"


def _restart_reason(assessment: Assessment, policy: Policy, target: Target, action: Action) -> str:
    fc = assessment.forecast
    assert fc is not None and fc.eta_seconds is not None
    verb = "restart" if action is Action.RESTART else "evict"
    return (
        f"{verb} {target.name}: pinned memory {_mib(fc.pinned_bytes)} grows "
        f"{fc.growth_bytes_per_second * 60 / MIB:+.1f} MiB/min and reaches {fc.limit_label} in "
        f"{_seconds(fc.eta_seconds)}, within the {_seconds(policy.restart.rollout_seconds)} a rollout "
        f"needs plus {policy.restart.margin_fraction:.0%} margin; reclaim cannot free it"
        f"{_swap_clause(assessment)}"
    )


def _swap_clause(assessment: Assessment) -> str:
    """Why swap will not absorb the growth, when swap is what runs out first."""
    if assessment.verdict is not Verdict.SWAP_EXHAUSTED:
        return ""
    numbers = assessment.numbers
    swap = numbers.get("swap_current_bytes") or 0
    swap_max = numbers.get("swap_max_bytes")
    of_max = f" of {_mib(swap_max)}" if swap_max is not None else ""
    if numbers.get("swap_fail_events_recent"):
        return f", and swap ({_mib(swap)}{of_max}) is full: swap-outs are failing"
    if swap_max and swap >= SWAP_FULL_FRACTION * swap_max:
        return f", and swap ({_mib(swap)}{of_max}) is all but full"
    return f", and swap ({_mib(swap)}{of_max}) will be full by then"


def _wants_restart(assessment: Assessment, policy: Policy) -> bool:
    fc = assessment.forecast
    return (
        assessment.verdict is not Verdict.INSUFFICIENT_DATA
        and fc is not None
        and fc.sustained
        and fc.eta_seconds is not None
        and fc.eta_seconds <= policy.restart.lead_seconds
    )


def _reclaim_amount(assessment: Assessment, policy: Policy) -> int | None:
    """Bytes to reclaim to bring usage back to the warn threshold, or None when not worth it."""
    if assessment.usage_fraction is None or assessment.usage_limit_bytes is None:
        return None
    if assessment.usage_fraction < policy.act_fraction:
        return None
    excess = assessment.usage_bytes - int(policy.warn_fraction * assessment.usage_limit_bytes)
    amount = min(assessment.reclaimable_bytes, excess)
    if amount < max(policy.reclaim.min_reclaimable_bytes, 1):
        return None
    return amount


def plan(
    assessment: Assessment,
    policy: Policy,
    *,
    target: Target,
    limiter: LimiterState,
    now_seconds: float,
    restarts_in_flight: int = 0,
    max_concurrent_restarts: int | None = None,
) -> Decision:
    """Choose one action for one container. Does not record it: call ``limiter.record`` once done."""
    limits = RateLimits.from_policy(policy, max_concurrent_restarts=max_concurrent_restarts)
    dry_run = policy.dry_run

    if assessment.verdict is Verdict.INSUFFICIENT_DATA:
        return Decision(Action.NONE, f"observe: {assessment.evidence}", dry_run=dry_run)

    blocked: str | None = None
    wanted = Action.NONE
    if _wants_restart(assessment, policy):
        if target.kind == "pod":
            wanted = Action.EVICT
            allowed_by_spec = policy.evict.enabled
            disabled = "eviction is disabled (spec.actions.evict.enabled: false)"
        else:
            wanted = Action.RESTART
            allowed_by_spec = policy.restart.enabled
            disabled = "restarts are disabled (spec.actions.restart.enabled: false)"
        reason = _restart_reason(assessment, policy, target, wanted)
        if not allowed_by_spec:
            blocked = disabled
        else:
            verdict = check(
                limiter,
                limits,
                action=wanted.value,
                target_key=target.limiter_key(wanted),
                now_seconds=now_seconds,
                restarts_in_flight=restarts_in_flight,
            )
            if verdict.allowed:
                return Decision(wanted, reason, wanted=wanted, dry_run=dry_run)
            blocked = verdict.blocked_by
        # The restart is held back: reclaim below may still buy time, so fall through.
        restart_reason = reason
    else:
        restart_reason = ""

    amount = _reclaim_amount(assessment, policy)
    if amount is not None and (policy.reclaim.enabled or policy.drop_caches.enabled):
        cache_reason = (
            f"usage {_mib(assessment.usage_bytes)} is {assessment.usage_fraction or 0:.0%} of "
            f"{_mib(assessment.usage_limit_bytes or 0)} and {_mib(assessment.reclaimable_bytes)} of it is "
            f"reclaimable file cache"
        )
        reclaim_blocked: str | None = None
        if policy.reclaim.enabled and target.reclaim_supported:
            verdict = check(
                limiter,
                limits,
                action=Action.RECLAIM.value,
                target_key=target.limiter_key(Action.RECLAIM),
                now_seconds=now_seconds,
            )
            if verdict.allowed:
                return Decision(
                    Action.RECLAIM,
                    _join(f"reclaim {_mib(amount)}: {cache_reason}", restart_reason, blocked),
                    wanted=wanted if wanted is not Action.NONE else Action.RECLAIM,
                    blocked_by=blocked,
                    reclaim_bytes=amount,
                    dry_run=dry_run,
                )
            reclaim_blocked = verdict.blocked_by
        elif policy.reclaim.enabled:
            reclaim_blocked = "memory.reclaim is not available on this node (cgroup v1 or kernel < 5.19)"
        if policy.drop_caches.enabled:
            verdict = check(
                limiter,
                limits,
                action=Action.DROP_CACHES.value,
                target_key=target.limiter_key(Action.DROP_CACHES),
                now_seconds=now_seconds,
            )
            if verdict.allowed:
                return Decision(
                    Action.DROP_CACHES,
                    _join(
                        f"drop_caches level {policy.drop_caches.level} (node-wide): {cache_reason}"
                        + (f"; reclaim held back ({reclaim_blocked})" if reclaim_blocked else ""),
                        restart_reason,
                        blocked,
                    ),
                    wanted=wanted if wanted is not Action.NONE else Action.DROP_CACHES,
                    blocked_by=blocked,
                    drop_caches_level=policy.drop_caches.level,
                    dry_run=dry_run,
                )
            reclaim_blocked = reclaim_blocked or verdict.blocked_by
        if wanted is Action.NONE and reclaim_blocked:
            return Decision(
                Action.NONE,
                f"observe: {cache_reason}",
                wanted=Action.RECLAIM if policy.reclaim.enabled else Action.DROP_CACHES,
                blocked_by=reclaim_blocked,
                dry_run=dry_run,
            )

    if wanted is not Action.NONE:
        return Decision(Action.NONE, restart_reason, wanted=wanted, blocked_by=blocked, dry_run=dry_run)
    return Decision(Action.NONE, f"observe: {assessment.evidence}", dry_run=dry_run)


def _join(reason: str, restart_reason: str, blocked: str | None) -> str:
    if not restart_reason:
        return reason
    return f"{reason}; wanted to {restart_reason.split(':', 1)[0]} but {blocked}"
