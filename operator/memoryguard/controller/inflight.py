"""Restarts still rolling out, across every guard this operator runs: the cluster-wide cap.

Each guard's budget bounds how often *its* workloads are restarted; this bounds how many
rollouts MemoryGuard has under way at once, whatever guard asked for them — a node-wide
memory problem that makes fifty guards want a restart in the same minute must not take fifty
workloads through a rollout together.

A restart is in flight from the moment it is patched until ``kubectl rollout status`` would
call it complete (read from the workload when the count is needed, which is only when some
container wants a restart), an eviction until its pod is gone — or, whichever comes first,
until ``max_seconds`` have passed: a rollout stuck for that long is a problem for the
workload's owners, not a reason to hold every other guard back forever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from memoryguard.controller.kubeapi import KubeApi, KubeApiError
from memoryguard.controller.owners import Workload, rollout_in_progress

log = logging.getLogger("memoryguard.controller.inflight")

KINDS = {"deployment": "Deployment", "statefulset": "StatefulSet", "daemonset": "DaemonSet", "pod": "Pod"}


def workload_from_target(namespace: str, target: str) -> Workload | None:
    """``deployment/web`` (a ledger entry's target) as a Workload; None for other targets."""
    kind, sep, name = target.partition("/")
    if not sep or not name or "/" in name or kind not in KINDS:
        return None
    return Workload(KINDS[kind], namespace, name)


@dataclass
class RestartsInFlight:
    max_seconds: float = 1800.0
    _started: dict[tuple[str, str, str], tuple[Workload, float]] = field(default_factory=dict)

    def add(self, workload: Workload, started_seconds: float) -> None:
        key = (workload.kind, workload.namespace, workload.name)
        known = self._started.get(key)
        if known is None or known[1] < started_seconds:
            self._started[key] = (workload, started_seconds)

    def __len__(self) -> int:
        return len(self._started)

    async def count(self, api: KubeApi, now_seconds: float) -> int:
        """How many are still in flight; the finished ones are forgotten. A workload that
        cannot be read counts as still rolling out (the cap errs on the side of waiting)."""
        for key, (workload, started) in list(self._started.items()):
            if now_seconds - started >= self.max_seconds:
                del self._started[key]
                continue
            try:
                if workload.bare_pod:
                    done = await api.get_pod(workload.namespace, workload.name) is None
                else:
                    body = await api.get_workload(workload.kind, workload.namespace, workload.name)
                    done = body is None or rollout_in_progress(body) is None
            except KubeApiError as exc:
                log.warning("cannot tell whether %s still rolls out: %s", workload.ref, exc)
                continue
            if done:
                del self._started[key]
        return len(self._started)
