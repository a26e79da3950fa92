"""MemoryGuard ``spec`` (YAML/JSON, as in docs/resource.md) → the engine's :class:`Policy`.

Parsed once, up front, with errors that name the field::

    spec.actions.restart.cooldown: expected a duration like 30m, got "thirty"

Used by ``memoryguard replay --guard spec.yaml`` and by the operator for each MemoryGuard.
Keys outside the decision parameters (``selector``, ``containers``) are the operator's and are
ignored here; unknown keys inside ``forecast``, ``thresholds`` and ``actions`` are errors, so a
typo (``cooldwon``) is not silently replaced by a default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from memoryguard.engine.policy import DropCachesPolicy, EvictPolicy, Policy, ReclaimPolicy, RestartPolicy

_DURATION = re.compile(r"^(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?$")
_PERCENT = re.compile(r"^([0-9]{1,3})%$")


class GuardSpecError(ValueError):
    """A MemoryGuard spec that cannot be turned into a policy; the message names the field."""


def parse_duration(value: Any, field: str) -> float:
    """``30s``, ``10m``, ``1h30m`` → seconds."""
    text = str(value) if isinstance(value, str) else None
    match = _DURATION.match(text) if text else None
    if not text or not match or not any(match.groups()):
        raise GuardSpecError(f'{field}: expected a duration like 30m, got "{value}"')
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def parse_percent(value: Any, field: str) -> float:
    """``80%`` → 0.8 (1–100 %)."""
    match = _PERCENT.match(value) if isinstance(value, str) else None
    if not match or not 1 <= int(match.group(1)) <= 100:
        raise GuardSpecError(f'{field}: expected a percentage from 1% to 100% like 80%, got "{value}"')
    return int(match.group(1)) / 100.0


def parse_bytes(value: Any, field: str) -> int:
    """A Kubernetes quantity (``16Mi``, ``1G``, ``1048576``) → bytes."""
    from kubernetes.utils import parse_quantity  # the API server's own rules; heavy, so loaded late

    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise GuardSpecError(f'{field}: expected a quantity like 16Mi, got "{value}"')
    try:
        quantity = parse_quantity(value)
    except (ValueError, TypeError) as exc:
        raise GuardSpecError(f'{field}: expected a quantity like 16Mi, got "{value}"') from exc
    if quantity < 0:
        raise GuardSpecError(f'{field}: must not be negative, got "{value}"')
    return int(quantity)


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise GuardSpecError(f'{field}: expected true or false, got "{value}"')
    return value


def _int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GuardSpecError(f'{field}: expected a whole number ≥ {minimum}, got "{value}"')
    return value


def _section(spec: Mapping[str, Any], key: str, path: str, allowed: set[str]) -> Mapping[str, Any]:
    value = spec.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise GuardSpecError(f"{path}.{key}: expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise GuardSpecError(
            f"{path}.{key}.{unknown[0]}: unknown field (known: {', '.join(sorted(allowed))})"
        )
    return value


def policy_from_spec(document: Mapping[str, Any]) -> Policy:
    """Accepts a whole MemoryGuard object (``{"kind": "MemoryGuard", "spec": {...}}``) or its spec."""
    try:
        return _policy_from_spec(document)
    except GuardSpecError:
        raise
    except ValueError as exc:  # range and cross-field rules (warn ≤ act) live in Policy itself
        raise GuardSpecError(f"spec.{exc}") from exc


def _policy_from_spec(document: Mapping[str, Any]) -> Policy:
    if not isinstance(document, Mapping):
        raise GuardSpecError(f"spec: expected an object, got {type(document).__name__}")
    spec = document.get("spec", document) if "kind" in document or "spec" in document else document
    if not isinstance(spec, Mapping):
        raise GuardSpecError(f"spec: expected an object, got {type(spec).__name__}")
    path = "spec"
    policy = Policy.default()

    forecast = _section(spec, "forecast", path, {"window", "horizon", "minSamples"})
    if "window" in forecast:
        policy = replace(policy, window_seconds=parse_duration(forecast["window"], f"{path}.forecast.window"))
    if "horizon" in forecast:
        policy = replace(
            policy, horizon_seconds=parse_duration(forecast["horizon"], f"{path}.forecast.horizon")
        )
    if "minSamples" in forecast:
        policy = replace(policy, min_samples=_int(forecast["minSamples"], f"{path}.forecast.minSamples", 3))

    thresholds = _section(spec, "thresholds", path, {"warn", "act"})
    warn = parse_percent(thresholds["warn"], f"{path}.thresholds.warn") if "warn" in thresholds else None
    act = parse_percent(thresholds["act"], f"{path}.thresholds.act") if "act" in thresholds else None

    actions = _section(spec, "actions", path, {"reclaim", "dropCaches", "restart", "evict"})
    apath = f"{path}.actions"
    reclaim_spec = _section(actions, "reclaim", apath, {"enabled", "cooldown", "minReclaimable"})
    reclaim = ReclaimPolicy(
        enabled=_bool(reclaim_spec.get("enabled", True), f"{apath}.reclaim.enabled"),
        cooldown_seconds=(
            parse_duration(reclaim_spec["cooldown"], f"{apath}.reclaim.cooldown")
            if "cooldown" in reclaim_spec
            else policy.reclaim.cooldown_seconds
        ),
        min_reclaimable_bytes=(
            parse_bytes(reclaim_spec["minReclaimable"], f"{apath}.reclaim.minReclaimable")
            if "minReclaimable" in reclaim_spec
            else policy.reclaim.min_reclaimable_bytes
        ),
    )
    drop_spec = _section(actions, "dropCaches", apath, {"enabled", "level", "cooldown"})
    level = drop_spec.get("level", policy.drop_caches.level)
    if level not in (1, 2, 3) or isinstance(level, bool):
        raise GuardSpecError(f'{apath}.dropCaches.level: expected 1, 2 or 3, got "{level}"')
    drop_caches = DropCachesPolicy(
        enabled=_bool(drop_spec.get("enabled", False), f"{apath}.dropCaches.enabled"),
        level=level,
        cooldown_seconds=(
            parse_duration(drop_spec["cooldown"], f"{apath}.dropCaches.cooldown")
            if "cooldown" in drop_spec
            else policy.drop_caches.cooldown_seconds
        ),
    )
    restart_spec = _section(
        actions, "restart", apath, {"enabled", "cooldown", "maxPerHour", "rolloutSeconds"}
    )
    restart = RestartPolicy(
        enabled=_bool(restart_spec.get("enabled", True), f"{apath}.restart.enabled"),
        cooldown_seconds=(
            parse_duration(restart_spec["cooldown"], f"{apath}.restart.cooldown")
            if "cooldown" in restart_spec
            else policy.restart.cooldown_seconds
        ),
        max_per_hour=_int(
            restart_spec.get("maxPerHour", policy.restart.max_per_hour), f"{apath}.restart.maxPerHour", 0
        ),
        rollout_seconds=float(
            _int(
                restart_spec.get("rolloutSeconds", int(policy.restart.rollout_seconds)),
                f"{apath}.restart.rolloutSeconds",
                1,
            )
        ),
    )
    evict_spec = _section(actions, "evict", apath, {"enabled"})
    evict = EvictPolicy(enabled=_bool(evict_spec.get("enabled", True), f"{apath}.evict.enabled"))

    dry_run = _bool(spec.get("dryRun", False), f"{path}.dryRun")
    return replace(
        policy,
        warn_fraction=warn if warn is not None else policy.warn_fraction,
        act_fraction=act if act is not None else policy.act_fraction,
        reclaim=reclaim,
        drop_caches=drop_caches,
        restart=restart,
        evict=evict,
        dry_run=dry_run,
    )
