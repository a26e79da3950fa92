"""The operator's own Kubernetes API calls (Kopf makes the MemoryGuard watch, its bookkeeping
and peering calls).

This is the only module that talks to the API server for MemoryGuard: listing and watching
pods, reading workloads and pods, patching pod templates, evicting, posting Events, writing
MemoryGuard status. Each method names the RBAC it needs, and the chart's RBAC is derived
from them.

The official client is synchronous, so every call runs in a worker thread. A watch would hold
a thread for its whole life, so watches go through aiohttp, with the same credentials and TLS
settings taken from the client's configuration. Bodies are plain JSON dicts in and out: the
client's models are not needed to patch two annotations.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import kubernetes
import urllib3

from memoryguard import annotations as keys
from memoryguard.controller.settings import OperatorConfig

log = logging.getLogger("memoryguard.controller.kubeapi")

MERGE_PATCH = "application/merge-patch+json"

# kind -> (API path prefix, plural)
WORKLOADS: dict[str, tuple[str, str]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
}

# Pods listed per page: a page of real pods is a few MiB of JSON, never the whole cluster at once.
LIST_PAGE_SIZE = 500
# The API server ends a watch after this long; the informer then resumes from its last version.
WATCH_SECONDS = 290

# What each method needs, for the chart's RBAC (verbs per group/resource).
RBAC: dict[str, tuple[str, ...]] = {
    "apps/deployments": ("get", "patch"),
    "apps/statefulsets": ("get", "patch"),
    "apps/daemonsets": ("get", "patch"),
    "apps/replicasets": ("get",),
    "core/pods": ("get", "list", "watch"),
    "core/pods/eviction": ("create",),
    "core/events": ("create",),
    "memoryguard.io/memoryguards": ("get",),
    "memoryguard.io/memoryguards/status": ("patch",),
}


class ApiObserver(Protocol):
    """Told about every call: which verb on which resource, its answer, and where its time went."""

    def observe_api(
        self, verb: str, resource: str, code: int, *, queued_seconds: float, call_seconds: float
    ) -> None: ...


class KubeApiError(Exception):
    """A failed API call: ``status`` 0 means no HTTP answer (connection, timeout)."""

    def __init__(self, status: int, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(f"{status or 'no answer'}: {message}")
        self.status = status
        self.message = message
        self.retry_after_seconds = retry_after_seconds

    @property
    def transient(self) -> bool:
        """Worth retrying: no answer, a conflict, throttling, or a server-side failure."""
        return self.status == 0 or self.status in (409, 429) or self.status >= 500

    @property
    def not_found(self) -> bool:
        return self.status == 404


@dataclass(frozen=True, slots=True)
class Eviction:
    """The Eviction API's answer: evicted, blocked by a PodDisruptionBudget (429), or gone."""

    outcome: str  # "evicted" | "blocked" | "gone"
    message: str = ""
    retry_after_seconds: float | None = None


def client_configuration(config: OperatorConfig) -> kubernetes.client.Configuration:
    """In-cluster credentials, else the kubeconfig; an explicit ``--api-server`` wins (tests, dev)."""
    configuration = kubernetes.client.Configuration()
    if config.api_server:
        configuration.host = config.api_server.rstrip("/")
        configuration.verify_ssl = not config.api_insecure
        return configuration
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return configuration


