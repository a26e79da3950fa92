"""The action ledger kept in MemoryGuard status: every action is written as an intent first.

An action goes intent → done | failed. The intent (with the rate limiter's new state) is in
status before the action writes anything, so an operator that dies mid-action finds the
intent on restart and checks the world instead of acting again: the restarted workload's pod
template carries the ledger id (``memoryguard.io/restart-id``), an evicted pod is gone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

INTENT = "intent"
DONE = "done"
FAILED = "failed"


def rfc3339(t_seconds: float) -> str:
    """UTC, whole seconds, ``Z``: what ``kubectl rollout restart`` writes in restartedAt."""
    return datetime.fromtimestamp(t_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float | None:
    """Seconds since the epoch of an ``rfc3339()`` stamp (any RFC 3339 time); None if unreadable."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None


def action_id(guard_uid: str, action: str, target: str, now_seconds: float) -> str:
    """Unique per guard, action, target and millisecond; short enough for an annotation value."""
    digest = hashlib.sha256(f"{guard_uid}|{action}|{target}|{now_seconds:.3f}".encode()).hexdigest()[:10]
    return f"{action[:2]}-{int(now_seconds)}-{digest}"


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    time: str
    action: str  # reclaim | drop_caches | restart | evict
    target: str  # deployment/web, pod/batch-1, pod/web-1/app, node/node-a
    state: str = INTENT
    pod: str = ""
    container: str = ""
    node: str = ""
    reason: str = ""
    dryRun: bool = False
    message: str = ""
    finishedTime: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", None) or k in ("id", "state")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Entry:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Ledger:
    size: int
    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def from_status(cls, items: Iterable[Mapping[str, Any]] | None, *, size: int) -> Ledger:
        entries = []
        for item in items or ():
            try:
                entries.append(Entry.from_dict(item))
            except TypeError:
                continue  # a hand-edited entry missing required keys: not ours to guess
        return cls(size=size, entries=entries[-size:])

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.trim()

    def trim(self) -> None:
        """Drop the oldest resolved entries beyond ``size``. Never an unresolved intent: it is
        what prevents a repeated action (see ``overflowing_intents``)."""
        while len(self.entries) > self.size:
            oldest_resolved = next((i for i, e in enumerate(self.entries) if e.state != INTENT), None)
            if oldest_resolved is None:
                break
            del self.entries[oldest_resolved]

    def overflowing_intents(self) -> list[Entry]:
        """The oldest intents that keep the ledger above ``size`` even with every resolved
        entry dropped: the caller must settle them before the ledger fits again."""
        intents = self.pending()
        return intents[: max(0, len(intents) - self.size)]

    def resolve(
        self, entry_id: str, state: str, *, message: str = "", finished_seconds: float
    ) -> Entry | None:
        for index, entry in enumerate(self.entries):
            if entry.id == entry_id:
                self.entries[index] = replace(
                    entry,
                    state=state,
                    message=message or entry.message,
                    finishedTime=rfc3339(finished_seconds),
                )
                return self.entries[index]
        return None

    def update_message(self, entry_id: str, message: str) -> None:
        for index, entry in enumerate(self.entries):
            if entry.id == entry_id:
                self.entries[index] = replace(entry, message=message)

    def pending(self) -> list[Entry]:
        return [e for e in self.entries if e.state == INTENT]

    def to_status(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.entries]
