"""The operator's client of the node agents' HTTP API (docs/agent-api.md).

One aiohttp session for all agents; a semaphore bounds how many requests are in flight at
once across every guard; each request has a timeout; transient failures are retried with
exponential backoff (tenacity). Reads are retried on any transient failure. Actions are
retried only when the agent surely did not act: the connection was refused, or the agent
answered 503 because it could not check our credentials yet.

The operator authenticates with its ServiceAccount token, re-read when the kubelet rotates it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import aiohttp
import tenacity

from memoryguard.controller.aio import gather_or_cancel
from memoryguard.engine.model import Sample

log = logging.getLogger("memoryguard.controller.agentclient")

MAX_UIDS_PER_REQUEST = 500  # the agent accepts 1000; stay well under it


class AgentError(Exception):
    """An agent could not be asked, or refused. ``status`` 0 means no HTTP answer."""

    def __init__(
        self, url: str, status: int, message: str, *, retry_after_seconds: float | None = None
    ) -> None:
        super().__init__(f"{url}: {status or 'unreachable'}: {message}")
        self.url = url
        self.status = status
        self.message = message
        self.retry_after_seconds = retry_after_seconds

    @property
    def unreachable(self) -> bool:
        return self.status == 0 or self.status >= 500


class _Retryable(Exception):
    """A transient failure worth another attempt; carries the AgentError to raise when out of tries."""

    def __init__(self, error: AgentError) -> None:
        super().__init__(str(error))
        self.error = error


class TokenSource:
    """The ServiceAccount token, re-read when the file changes (projected tokens rotate)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._mtime_ns: int | None = None
        self._token: str | None = None

    def token(self) -> str | None:
        if self._path is None:
            return None
        try:
            mtime_ns = os.stat(self._path).st_mtime_ns
        except FileNotFoundError:
            return None
        if mtime_ns != self._mtime_ns:
            self._token = self._path.read_text().strip() or None
            self._mtime_ns = mtime_ns
        return self._token


@dataclass(frozen=True, slots=True)
class ContainerReading:
    """One container in an agent's answer. Rows stay raw until asked for: a first window
    holds hundreds of rows, most of which the history thins away unbuilt."""

    container_id: str
    latest_t_seconds: float | None
    raw_rows: Sequence[Sequence[Any]] = ()
    columns: tuple[str, ...] = ()
    latest_raw: dict[str, Any] | None = None

    def sample(self, row: Sequence[Any]) -> Sample:
        return _row_builder(self.columns)(row)

    @property
    def t_index(self) -> int:
        return self.columns.index("t_seconds")

    @property
    def rows(self) -> tuple[Sample, ...]:
        return tuple(map(_row_builder(self.columns), self.raw_rows)) if self.raw_rows else ()

    @property
    def latest(self) -> Sample | None:
        return Sample.from_dict(self.latest_raw) if self.latest_raw else None


_FIELDS = fields(Sample)
_REQUIRED = frozenset(f.name for f in _FIELDS if f.default is MISSING)
_BUILDERS: dict[tuple[str, ...], Callable[[Sequence[Any]], Sample]] = {}


def _row_builder(columns: Sequence[str]) -> Callable[[Sequence[Any]], Sample]:
    """A fast row -> Sample converter for one column layout (thousands of rows per cycle)."""
    key = tuple(columns)
    builder = _BUILDERS.get(key)
    if builder is None:
        index = {name: i for i, name in enumerate(key)}
        missing = sorted(_REQUIRED - index.keys())
        if missing:
            raise ValueError(f"window.columns lacks {', '.join(missing)}")
        picks: list[tuple[int, Any]] = [(index.get(f.name, -1), f.default) for f in _FIELDS]

        def builder(row: Sequence[Any]) -> Sample:
            return Sample(*[row[i] if i >= 0 else default for i, default in picks])

        if len(_BUILDERS) < 64:
            _BUILDERS[key] = builder
    return builder


@dataclass(frozen=True, slots=True)
class PodReading:
    pod_uid: str
    containers: dict[str, ContainerReading]  # by container id


@dataclass(frozen=True, slots=True)
class NodeReading:
    """One agent's answer to ``GET /v1/pods``."""

    node: str
    now_seconds: float
    interval_seconds: float
    pods: dict[str, PodReading]  # by pod uid
    missing: frozenset[str]
    cgroup_version: int = 2


def parse_pods_answer(body: dict[str, Any]) -> NodeReading:
    """Turn the agent's JSON into samples; rows use the Sample field names (see the API doc)."""
    pods: dict[str, PodReading] = {}
    for pod in body.get("pods") or []:
        containers: dict[str, ContainerReading] = {}
        for container in pod.get("containers") or []:
            window = container.get("window") or {}
            raw_rows = window.get("rows") or ()
            columns = tuple(window.get("columns") or ())
            if raw_rows:
                _row_builder(columns)  # a malformed layout fails here, as a malformed answer
            latest = container.get("latest") or None
            containers[container["container_id"]] = ContainerReading(
                container_id=container["container_id"],
                latest_t_seconds=float(latest["t_seconds"]) if latest else None,
                raw_rows=raw_rows,
                columns=columns,
                latest_raw=latest,
            )
        pods[pod["pod_uid"]] = PodReading(pod_uid=pod["pod_uid"], containers=containers)
    return NodeReading(
        node=str(body.get("node", "")),
        now_seconds=float(body["now_seconds"]),
        interval_seconds=float(body.get("interval_seconds") or 1.0),
        pods=pods,
        missing=frozenset(body.get("missing") or ()),
        cgroup_version=int(body.get("cgroup_version") or 2),
    )


