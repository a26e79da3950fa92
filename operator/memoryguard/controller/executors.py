"""Carrying out a decided action: the single place where MemoryGuard changes anything.

``Actuator.perform`` is the one write point: in dry-run it logs ``DRY-RUN: would …`` and
writes nothing; otherwise it patches the workload's pod template (restart), posts an Eviction
(bare pod), or asks the node's agent to reclaim or drop caches.

A restart patch that fails with a transient error (409, 429, 5xx, no answer) is retried, but
each retry first reads the workload back: if the pod template already carries this action's
restart id, the earlier attempt landed and is not repeated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from memoryguard import annotations as keys
from memoryguard.controller.agentclient import AgentClient, AgentError
from memoryguard.controller.kubeapi import KubeApi, KubeApiError
from memoryguard.controller.ledger import rfc3339
from memoryguard.controller.owners import Workload
from memoryguard.engine.decision import Action

log = logging.getLogger("memoryguard.controller.executors")

DONE = "done"
FAILED = "failed"
BLOCKED = "blocked"  # eviction refused by a PodDisruptionBudget: retry later
MAX_REASON_ANNOTATION_CHARS = 256


@dataclass(frozen=True, slots=True)
class ActionRequest:
    id: str
    action: Action
    guard: str  # namespace/name
    namespace: str
    pod: str
    pod_uid: str
    container: str
    container_id: str | None
    node: str
    workload: Workload | None
    agent_url: str | None
    reason: str
    reclaim_bytes: int | None = None
    drop_caches_level: int | None = None
    dry_run: bool = False

    @property
    def target(self) -> str:
        if self.action is Action.RESTART and self.workload is not None:
            return self.workload.ref
        if self.action is Action.EVICT:
            return f"pod/{self.pod}"
        if self.action is Action.DROP_CACHES:
            return f"node/{self.node}"
        return f"pod/{self.pod}/{self.container}"

    def describe(self) -> str:
        if self.action is Action.RESTART:
            return f"restart {self.target} (rollout restart, pod {self.pod} container {self.container})"
        if self.action is Action.EVICT:
            return f"evict pod {self.namespace}/{self.pod}"
        if self.action is Action.RECLAIM:
            return (
                f"reclaim {self.reclaim_bytes or 0} bytes from {self.namespace}/{self.pod}/{self.container}"
            )
        return f"drop_caches level {self.drop_caches_level} on node {self.node}"


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # done | failed | blocked
    message: str
    retry_after_seconds: float | None = None
    details: dict[str, Any] | None = None


def restart_annotations(request: ActionRequest, now_seconds: float) -> dict[str, str]:
    stamp = rfc3339(now_seconds)
    reason = (
        request.reason
        if len(request.reason) <= MAX_REASON_ANNOTATION_CHARS
        else (request.reason[: MAX_REASON_ANNOTATION_CHARS - 3] + "...")
    )
    return {
        keys.KUBECTL_RESTARTED_AT: stamp,
        keys.RESTARTED_AT: stamp,
        keys.RESTART_REASON: reason,
        keys.RESTART_ID: request.id,
        keys.RESTARTED_BY: request.guard,
    }


def carries_restart(workload: dict[str, Any] | None, restart_id: str) -> bool:
    """Does the workload's pod template already carry this restart (it landed earlier)?"""
    if not workload:
        return False
    template_meta = ((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return (template_meta.get("annotations") or {}).get(keys.RESTART_ID) == restart_id


class Actuator:
    def __init__(
        self,
        api: KubeApi,
        agents: AgentClient,
        *,
        clock: Callable[[], float],
        retries: int = 4,
        backoff_seconds: float = 0.2,
    ) -> None:
        self._api = api
        self._agents = agents
        self._clock = clock
        self._retries = retries
        self._backoff_seconds = backoff_seconds

    async def perform(self, request: ActionRequest) -> Outcome:
        """The one write point. Dry-run writes nothing and says what it would have written."""
        if request.dry_run:
            log.info("DRY-RUN: would %s: %s", request.describe(), request.reason)
            return Outcome(DONE, f"dry run: would {request.describe()}")
        if request.action is Action.RESTART:
            return await self._restart(request)
        if request.action is Action.EVICT:
            return await self._evict(request)
        if request.action is Action.RECLAIM:
            return await self._reclaim(request)
        if request.action is Action.DROP_CACHES:
            return await self._drop_caches(request)
        return Outcome(FAILED, f"nothing to do for action {request.action}")

    def _retrying(self) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._retries + 1),
            wait=tenacity.wait_exponential(multiplier=self._backoff_seconds, max=2.0),
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, KubeApiError) and e.transient),
            reraise=True,
        )

    async def _restart(self, request: ActionRequest) -> Outcome:
        workload = request.workload
        if workload is None or workload.bare_pod:
            return Outcome(FAILED, "no workload to restart")
        values = restart_annotations(request, self._clock())
        try:
            async for attempt in self._retrying():
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        current = await self._api.get_workload(
                            workload.kind, workload.namespace, workload.name
                        )
                        if carries_restart(current, request.id):
                            log.info(
                                "restart %s already landed (%s); not patching again", workload.ref, request.id
                            )
                            return Outcome(DONE, f"restarted {workload.ref} (confirmed on retry)")
                    await self._api.patch_pod_template_annotations(
                        workload.kind, workload.namespace, workload.name, values
                    )
        except KubeApiError as exc:
            return Outcome(FAILED, f"patching {workload.ref} failed: {exc}")
        return Outcome(
            DONE, f"restarted {workload.ref}: pod template annotated at {values[keys.RESTARTED_AT]}"
        )

    async def _evict(self, request: ActionRequest) -> Outcome:
        try:
            async for attempt in self._retrying():
                with attempt:
                    result = await self._api.evict_pod(request.namespace, request.pod, request.pod_uid)
        except KubeApiError as exc:
            return Outcome(FAILED, f"evicting {request.pod} failed: {exc}")
        if result.outcome == "blocked":
            return Outcome(
                BLOCKED,
                f"a PodDisruptionBudget does not allow evicting {request.pod} now: {result.message}",
                retry_after_seconds=result.retry_after_seconds,
            )
        if result.outcome == "gone":
            return Outcome(DONE, f"pod {request.pod} is already gone")
        return Outcome(DONE, f"evicted pod {request.namespace}/{request.pod}")

    async def _reclaim(self, request: ActionRequest) -> Outcome:
        if request.agent_url is None:
            return Outcome(FAILED, f"no agent on node {request.node}")
        try:
            answer = await self._agents.reclaim(
                request.agent_url, request.pod_uid, request.container_id, int(request.reclaim_bytes or 0)
            )
        except AgentError as exc:
            return Outcome(
                FAILED, f"reclaim on {request.node} failed: {exc.status or 'unreachable'} {exc.message}"
            )
        freed = answer.get("freed_bytes")
        partial = " (partial: the kernel reclaimed less than asked)" if answer.get("partial") else ""
        return Outcome(
            DONE,
            f"reclaimed {freed if freed is not None else '?'} of {request.reclaim_bytes} bytes{partial}",
            details=answer,
        )

    async def _drop_caches(self, request: ActionRequest) -> Outcome:
        if request.agent_url is None:
            return Outcome(FAILED, f"no agent on node {request.node}")
        try:
            answer = await self._agents.drop_caches(request.agent_url, int(request.drop_caches_level or 1))
        except AgentError as exc:
            return Outcome(
                FAILED,
                f"drop_caches on {request.node} failed: {exc.status or 'unreachable'} {exc.message}",
                retry_after_seconds=exc.retry_after_seconds,
            )
        return Outcome(
            DONE,
            f"dropped caches (level {request.drop_caches_level}), freed {answer.get('freed_bytes')} bytes",
        )


async def intent_landed(
    api: KubeApi, entry_action: str, target: str, namespace: str, entry_id: str, pod_uid: str | None
) -> bool | None:
    """After an operator restart: did this unresolved intent's action happen? None: cannot tell."""
    kind_name = target.split("/", 2)
    if entry_action == Action.RESTART.value and len(kind_name) == 2:
        kind = {"deployment": "Deployment", "statefulset": "StatefulSet", "daemonset": "DaemonSet"}.get(
            kind_name[0]
        )
        if kind is None:
            return None
        workload = await api.get_workload(kind, namespace, kind_name[1])
        return carries_restart(workload, entry_id)
    if entry_action == Action.EVICT.value and len(kind_name) == 2:
        pod = await api.get_pod(namespace, kind_name[1])
        if pod is None:
            return True
        meta = pod.get("metadata") or {}
        return bool(meta.get("deletionTimestamp")) or (pod_uid is not None and meta.get("uid") != pod_uid)
    return None
