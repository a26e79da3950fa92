"""The operator's view of the cluster's pods: a list-then-watch informer of its own.

Kopf gives every object of a watched kind its own worker task, and while it pre-populates an
index at start-up each newly listed object wakes every worker already waiting on one shared
condition (``ToggleSet.make_toggle`` and ``drop_toggle`` call ``notify_all``): start-up cost
grows with the square of the pod count (docs/operator.md has the measurements). MemoryGuard
needs a few fields of each pod, not a worker per pod, so Kopf keeps the MemoryGuard
resources, their timers and peering, and the pods are watched here:

    LIST, page by page ─► store: namespace → uid → PodInfo ─► WATCH from the list's version
          ▲                                                      │ ADDED MODIFIED DELETED BOOKMARK
          └──── 410 Gone, or no version to resume from ◄─────────┘ (reconnect with backoff)

Guards read the store through selections (one per namespace and label selector), kept up to
date event by event, so a guard cycle costs the guard's own pods, not its namespace's. Agent
pods come through the same stream and are kept by node.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import tenacity

from memoryguard import annotations as keys
from memoryguard.controller.cycle import AgentEndpoint, agent_endpoint
from memoryguard.controller.kubeapi import KubeApi, KubeApiError
from memoryguard.controller.metrics import OperatorMetrics
from memoryguard.controller.pods import PodInfo, Selector, pod_info
from memoryguard.controller.settings import OperatorConfig

log = logging.getLogger("memoryguard.controller.informer")

# A selection no guard asked for in this long is dropped (its guard was deleted or changed).
SELECTION_IDLE_SECONDS = 300.0
# After a watch ends, wait this long before resuming it.
RESUME_DELAY_SECONDS = 1.0


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): only a new LIST can resume."""


@dataclass
class _Selection:
    namespace: str
    selector: Selector
    pods: dict[str, PodInfo]
    used_seconds: float


def watch_scopes(namespaces: tuple[str, ...]) -> tuple[list[str], Callable[[str], bool]]:
    """What to list and watch (``""``: every namespace) and which namespaces to keep.

    Named namespaces are watched one by one; glob patterns (or none: cluster-wide) need the
    cluster-wide watch, filtered here."""
    if namespaces and not any(any(ch in n for ch in "*?[") for n in namespaces):
        return list(namespaces), lambda _: True
    if not namespaces:
        return [""], lambda _: True
    return [""], lambda namespace: any(fnmatch.fnmatchcase(namespace, n) for n in namespaces)


def selector_key(selector: Selector) -> Hashable:
    return (tuple(sorted(selector.match_labels.items())), selector.expressions)