class AgentClient:
    def __init__(
        self,
        *,
        tokens: TokenSource,
        timeout_seconds: float = 2.0,
        concurrency: int = 64,
        retries: int = 2,
        backoff_seconds: float = 0.1,
    ) -> None:
        self._tokens = tokens
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds, connect=min(1.0, timeout_seconds))
        self._semaphore = asyncio.Semaphore(concurrency)
        self._retries = retries
        self._backoff_seconds = backoff_seconds
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    def _headers(self) -> dict[str, str]:
        token = self._tokens.token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _with_retries(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        params: Iterable[tuple[str, str]] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._retries + 1),
            wait=tenacity.wait_exponential(multiplier=self._backoff_seconds, max=1.0),
            retry=tenacity.retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._call(method, url, idempotent=idempotent, params=params, json=json)
        except _Retryable as exc:
            raise exc.error from None
        raise AssertionError("unreachable")  # pragma: no cover

    # --- reads ---------------------------------------------------------------------------------

    async def fetch_pods(
        self,
        base_url: str,
        pod_uids: Sequence[str],
        *,
        window_seconds: float,
        since_seconds: float | None = None,
    ) -> NodeReading:
        """The pods' latest samples and window rows (only rows after ``since_seconds`` if given)."""
        readings = await gather_or_cancel(
            *(
                self._fetch_chunk(base_url, chunk, window_seconds=window_seconds, since_seconds=since_seconds)
                for chunk in _chunks(pod_uids, MAX_UIDS_PER_REQUEST)
            )
        )
        if len(readings) == 1:
            return readings[0]
        first = readings[0]
        pods: dict[str, PodReading] = {}
        missing: set[str] = set()
        for reading in readings:
            pods.update(reading.pods)
            missing |= reading.missing
        return NodeReading(
            first.node,
            first.now_seconds,
            first.interval_seconds,
            pods,
            frozenset(missing),
            first.cgroup_version,
        )

    async def _fetch_chunk(
        self, base_url: str, pod_uids: Sequence[str], *, window_seconds: float, since_seconds: float | None
    ) -> NodeReading:
        params: list[tuple[str, str]] = [("uid", uid) for uid in pod_uids]
        params.append(("window_seconds", f"{window_seconds:g}"))
        if since_seconds is not None:
            params.append(("since_seconds", repr(since_seconds)))
        url = f"{base_url.rstrip('/')}/v1/pods"
        body = await self._with_retries("GET", url, idempotent=True, params=params)
        try:
            return parse_pods_answer(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise AgentError(url, 200, f"malformed answer: {type(exc).__name__}: {exc}") from exc

    # --- actions -------------------------------------------------------------------------------

    async def reclaim(
        self, base_url: str, pod_uid: str, container_id: str | None, bytes_: int
    ) -> dict[str, Any]:
        payload = {"pod_uid": pod_uid, "container_id": container_id, "bytes": int(bytes_)}
        return await self._act(f"{base_url.rstrip('/')}/v1/reclaim", payload)

    async def drop_caches(self, base_url: str, level: int) -> dict[str, Any]:
        return await self._act(f"{base_url.rstrip('/')}/v1/drop-caches", {"level": int(level)})

    async def _act(self, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._with_retries("POST", url, idempotent=False, json=payload)

    # --- transport -----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        params: Iterable[tuple[str, str]] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One HTTP exchange. Raises _Retryable when another attempt is worth it and safe."""
        session = self._client_session()
        async with self._semaphore:
            try:
                async with session.request(
                    method, url, params=list(params or ()), json=json, headers=self._headers()
                ) as response:
                    try:
                        body = await response.json(content_type=None)
                    except ValueError:
                        body = {"error": (await response.text())[:200]}
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
            except aiohttp.ClientConnectorError as exc:  # never connected: nothing was sent
                raise _Retryable(AgentError(url, 0, f"cannot connect: {exc}")) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = AgentError(url, 0, f"{type(exc).__name__}: {exc}".rstrip(": "))
                if idempotent:
                    raise _Retryable(error) from exc
                raise error from exc  # an action that may have run is not repeated blindly
        if status < 300 and isinstance(body, dict):
            return body
        message = str(body.get("error", body)) if isinstance(body, dict) else str(body)
        error = AgentError(
            url,
            status,
            message,
            retry_after_seconds=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )
        # 503: the agent could not review our token yet, before doing anything; 502/504: a proxy.
        if status in (502, 503, 504) or (idempotent and status >= 500):
            raise _Retryable(error)
        raise error


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [items]
