"""Kubernetes Events with the evidence, on the MemoryGuard and on the pod.

Each Event gets its own name, ``<object>.<hex nanoseconds>``, as client-go's recorder names
them (a shared ``generateName`` prefix can collide). Repeats of the same warning about the
same object are held back for a while, so a pod at risk for an hour makes a few Events, not
3600. An Event that cannot be posted is logged and never fails the cycle.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memoryguard import annotations as keys
from memoryguard.controller.kubeapi import KubeApi, KubeApiError
from memoryguard.controller.ledger import rfc3339

log = logging.getLogger("memoryguard.controller.events")

NORMAL = "Normal"
WARNING = "Warning"
MAX_MESSAGE_CHARS = 1024

# Reasons (the REASON column of `kubectl get events`).
AT_RISK = "MemoryAtRisk"
RECLAIMED = "Reclaimed"
RECLAIM_FAILED = "ReclaimFailed"
DROPPED_CACHES = "DroppedCaches"
DROP_CACHES_FAILED = "DropCachesFailed"
RESTARTED = "RestartTriggered"
RESTART_DEFERRED = "RestartDeferred"
RESTART_BLOCKED = "RestartBlocked"
RESTART_FAILED = "RestartFailed"
EVICTED = "Evicted"
EVICTION_BLOCKED = "EvictionBlocked"
EVICTION_FAILED = "EvictionFailed"
AGENTS_DEGRADED = "AgentsDegraded"
INVALID_SPEC = "InvalidSpec"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    def to_dict(self) -> dict[str, str]:
        ref = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
        }
        if self.uid:
            ref["uid"] = self.uid
        return ref


def guard_ref(namespace: str, name: str, uid: str) -> ObjectRef:
    return ObjectRef(f"{keys.GROUP}/{keys.VERSION}", keys.KIND, namespace, name, uid)


def pod_ref(namespace: str, name: str, uid: str) -> ObjectRef:
    return ObjectRef("v1", "Pod", namespace, name, uid)


class EventPoster:
    def __init__(
        self,
        api: KubeApi,
        *,
        repeat_seconds: float = 600.0,
        clock: Callable[[], float] = time.time,
        instance: str | None = None,
    ) -> None:
        self._api = api
        self._repeat_seconds = repeat_seconds
        self._clock = clock
        self._instance = instance or socket.gethostname()
        self._last: dict[tuple[str, str, str], float] = {}
        self._sequence = 0
        self._pending: set[asyncio.Task[None]] = set()
        self.posted = 0
        self.failed = 0

    async def post(
        self,
        ref: ObjectRef,
        type_: str,
        reason: str,
        message: str,
        *,
        action: str = "",
        dedupe_key: str | None = None,
    ) -> bool:
        """Post one Event; with ``dedupe_key``, skip it when the same one was posted lately."""
        now = self._clock()
        if dedupe_key is not None:
            key = (ref.uid or f"{ref.kind}/{ref.namespace}/{ref.name}", reason, dedupe_key)
            last = self._last.get(key)
            if last is not None and now - last < self._repeat_seconds:
                return False
            self._last[key] = now
            if len(self._last) > 10_000:  # forget the oldest half rather than grow without bound
                for old in sorted(self._last, key=self._last.__getitem__)[:5_000]:
                    del self._last[old]
        self._sequence += 1
        stamp = rfc3339(now)
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                # client-go names events <object>.<unix nanoseconds in hex>; the sequence keeps two
                # events of the same nanosecond apart.
                "name": f"{ref.name}.{time.time_ns() + self._sequence:x}",
                "namespace": ref.namespace,
            },
            "involvedObject": ref.to_dict(),
            "type": type_,
            "reason": reason,
            "message": message,
            "action": action or reason,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": keys.EVENT_COMPONENT},
            "reportingComponent": keys.EVENT_COMPONENT,
            "reportingInstance": self._instance,
        }
        # Posted in the background: an Event is evidence for people, and must not hold up the
        # next container's judgement while the API server answers.
        task = asyncio.create_task(self._send(ref, body))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def _send(self, ref: ObjectRef, body: dict[str, Any]) -> None:
        try:
            await self._api.create_event(ref.namespace, body)
        except KubeApiError as exc:
            self.failed += 1
            log.warning("could not post %s event %s on %s/%s: %s", body["type"], body["reason"], ref.kind,
                        ref.name, exc)  # fmt: skip
            return
        self.posted += 1

    async def drain(self) -> None:
        """Wait for the Events still being posted (at shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=5)
