"""The agent's HTTP API (docs/agent-api.md): health, metrics, samples, and node-local actions.

Every route but ``/healthz`` is authorized through ``auth.Authorizer`` before anything else
is read from the request. Request text never becomes a path: a pod UID and container ID are
checked against strict patterns and then looked up among the cgroups discovery found.
Reclaim and drop_caches write kernel files that can block for seconds, so they run in worker
threads, one reclaim at a time per cgroup and one drop_caches per rate-limit interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from memoryguard import __version__
from memoryguard.agent import auth
from memoryguard.agent.discovery import CONTAINER_ID_PATTERN, POD_UID_PATTERN
from memoryguard.agent.metrics import AgentMetrics, SamplerView
from memoryguard.engine.model import Sample

if TYPE_CHECKING:
    from memoryguard.agent.sampler import PodEntry

log = logging.getLogger("memoryguard.agent.server")

MAX_BODY_BYTES = 16 * 1024
MAX_POD_UIDS = 1000
MAX_RECLAIM_BYTES = 1 << 50  # 1 PiB: anything larger is a caller's bug, not a request
DROP_CACHES_LEVELS = (1, 2, 3)
DEFAULT_WINDOW_SECONDS = 600.0
DETAILS = ("samples", "full")  # GET /v1/pods?detail=: samples only, or the cgroup's files too
STREAM_CHUNK_BYTES = 64 * 1024


class SamplerPort(SamplerView, Protocol):
    """What the server needs from the sampler (``memoryguard.agent.sampler.Sampler``): the view
    its metrics read (the server is always handed that same sampler), plus window queries and
    finding a container's cgroup for an action."""

    def pod_entries(
        self,
        pod_uids: Collection[str] | None,
        *,
        window_seconds: float,
        since_seconds: float | None = None,
        full: bool = False,
    ) -> Iterator[PodEntry]: ...

    def find(self, pod_uid: str, container_id: str | None) -> Path | None: ...

    def node(self) -> dict[str, Any]: ...


class ActionsPort(Protocol):
    """The node-local actions (``memoryguard.agent.actions``), handed in so the server owns no file I/O."""

    unsupported: tuple[type[Exception], ...]  # raised by reclaim when the kernel has no memory.reclaim

    def reclaim(self, cgroup_dir: Path, bytes_: int) -> Any: ...

    def drop_caches(self, level: int) -> Any: ...


@dataclass(frozen=True, slots=True)
class ServerSettings:
    node_name: str
    interval_seconds: float = 1.0
    retention_seconds: float = 1800.0
    enable_drop_caches: bool = False
    drop_caches_min_interval_seconds: float = 600.0
    request_timeout_seconds: float = 30.0
    max_body_bytes: int = MAX_BODY_BYTES
    stream_chunk_bytes: int = STREAM_CHUNK_BYTES


