"""MemoryGuard status: conditions, the bounded at-risk table, counts for the printer columns.

Status is written when something that matters changed (a condition, the set of pods at risk,
the ledger, the counts), moving numbers at most every ``refresh_seconds``, and an unchanged
status never, so a guard of a thousand healthy pods does not patch its object every second.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memoryguard.controller.ledger import rfc3339
from memoryguard.engine.assessment import Assessment

MAX_NOTES = 4  # the CRD's maxItems for an at-risk row's notes
READY = "Ready"
DEGRADED = "Degraded"
TRUE = "True"
FALSE = "False"


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


@dataclass
class Conditions:
    """Conditions with lastTransitionTime kept as long as the status value does not change."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_status(cls, conditions: Sequence[Mapping[str, Any]] | None) -> Conditions:
        return cls(
            {str(c["type"]): dict(c) for c in conditions or () if isinstance(c, Mapping) and "type" in c}
        )

    def set(self, condition: Condition, *, now_seconds: float, generation: int | None) -> None:
        old = self.items.get(condition.type)
        transition = old.get("lastTransitionTime") if old and old.get("status") == condition.status else None
        item: dict[str, Any] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message[:4096],
            "lastTransitionTime": transition or rfc3339(now_seconds),
        }
        if generation is not None:
            item["observedGeneration"] = generation
        self.items[condition.type] = item

    def get(self, type_: str) -> dict[str, Any] | None:
        return self.items.get(type_)

    def to_status(self) -> list[dict[str, Any]]:
        return [self.items[k] for k in sorted(self.items)]


@dataclass(frozen=True, slots=True)
class AtRiskRow:
    pod: str
    container: str
    node: str
    assessment: Assessment
    action: str
    reason: str
    since_seconds: float

    def sort_key(self) -> tuple[float, float]:
        forecast = self.assessment.forecast
        eta = (
            forecast.eta_seconds
            if forecast is not None and forecast.eta_seconds is not None
            else float("inf")
        )
        return (eta, -(self.assessment.used_fraction or 0.0))

    def to_status(self) -> dict[str, Any]:
        a = self.assessment
        forecast = a.forecast
        numbers = a.numbers
        row: dict[str, Any] = {
            "pod": self.pod,
            "container": self.container,
            "node": self.node,
            "verdict": str(a.verdict),
            "usedPercent": round(100.0 * (a.used_fraction or 0.0), 1),
            "etaSeconds": round(forecast.eta_seconds)
            if forecast and forecast.eta_seconds is not None
            else None,
            "anonBytes": int(numbers.get("anon_bytes", 0) or 0),
            "fileBytes": int(numbers.get("file_bytes", 0) or 0),
            "limitBytes": forecast.effective_limit_bytes if forecast else a.usage_limit_bytes,
            "anonGrowthBytesPerSecond": round(forecast.growth_bytes_per_second, 1) if forecast else None,
            "workingSetGrowthBytesPerSecond": round(forecast.working_set_growth_bytes_per_second, 1)
            if forecast
            else None,
            "action": self.action,
            "reason": self.reason[:512],
            "since": rfc3339(self.since_seconds),
        }
        if a.notes:
            row["notes"] = [note[:512] for note in a.notes[:MAX_NOTES]]
        return row


def at_risk_table(rows: Sequence[AtRiskRow], size: int) -> list[dict[str, Any]]:
    return [r.to_status() for r in sorted(rows, key=AtRiskRow.sort_key)[:size]]


@dataclass
class StatusWriter:
    """Decides when a status patch is worth sending.

    A change that matters (a condition, which pods are at risk and why, the ledger, a count) is
    written at once. Numbers that only moved (the at-risk rows' percentages and ETAs) wait for
    the refresh interval. A status identical to the last one written is not written again —
    a thousand healthy guards cost the API server nothing — unless the object's live status no
    longer holds it (someone else changed it, or a write was lost): then at the refresh interval.
    """

    refresh_seconds: float
    _last_significant: str | None = None
    _last_exact: str | None = None
    _last_written_seconds: float | None = None

    @staticmethod
    def _significant(status: Mapping[str, Any]) -> str:
        # The numbers in the at-risk rows move every second; which pods are at risk, and why,
        # is what must reach the API server without delay.
        shape = {k: v for k, v in status.items() if k != "atRisk"}
        shape["atRisk"] = [
            (r.get("pod"), r.get("container"), r.get("verdict"), r.get("action"))
            for r in status.get("atRisk") or ()
        ]
        return json.dumps(shape, sort_keys=True, default=str)

    @staticmethod
    def _exact(status: Mapping[str, Any]) -> str:
        return json.dumps(status, sort_keys=True, default=str)

    def due(
        self, status: Mapping[str, Any], *, now_seconds: float, live: Mapping[str, Any] | None = None
    ) -> bool:
        if self._last_written_seconds is None or self._significant(status) != self._last_significant:
            return True
        if now_seconds - self._last_written_seconds < self.refresh_seconds:
            return False
        if self._exact(status) != self._last_exact:
            return True
        return live is not None and any(
            self._exact({key: live.get(key)}) != self._exact({key: value}) for key, value in status.items()
        )

    def written(self, status: Mapping[str, Any], *, now_seconds: float) -> None:
        self._last_significant = self._significant(status)
        self._last_exact = self._exact(status)
        self._last_written_seconds = now_seconds

    def lost(self) -> None:
        """The last write did not land: the next status is due whatever it holds."""
        self._last_written_seconds = None