class KubeApi:
    def __init__(
        self,
        configuration: kubernetes.client.Configuration,
        *,
        timeout_seconds: float,
        threads: int = 8,
        observer: ApiObserver | None = None,
    ) -> None:
        # One pooled connection per client thread: urllib3's default (5 per core) is fewer, and
        # a thread finding the pool empty opens a new connection and throws it away afterwards.
        configuration.connection_pool_maxsize = max(threads, configuration.connection_pool_maxsize or 0)
        self._configuration = configuration
        self._client = kubernetes.client.ApiClient(configuration)
        self._timeout_seconds = timeout_seconds
        self._observer = observer

    def close(self) -> None:
        self._client.close()

    # --- generic request -----------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        submitted = time.perf_counter()
        return await asyncio.to_thread(self._request_sync, method, path, body, content_type, query, submitted)

    def _request_sync(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        content_type: str,
        query: Mapping[str, str] | None,
        submitted: float,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        code = 0
        try:
            answer, code = self._exchange(method, path, body, content_type, query)
            return answer
        except KubeApiError as exc:
            code = exc.status
            raise
        finally:
            if self._observer is not None:
                self._observer.observe_api(
                    method,
                    resource_of(path),
                    code,
                    queued_seconds=started - submitted,
                    call_seconds=time.perf_counter() - started,
                )

    def _exchange(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        content_type: str,
        query: Mapping[str, str] | None,
    ) -> tuple[dict[str, Any], int]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, serialized, _ = self._client.param_serialize(
            method,
            path,
            query_params=list(query.items()) if query else None,
            header_params=headers,
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(
                method, url, header_params=headers, body=serialized, _request_timeout=self._timeout_seconds
            )
            response.read()
        except urllib3.exceptions.HTTPError as exc:
            raise KubeApiError(0, f"{method} {path}: {exc}") from exc
        except kubernetes.client.exceptions.ApiException as exc:
            raise KubeApiError(exc.status or 0, f"{method} {path}: {exc.reason}") from exc
        raw = response.data or b"{}"
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"message": raw[:200].decode(errors="replace")}
        if response.status >= 300:
            retry_after = response.getheader("Retry-After")
            message = answer.get("message") if isinstance(answer, dict) else None
            raise KubeApiError(
                response.status,
                f"{method} {path}: {message or response.reason}",
                retry_after_seconds=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        return (answer if isinstance(answer, dict) else {}), response.status

    async def stream(
        self, path: str, query: Mapping[str, str], *, read_timeout_seconds: float
    ) -> AsyncIterator[dict[str, Any]]:
        """GET a watch and yield each event (one JSON object a line) as it arrives."""
        configuration = self._configuration
        headers = {"Accept": "application/json"}
        bearer = configuration.auth_settings().get("BearerToken")  # runs the token refresh hook
        if bearer and bearer.get("value"):
            headers["Authorization"] = str(bearer["value"])
        elif configuration.username:
            headers["Authorization"] = configuration.get_basic_auth_token() or ""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout_seconds, sock_read=read_timeout_seconds
        )
        extra: dict[str, Any] = {}
        if configuration.proxy:
            extra["proxy"] = configuration.proxy
        if getattr(configuration, "tls_server_name", None):
            extra["server_hostname"] = configuration.tls_server_name
        url = configuration.host.rstrip("/") + path
        tls: ssl.SSLContext | bool = _ssl_context(configuration) if url.startswith("https") else False
        connector = aiohttp.TCPConnector(ssl=tls)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.get(url, params=dict(query), headers=headers, **extra) as response,
            ):
                if response.status >= 300:
                    text = await response.text()
                    raise KubeApiError(response.status, f"WATCH {path}: {text[:200]}")
                buffer = bytearray()
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    start = 0
                    while (end := buffer.find(b"\n", start)) >= 0:
                        line = bytes(buffer[start:end]).strip()
                        start = end + 1
                        if line:
                            event = json.loads(line)
                            if isinstance(event, dict):
                                yield event
                    del buffer[:start]
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise KubeApiError(0, f"WATCH {path}: {type(exc).__name__}: {exc}") from exc

    # --- pods: the informer's list and watch -------------------------------------------------

    async def list_pods(self, namespace: str) -> AsyncIterator[dict[str, Any]]:
        """LIST pods a page at a time (``limit`` and ``continue``); ``""`` lists every namespace.
        Each page's ``metadata.resourceVersion`` is where a watch resumes after the last one."""
        path = f"/api/v1/namespaces/{_q(namespace)}/pods" if namespace else "/api/v1/pods"
        token: str | None = None
        while True:
            query = {"limit": str(LIST_PAGE_SIZE)}
            if token:
                query["continue"] = token
            page = await self.request("GET", path, query=query)
            yield page
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    async def watch_pods(self, namespace: str, resource_version: str | None) -> AsyncIterator[dict[str, Any]]:
        """WATCH pods from ``resource_version`` (None: the current state first, as ADDED events),
        with bookmarks; ends when the server closes the watch (after ``WATCH_SECONDS``)."""
        path = f"/api/v1/namespaces/{_q(namespace)}/pods" if namespace else "/api/v1/pods"
        query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        if resource_version:
            query["resourceVersion"] = resource_version
        async for event in self.stream(path, query, read_timeout_seconds=WATCH_SECONDS + 30):
            yield event

    # --- workloads -----------------------------------------------------------------------------

    async def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """GET a Deployment, StatefulSet, DaemonSet or ReplicaSet; None when it does not exist."""
        prefix, plural = WORKLOADS[kind]
        try:
            return await self.request("GET", f"{prefix}/namespaces/{_q(namespace)}/{plural}/{_q(name)}")
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise

    async def patch_pod_template_annotations(
        self, kind: str, namespace: str, name: str, values: Mapping[str, str]
    ) -> dict[str, Any]:
        """Merge-patch ``spec.template.metadata.annotations``: what ``kubectl rollout restart`` does."""
        prefix, plural = WORKLOADS[kind]
        body = {"spec": {"template": {"metadata": {"annotations": dict(values)}}}}
        return await self.request(
            "PATCH",
            f"{prefix}/namespaces/{_q(namespace)}/{plural}/{_q(name)}",
            body,
            content_type=MERGE_PATCH,
            query={"fieldManager": keys.FIELD_MANAGER},
        )

    # --- pods ----------------------------------------------------------------------------------

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", f"/api/v1/namespaces/{_q(namespace)}/pods/{_q(name)}")
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise

    async def evict_pod(self, namespace: str, name: str, uid: str) -> Eviction:
        """POST a policy/v1 Eviction; the uid precondition keeps a same-named successor safe."""
        body: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        if uid:
            body["deleteOptions"] = {"preconditions": {"uid": uid}}
        try:
            await self.request("POST", f"/api/v1/namespaces/{_q(namespace)}/pods/{_q(name)}/eviction", body)
        except KubeApiError as exc:
            if exc.status == 429:  # a PodDisruptionBudget does not allow it now
                return Eviction("blocked", exc.message, exc.retry_after_seconds)
            if exc.status == 404:
                return Eviction("gone", exc.message)
            if exc.status == 409 and "precondition" in exc.message.lower():
                return Eviction("gone", f"the pod was replaced: {exc.message}")
            raise
        return Eviction("evicted")

    # --- events and status ---------------------------------------------------------------------

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self.request("POST", f"/api/v1/namespaces/{_q(namespace)}/events", body)

    async def patch_guard_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        path = f"/apis/{keys.GROUP}/{keys.VERSION}/namespaces/{_q(namespace)}/{keys.PLURAL}/{_q(name)}/status"
        return await self.request(
            "PATCH",
            path,
            {"status": dict(status)},
            content_type=MERGE_PATCH,
            query={"fieldManager": keys.FIELD_MANAGER},
        )

    async def get_guard(self, namespace: str, name: str) -> dict[str, Any] | None:
        path = f"/apis/{keys.GROUP}/{keys.VERSION}/namespaces/{_q(namespace)}/{keys.PLURAL}/{_q(name)}"
        try:
            return await self.request("GET", path)
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise


def _ssl_context(configuration: kubernetes.client.Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


def resource_of(path: str) -> str:
    """``deployments``, ``memoryguards/status``, ``pods/eviction``…: a metric label, never a name."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts[:-1]:
        parts = parts[parts.index("namespaces") + 2 :]
    else:
        parts = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if not parts:
        return "unknown"
    return parts[0] + (f"/{parts[2]}" if len(parts) > 2 else "")


def _q(segment: str) -> str:
    return quote(segment, safe="")