class PodInformer:
    def __init__(
        self,
        api: KubeApi,
        config: OperatorConfig,
        *,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._scopes, self._wanted = watch_scopes(config.namespaces)
        self._pods: dict[str, dict[str, PodInfo]] = {}  # namespace -> pod uid -> what a cycle needs
        self._agent_pods: dict[str, tuple[str, AgentEndpoint]] = {}  # pod uid -> (namespace, endpoint)
        self._agents_by_node: dict[str, AgentEndpoint] | None = None  # rebuilt when agents change
        self._selections: dict[tuple[str, Hashable], _Selection] = {}
        self._versions: dict[str, str | None] = dict.fromkeys(self._scopes)
        self._listed: set[str] = set()
        self._swept_seconds = clock()
        self.synced = asyncio.Event()

    # --- what guard cycles read ------------------------------------------------------------------

    def selected(self, namespace: str, selector: Selector) -> list[PodInfo]:
        """The pods of ``namespace`` that ``selector`` matches (running or not)."""
        now = self._clock()
        key = (namespace, selector_key(selector))
        selection = self._selections.get(key)
        if selection is None:
            pods = self._pods.get(namespace, {})
            selection = self._selections[key] = _Selection(
                namespace,
                selector,
                {uid: pod for uid, pod in pods.items() if selector.matches(pod.labels)},
                now,
            )
        selection.used_seconds = now
        if now - self._swept_seconds > SELECTION_IDLE_SECONDS / 5:
            self._swept_seconds = now
            for stale in [
                k for k, s in self._selections.items() if now - s.used_seconds > SELECTION_IDLE_SECONDS
            ]:
                del self._selections[stale]
        return list(selection.pods.values())

    def agents(self) -> dict[str, AgentEndpoint]:
        """The agent to ask on each node."""
        if self._agents_by_node is None:
            by_node: dict[str, AgentEndpoint] = {}
            for _, endpoint in self._agent_pods.values():
                by_node.setdefault(endpoint.node, endpoint)
            self._agents_by_node = by_node
        return self._agents_by_node

    def __len__(self) -> int:
        return sum(len(pods) for pods in self._pods.values())

    # --- keeping it up to date -------------------------------------------------------------------

    async def run(self) -> None:
        """List and watch every scope until cancelled."""
        await asyncio.gather(*(self._follow(scope) for scope in self._scopes))

    async def _follow(self, scope: str) -> None:
        while True:
            retrying = tenacity.AsyncRetrying(
                wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=30.0),
                retry=tenacity.retry_if_exception_type(Exception),
                before_sleep=lambda state: log.warning(
                    "pods%s: %s; retrying",
                    f" in {scope}" if scope else "",
                    state.outcome.exception() if state.outcome else "?",
                ),
            )
            async for attempt in retrying:
                with attempt:
                    await self._session(scope)

    async def _session(self, scope: str) -> None:
        """One LIST (when there is no version to resume from) and one WATCH. Returns when the
        watch ended after making progress; raises when nothing could be read (backoff)."""
        where = f" in {scope}" if scope else ""
        if self._versions[scope] is None:
            self._versions[scope] = await self._relist(scope)
        progressed = False
        try:
            async for event in self._api.watch_pods(scope, self._versions[scope]):
                self._versions[scope] = self._apply(event, self._versions[scope])
                progressed = True
        except _Expired:
            log.info("pods%s: watch version expired; listing again", where)
            self._versions[scope] = None
            return
        except KubeApiError as exc:
            if not progressed:
                raise
            log.info("pods%s: watch ended: %s; resuming", where, exc)
        # Nothing is lost while waiting: the watch resumes from the last version it saw. A
        # server that ends watches at once (or assigns no versions, as KMock) is not hammered.
        await asyncio.sleep(RESUME_DELAY_SECONDS)

    async def _relist(self, scope: str) -> str | None:
        pods: dict[str, dict[str, PodInfo]] = {}
        agents: dict[str, tuple[str, AgentEndpoint]] = {}
        version: str | None = None
        async for page in self._api.list_pods(scope):
            for body in page.get("items") or ():
                parsed = self._parse(body)
                if parsed is None:
                    continue
                namespace, pod, endpoint = parsed
                pods.setdefault(namespace, {})[pod.uid] = pod
                if endpoint is not None:
                    agents[pod.uid] = (namespace, endpoint)
            version = version or (page.get("metadata") or {}).get("resourceVersion") or None
            await asyncio.sleep(0)  # guard cycles run between pages
        covered = (lambda _: True) if scope == "" else (lambda namespace: namespace == scope)
        for namespace in [ns for ns in self._pods if covered(ns)]:
            del self._pods[namespace]
        self._pods.update(pods)
        self._agent_pods = {uid: a for uid, a in self._agent_pods.items() if not covered(a[0])} | agents
        self._agents_by_node = None
        for selection in self._selections.values():
            if covered(selection.namespace):
                members = self._pods.get(selection.namespace, {})
                selection.pods = {u: p for u, p in members.items() if selection.selector.matches(p.labels)}
        listed = sum(len(p) for p in pods.values())
        log.info("pods%s: %d listed", f" in {scope}" if scope else "", listed)
        if self._metrics is not None:
            self._metrics.pod_lists.inc()
            self._metrics.pods_indexed.set(len(self))
        self._listed.add(scope)
        if self._listed.issuperset(self._scopes):
            self.synced.set()
        return version

    def _apply(self, event: Mapping[str, Any], version: str | None) -> str | None:
        kind = str(event.get("type"))
        body = event.get("object") or {}
        if self._metrics is not None:
            self._metrics.pod_watch_events.labels(kind).inc()
        if kind == "ERROR":
            code = int(body.get("code") or 0)
            if code == 410:
                raise _Expired()
            raise KubeApiError(code, f"watch error: {body.get('message') or body}")
        new_version = (body.get("metadata") or {}).get("resourceVersion") or version
        if kind == "BOOKMARK":
            return new_version
        parsed = self._parse(body)
        if parsed is None:
            return new_version
        namespace, pod, endpoint = parsed
        if kind == "DELETED":
            self._remove(namespace, pod.uid)
        else:
            self._store(namespace, pod, endpoint)
        if self._metrics is not None:
            self._metrics.pods_indexed.set(len(self))
        return new_version

    def _store(self, namespace: str, pod: PodInfo, endpoint: AgentEndpoint | None) -> None:
        self._pods.setdefault(namespace, {})[pod.uid] = pod
        for selection in self._selections.values():
            if selection.namespace != namespace:
                continue
            if selection.selector.matches(pod.labels):
                selection.pods[pod.uid] = pod
            else:
                selection.pods.pop(pod.uid, None)
        known = self._agent_pods.get(pod.uid)
        if endpoint is not None and (known is None or known[1] != endpoint):
            self._agent_pods[pod.uid] = (namespace, endpoint)
            self._agents_by_node = None
        elif endpoint is None and known is not None:
            del self._agent_pods[pod.uid]
            self._agents_by_node = None

    def _remove(self, namespace: str, uid: str) -> None:
        pods = self._pods.get(namespace)
        if pods is not None:
            pods.pop(uid, None)
            if not pods:
                del self._pods[namespace]
        for selection in self._selections.values():
            if selection.namespace == namespace:
                selection.pods.pop(uid, None)
        if self._agent_pods.pop(uid, None) is not None:
            self._agents_by_node = None

    def _parse(self, body: Mapping[str, Any]) -> tuple[str, PodInfo, AgentEndpoint | None] | None:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        if not name or not self._wanted(namespace):
            return None
        uid = str(meta.get("uid") or f"{namespace}/{name}")
        spec, status = body.get("spec") or {}, body.get("status") or {}
        pod = pod_info(namespace, name, uid, meta, spec, status)
        return namespace, pod, self._agent_endpoint(namespace, name, meta, spec, status)

    def _agent_endpoint(
        self,
        namespace: str,
        name: str,
        meta: Mapping[str, Any],
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
    ) -> AgentEndpoint | None:
        """The address of an agent pod that can answer now; None for any other pod."""
        config = self._config
        if config.agent_namespace and namespace != config.agent_namespace:
            return None
        labels = meta.get("labels") or {}
        if not config.agent_labels or any(labels.get(k) != v for k, v in config.agent_labels.items()):
            return None
        node, pod_ip = spec.get("nodeName"), status.get("podIP")
        if not node or not pod_ip or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            return None
        port = next(
            (
                p.get("containerPort")
                for c in spec.get("containers") or ()
                for p in c.get("ports") or ()
                if p.get("name") == keys.AGENT_PORT_NAME
            ),
            None,
        )
        return agent_endpoint(config, str(pod_ip), str(node), name, port)