class ApiError(Exception):
    """An error answer: ``{"error": message, "field": field}`` with an HTTP status."""

    def __init__(
        self, status: int, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return web.json_response(body, status=self.status, headers=self.headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Stream:
    """A 200 answer written in chunks of about ``chunk_bytes`` as its text is produced, letting
    the event loop run after each chunk (the transport's flow control bounds what waits)."""

    def __init__(self, response: web.StreamResponse, chunk_bytes: int) -> None:
        self.response = response
        self.chunk_bytes = chunk_bytes
        self._pieces: list[bytes] = []
        self._size = 0

    async def write(self, text: str) -> None:
        await self.write_bytes(text.encode())

    async def write_bytes(self, data: bytes) -> None:
        self._pieces.append(data)
        self._size += len(data)
        if self._size >= self.chunk_bytes:
            await self._flush()
            await asyncio.sleep(0)  # the write may not have waited: let ticks and other requests in

    async def finish(self) -> web.StreamResponse:
        await self._flush()
        await self.response.write_eof()
        return self.response

    async def _flush(self) -> None:
        if self._pieces:
            data = b"".join(self._pieces)
            self._pieces.clear()
            self._size = 0
            await self.response.write(data)


class AgentApi:
    """Route handlers and the little state they share (busy cgroups, last drop_caches)."""

    def __init__(
        self,
        sampler: SamplerPort,
        actions: ActionsPort,
        settings: ServerSettings,
        *,
        authorizer: auth.Authorizer | None,
        metrics: AgentMetrics,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sampler = sampler
        self.actions = actions
        self.settings = settings
        self.authorizer = authorizer
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        self._reclaiming: set[Path] = set()
        # Requests whose answer's status and headers are sent (by id): an error after that
        # cannot become an error answer any more, only a connection closed mid-answer, which
        # the caller's JSON or exposition parser notices.
        self._streaming: set[int] = set()
        self._drop_caches_started: float | None = None
        # route path -> the access a caller needs; routes missing here need none (/healthz).
        self.accesses: dict[str, auth.Access] = {
            "/metrics": auth.metrics_access(),
            "/v1/pods": auth.samples_access(settings.node_name),
            "/v1/node": auth.samples_access(settings.node_name),
            "/v1/reclaim": auth.actions_access(settings.node_name),
            "/v1/drop-caches": auth.actions_access(settings.node_name),
        }

    # --- middlewares -------------------------------------------------------------------------

    @web.middleware
    async def errors_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = _route_name(request)
        try:
            response = await handler(request)
        except Exception as exc:
            if id(request) in self._streaming:
                # The status line is out: the connection is closed so the caller sees a cut answer.
                self.metrics.http_requests.labels(route, "aborted").inc()
                if isinstance(exc, ConnectionError):  # the caller went away
                    log.info("%s %s: answer cut short: %r", request.method, request.path, exc)
                else:
                    log.warning("%s %s: answer cut short", request.method, request.path, exc_info=exc)
                raise
            response = self._error_response(request, exc)
        finally:
            self._streaming.discard(id(request))
        self.metrics.http_requests.labels(route, str(response.status)).inc()
        return response

    def _error_response(self, request: web.Request, exc: Exception) -> web.Response:
        if isinstance(exc, ApiError):
            return exc.response()
        if isinstance(exc, web.HTTPException):  # aiohttp's own: 404 unknown path, 405, 413 while reading
            if exc.status == 413:
                return ApiError(
                    413, f"body larger than {self.settings.max_body_bytes} bytes", "body"
                ).response()
            return ApiError(exc.status, exc.reason, headers=_allow_header(exc)).response()
        if isinstance(exc, TimeoutError):
            return ApiError(
                504, f"request took longer than {self.settings.request_timeout_seconds:g}s"
            ).response()
        log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
        return ApiError(500, "internal error (see the agent log)").response()

    @web.middleware
    async def auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        access = self.accesses.get(_route_name(request))
        if access is None or self.authorizer is None:
            return await handler(request)
        token = _bearer_token(request.headers.get("Authorization", ""))
        try:
            decision = await self.authorizer.decide(token, access)
        except auth.ReviewUnavailable as exc:
            # Never allow on error: the caller retries later, as it would after a network blip.
            log.warning("refusing %s %s: review unavailable: %s", request.method, request.path, exc)
            self.metrics.auth_decisions.labels("unavailable").inc()
            raise ApiError(503, f"cannot check credentials with the API server: {exc}") from exc
        self.metrics.auth_decisions.labels(decision.outcome.value).inc()
        if decision.outcome is auth.Outcome.UNAUTHENTICATED:
            raise ApiError(401, f"unauthenticated: {decision.reason}", headers={"WWW-Authenticate": "Bearer"})
        if decision.outcome is auth.Outcome.DENIED:
            log.info("denied %s %s to %s: %s", request.method, request.path, decision.user, decision.reason)
            raise ApiError(403, f"forbidden: user {decision.user!r} may not {_describe(access)}")
        return await handler(request)

    @web.middleware
    async def timeout_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        async with asyncio.timeout(self.settings.request_timeout_seconds):
            return await handler(request)

    async def _stream(self, request: web.Request, content_type: str) -> _Stream:
        """Send a 200's status and headers now; the body follows in chunks."""
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        self._streaming.add(id(request))
        return _Stream(response, self.settings.stream_chunk_bytes)

    # --- handlers ----------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        last = self.sampler.last_tick_t_seconds
        age = None if last is None else max(0.0, self.clock() - last)
        healthy = age is not None and age <= 10 * self.settings.interval_seconds
        body = {
            "status": "ok" if healthy else "stale",
            "last_tick_age_seconds": None if age is None else round(age, 3),
            "containers": self.sampler.container_count,
        }
        return web.json_response(body, status=200 if healthy else 503)

    async def metrics_endpoint(self, request: web.Request) -> web.StreamResponse:
        chunks, content_type = self.metrics.render_chunks(request.headers.get("Accept"))
        # Family by family, as for /v1/pods: the text of 500 containers' series is MiBs that
        # need not be held whole, and ticks go on while a scrape is written.
        out = await self._stream(request, content_type)
        for chunk in chunks:
            await out.write_bytes(chunk)
            del chunk  # not kept while the next family is built
        return await out.finish()

    async def pods(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        for key in query:
            if key not in ("uid", "window_seconds", "since_seconds", "detail"):
                raise ApiError(400, f"unknown query parameter {key!r}", key)
        uids = query.getall("uid", [])
        if len(uids) > MAX_POD_UIDS:
            raise ApiError(400, f"at most {MAX_POD_UIDS} uid parameters per request", "uid")
        for uid in uids:
            _check_pod_uid(uid, "uid")
        window = _query_seconds(query, "window_seconds", DEFAULT_WINDOW_SECONDS, minimum=0.0)
        assert window is not None
        # A window longer than the ring holds returns what the ring holds.
        window = min(window, self.settings.retention_seconds)
        since = _query_seconds(query, "since_seconds", None, minimum=None)
        detail = query.get("detail", "samples")
        if detail not in DETAILS:
            raise ApiError(400, f"detail must be one of {', '.join(DETAILS)}", "detail")
        asked = list(dict.fromkeys(uids))
        entries = self.sampler.pod_entries(
            asked or None, window_seconds=window, since_seconds=since, full=detail == "full"
        )
        head = {
            "node": self.settings.node_name,
            "agent_version": __version__,
            "cgroup_version": self.sampler.cgroup_version,
            "interval_seconds": self.settings.interval_seconds,
        }
        out = await self._stream(request, "application/json; charset=utf-8")
        # Written container by container, in chunks, letting the loop run in between: a full
        # window of every container on a busy node is tens of MiB of JSON that would otherwise
        # be built whole (several times over), and sampling ticks run on this same loop.
        await out.write(_dumps(head)[:-1] + ',"pods":[')
        missing: list[str] = []
        first_pod = True
        for entry in entries:
            if entry.head is None:
                missing.append(entry.pod_uid)
                continue
            await out.write(("" if first_pod else ",") + _dumps(entry.head)[:-1] + ',"containers":[')
            first_pod = False
            first = True
            for container in entry.containers:
                await out.write(("" if first else ",") + _dumps(container))
                first = False
            await out.write("]}")
        # now_seconds comes last, read after every pod was written: it is ≥ every
        # latest.t_seconds in the answer, which is how callers judge staleness.
        await out.write(f'],"missing":{_dumps(missing)},"now_seconds":{_dumps(self.clock())}}}')
        return await out.finish()

    async def node(self, request: web.Request) -> web.Response:
        if request.query:
            key = next(iter(request.query))
            raise ApiError(400, f"unknown query parameter {key!r}", key)
        body = {
            "node": self.settings.node_name,
            "agent_version": __version__,
            "cgroup_version": self.sampler.cgroup_version,
            "now_seconds": self.clock(),
            **self.sampler.node(),
        }
        return web.json_response(body, dumps=_dumps)

    async def reclaim(self, request: web.Request) -> web.Response:
        body = await _json_body(request, self.settings.max_body_bytes)
        _only_fields(body, ("pod_uid", "container_id", "bytes"))
        pod_uid = _check_pod_uid(body.get("pod_uid"), "pod_uid")
        container_id = body.get("container_id")
        if container_id is not None:
            container_id = _check_container_id(container_id, "container_id")
        requested = body.get("bytes")
        if (
            not isinstance(requested, int)
            or isinstance(requested, bool)
            or not 0 < requested <= MAX_RECLAIM_BYTES
        ):
            raise ApiError(400, f"bytes must be an integer between 1 and {MAX_RECLAIM_BYTES}", "bytes")
        cgroup_dir = self.sampler.find(pod_uid, container_id)
        if cgroup_dir is None:
            self.metrics.reclaims.labels("not_found").inc()
            what = f"container {container_id} of pod {pod_uid}" if container_id else f"pod {pod_uid}"
            raise ApiError(404, f"{what} is not on this node", "container_id" if container_id else "pod_uid")
        if cgroup_dir in self._reclaiming:
            self.metrics.reclaims.labels("busy").inc()
            raise ApiError(409, f"a reclaim of {cgroup_dir.name} is already running")
        self._reclaiming.add(cgroup_dir)
        work = asyncio.ensure_future(asyncio.to_thread(self.actions.reclaim, cgroup_dir, requested))
        # The thread cannot be cancelled: the cgroup stays busy until it really finishes, and
        # it is counted then, even when this request timed out or its caller went away.
        work.add_done_callback(lambda done: self._reclaim_finished(cgroup_dir, requested, done))
        try:
            result = await asyncio.shield(work)
        except self.actions.unsupported as exc:
            raise ApiError(501, f"memory.reclaim is not available on this node: {exc}") from exc
        except FileNotFoundError as exc:
            raise ApiError(404, f"the cgroup went away during reclaim: {exc}") from exc
        except OSError as exc:
            raise ApiError(500, f"reclaim failed: {exc}") from exc
        return web.json_response(_jsonable(result), dumps=_dumps)

    def _reclaim_finished(self, cgroup_dir: Path, requested: int, work: asyncio.Future[Any]) -> None:
        self._reclaiming.discard(cgroup_dir)
        exc = None if work.cancelled() else work.exception()
        if exc is not None:
            if isinstance(exc, self.actions.unsupported):
                outcome = "unsupported"
            elif isinstance(exc, FileNotFoundError):
                outcome = "not_found"
            else:
                outcome = "error"
                log.warning("reclaim of %s failed: %s", cgroup_dir, exc)
            self.metrics.reclaims.labels(outcome).inc()
            return
        if work.cancelled():
            return
        answer = _jsonable(work.result())
        freed = max(0, int(answer.get("freed_bytes") or 0))
        self.metrics.reclaims.labels("partial" if answer.get("partial") else "complete").inc()
        self.metrics.reclaim_requested_bytes.inc(requested)
        self.metrics.reclaim_freed_bytes.inc(freed)
        log.info(
            "reclaim %s: requested %d bytes, freed %d%s",
            cgroup_dir.name,
            requested,
            freed,
            " (partial: the kernel found less to reclaim)" if answer.get("partial") else "",
        )

    async def drop_caches(self, request: web.Request) -> web.Response:
        body = await _json_body(request, self.settings.max_body_bytes)
        _only_fields(body, ("level",))
        level = body.get("level")
        if not isinstance(level, int) or isinstance(level, bool) or level not in DROP_CACHES_LEVELS:
            raise ApiError(400, "level must be 1 (page cache), 2 (slab) or 3 (both)", "level")
        if not self.settings.enable_drop_caches:
            self.metrics.drop_caches.labels(str(level), "disabled").inc()
            raise ApiError(403, "drop_caches is disabled on this agent (start it with --enable-drop-caches)")
        now = self.monotonic()
        last = self._drop_caches_started
        min_interval = self.settings.drop_caches_min_interval_seconds
        if last is not None and now - last < min_interval:
            self.metrics.drop_caches.labels(str(level), "rate_limited").inc()
            raise ApiError(
                429,
                f"drop_caches ran {now - last:.0f}s ago; at most one per {min_interval:g}s on this node",
                headers={"Retry-After": str(math.ceil(last + min_interval - now))},
            )
        # Taken before the write: a second caller arriving while the first runs is rate-limited too.
        self._drop_caches_started = now
        work = asyncio.ensure_future(asyncio.to_thread(self.actions.drop_caches, level))
        work.add_done_callback(lambda done: self._drop_caches_finished(level, done))
        try:
            result = await asyncio.shield(work)
        except OSError as exc:
            raise ApiError(500, f"drop_caches failed: {exc}") from exc
        return web.json_response(_jsonable(result), dumps=_dumps)

    def _drop_caches_finished(self, level: int, work: asyncio.Future[Any]) -> None:
        if work.cancelled():
            return
        exc = work.exception()
        if exc is not None:
            self.metrics.drop_caches.labels(str(level), "error").inc()
            log.warning("drop_caches level %d failed: %s", level, exc)
            return
        self.metrics.drop_caches.labels(str(level), "done").inc()
        log.info("drop_caches level %d: freed %s bytes", level, _jsonable(work.result()).get("freed_bytes"))


def create_app(
    sampler: SamplerPort,
    actions: ActionsPort,
    settings: ServerSettings,
    *,
    authorizer: auth.Authorizer | None,
    metrics: AgentMetrics,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The aiohttp application. ``authorizer=None`` serves without auth (``--insecure-no-auth``)."""
    api = AgentApi(
        sampler, actions, settings, authorizer=authorizer, metrics=metrics, clock=clock, monotonic=monotonic
    )
    app = web.Application(
        middlewares=[api.errors_middleware, api.auth_middleware, api.timeout_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/metrics", api.metrics_endpoint)
    app.router.add_get("/v1/pods", api.pods)
    app.router.add_get("/v1/node", api.node)
    app.router.add_post("/v1/reclaim", api.reclaim)
    app.router.add_post("/v1/drop-caches", api.drop_caches)

    if authorizer is not None:

        async def close_authorizer(_: web.Application) -> None:
            await authorizer.close()

        app.on_cleanup.append(close_authorizer)
    return app


# --- request parsing ---------------------------------------------------------------------------


def _route_name(request: web.Request) -> str:
    route = request.match_info.route
    if request.match_info.http_exception is not None or route.resource is None:
        return "unmatched"
    return route.resource.canonical


def _allow_header(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def _bearer_token(header: str) -> str | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _describe(access: auth.Access) -> str:
    if isinstance(access, auth.PathAccess):
        return f"{access.verb} {access.path}"
    return f"{access.verb} {access.resource}.{access.group}/{access.subresource} {access.name!r}"


def _check_pod_uid(value: Any, field: str) -> str:
    if not isinstance(value, str) or not POD_UID_PATTERN.match(value):
        raise ApiError(400, f"{field} must be a pod UID in canonical form (8-4-4-4-12 lowercase hex)", field)
    return value


def _check_container_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not CONTAINER_ID_PATTERN.match(value):
        raise ApiError(400, f"{field} must be 64 lowercase hex digits (no runtime:// prefix)", field)
    return value


def _query_seconds(
    query: Mapping[str, str], field: str, default: float | None, *, minimum: float | None
) -> float | None:
    raw = query.get(field)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{field} must be a number of seconds", field) from None
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise ApiError(400, f"{field} must be a finite number of seconds ≥ {minimum or 0:g}", field)
    return value


async def _json_body(request: web.Request, max_bytes: int) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, f"body larger than {max_bytes} bytes", "body")
    raw = await request.read()  # aiohttp enforces client_max_size while reading (413)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}", "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object", "body")
    return body


def _only_fields(body: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in body:
        if key not in known:
            raise ApiError(400, f"unknown field {key!r} (expected {', '.join(known)})", key)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Sample):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _jsonable_leaf(value: Any) -> Any:
    converted = _jsonable(value)
    if converted is value:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    return converted


# One encoder for every answer (json.dumps with options builds a new one per call: thousands
# per /v1/pods answer). allow_nan=False: NaN is not JSON; a reading that produced one is a bug
# to see, not to ship.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_jsonable_leaf)
