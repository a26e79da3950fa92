"""Who may call the agent: bearer token → TokenReview → SubjectAccessReview, as the kubelet does.

The agent asks the Kubernetes API server, with its own ServiceAccount token, (1) who the
caller's token belongs to and (2) whether that user may perform the request's access on this
node's ``memoryguard.io/agents`` object. Answers are cached briefly (allowed longer than
denied) in bounded caches, and identical concurrent reviews share one API call. When the API
server cannot answer, the caller is refused with "unavailable": never allowed on error.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiohttp

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API_GROUP = "memoryguard.io"
API_RESOURCE = "agents"

_TOKEN_REVIEWS_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
_ACCESS_REVIEWS_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


class ConfigError(ValueError):
    """The agent was not told how to reach the API server."""


class ReviewUnavailable(Exception):
    """The API server could not answer a review (down, timeout, error status, bad answer)."""


@dataclass(frozen=True, slots=True)
class ResourceAccess:
    """An access to this node's ``memoryguard.io/agents`` object (SubjectAccessReview resourceAttributes)."""

    verb: str
    subresource: str
    name: str
    group: str = API_GROUP
    resource: str = API_RESOURCE

    def to_review(self) -> dict[str, Any]:
        return {
            "resourceAttributes": {
                "group": self.group,
                "resource": self.resource,
                "subresource": self.subresource,
                "verb": self.verb,
                "name": self.name,
            }
        }


@dataclass(frozen=True, slots=True)
class PathAccess:
    """An access to a non-resource URL such as ``/metrics`` (as kube-rbac-proxy checks it)."""

    path: str
    verb: str = "get"

    def to_review(self) -> dict[str, Any]:
        return {"nonResourceAttributes": {"path": self.path, "verb": self.verb}}


Access = ResourceAccess | PathAccess


def samples_access(node_name: str) -> ResourceAccess:
    return ResourceAccess(verb="get", subresource="samples", name=node_name)


def actions_access(node_name: str) -> ResourceAccess:
    return ResourceAccess(verb="create", subresource="actions", name=node_name)


def metrics_access() -> PathAccess:
    return PathAccess(path="/metrics", verb="get")


@dataclass(frozen=True, slots=True)
class UserInfo:
    """The authenticated caller, as TokenReview reports it (hashable: it keys the access cache)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_review(cls, user: Mapping[str, Any]) -> UserInfo:
        extra = user.get("extra") or {}
        return cls(
            username=str(user.get("username", "")),
            uid=str(user.get("uid", "")),
            groups=tuple(str(g) for g in user.get("groups") or ()),
            extra=tuple(sorted((str(k), tuple(str(x) for x in v)) for k, v in extra.items())),
        )

    def to_review(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"user": self.username, "groups": list(self.groups)}
        if self.uid:
            spec["uid"] = self.uid
        if self.extra:
            spec["extra"] = {k: list(v) for k, v in self.extra}
        return spec


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"  # → 401
    DENIED = "denied"  # → 403


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str = ""
    user: str | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOWED


@dataclass(frozen=True, slots=True)
class ApiServer:
    """Where and as whom the agent posts its reviews."""

    url: str
    token_file: Path
    ca_file: Path | None = None
    insecure: bool = False

    @classmethod
    def in_cluster(cls, env: Mapping[str, str] = os.environ, sa_dir: Path = SERVICE_ACCOUNT_DIR) -> ApiServer:
        host = env.get("KUBERNETES_SERVICE_HOST")
        port = env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise ConfigError(
                "api-server: KUBERNETES_SERVICE_HOST/PORT are not set (not in a cluster?); "
                "pass --api-server URL --api-token-file F, or --insecure-no-auth for local use"
            )
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        ca_file = sa_dir / "ca.crt"
        return cls(url=f"https://{host}:{port}", token_file=sa_dir / "token", ca_file=ca_file)

    def ssl_setting(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        if self.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.ca_file))
        return True


class Reviewer:
    """Posts TokenReviews and SubjectAccessReviews to the API server (aiohttp; no Kubernetes client)."""

    def __init__(self, api: ApiServer, *, timeout_seconds: float = 5.0) -> None:
        self.api = api
        self.timeout_seconds = timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        try:
            self._ssl = api.ssl_setting()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"api-ca-file {api.ca_file}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def review_token(self, token: str) -> UserInfo | None:
        """The token's user, or None when the API server says it does not authenticate."""
        status = await self._post(
            _TOKEN_REVIEWS_PATH,
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}},
        )
        if not status.get("authenticated"):
            return None
        user = status.get("user")
        if not isinstance(user, Mapping) or not user.get("username"):
            raise ReviewUnavailable("TokenReview: authenticated without a user name")
        return UserInfo.from_review(user)

    async def review_access(self, user: UserInfo, access: Access) -> tuple[bool, str]:
        """(allowed, reason) for ``user`` performing ``access``."""
        spec = user.to_review() | access.to_review()
        status = await self._post(
            _ACCESS_REVIEWS_PATH,
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec},
        )
        allowed = status.get("allowed") is True and status.get("denied") is not True
        return allowed, str(status.get("reason", "") or "")

    async def _post(self, path: str, body: dict[str, Any]) -> Mapping[str, Any]:
        try:
            # Re-read on every review: projected ServiceAccount tokens rotate on disk.
            own_token = self.api.token_file.read_text().strip()
        except OSError as exc:
            raise ReviewUnavailable(f"agent token file {self.api.token_file}: {exc}") from exc
        session = self._session_for_loop()
        headers = {"Authorization": f"Bearer {own_token}", "Accept": "application/json"}
        kind = body["kind"]
        try:
            async with session.post(
                self.api.url.rstrip("/") + path, json=body, headers=headers, ssl=self._ssl
            ) as resp:
                if resp.status not in (200, 201):
                    raise ReviewUnavailable(f"{kind}: API server answered HTTP {resp.status}")
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ReviewUnavailable(f"{kind}: {type(exc).__name__}: {exc}") from exc
        status = answer.get("status") if isinstance(answer, Mapping) else None
        if not isinstance(status, Mapping):
            raise ReviewUnavailable(f"{kind}: answer has no status")
        return status

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        return self._session


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A bounded least-recently-used map whose entries expire; ``now`` is passed in."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, expires: float) -> None:
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


ReviewObserver = Callable[[str, str], None]  # (review kind "token"|"access", outcome "ok"|"error")


@dataclass(frozen=True, slots=True)
class _TokenAnswer:
    user: UserInfo | None  # None: the API server does not authenticate this token


class Authorizer:
    """Decides a request from its bearer token and the access it asks for."""

    def __init__(
        self,
        reviewer: Reviewer,
        *,
        allowed_ttl_seconds: float = 60.0,
        denied_ttl_seconds: float = 10.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        on_review: ReviewObserver | None = None,
    ) -> None:
        self.reviewer = reviewer
        self.allowed_ttl_seconds = allowed_ttl_seconds
        self.denied_ttl_seconds = denied_ttl_seconds
        self.clock = clock
        self.on_review = on_review
        self._users: TtlCache[bytes, _TokenAnswer] = TtlCache(max_entries)
        self._accesses: TtlCache[tuple[UserInfo, Access], tuple[bool, str]] = TtlCache(max_entries)
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}

    async def close(self) -> None:
        await self.reviewer.close()

    async def decide(self, token: str | None, access: Access) -> Decision:
        """Raises ReviewUnavailable when the API server cannot answer (the caller must refuse)."""
        if not token:
            return Decision(Outcome.UNAUTHENTICATED, "no bearer token")
        # Keyed by a digest, so the caches hold no usable credentials.
        digest = hashlib.sha256(token.encode()).digest()

        async def review_token() -> _TokenAnswer:
            return _TokenAnswer(await self.reviewer.review_token(token))

        answer = await self._through_cache(
            self._users, digest, "token", review_token, lambda a: a.user is not None
        )
        user = answer.user
        if user is None:
            return Decision(Outcome.UNAUTHENTICATED, "token not authenticated")
        allowed, reason = await self._through_cache(
            self._accesses,
            (user, access),
            "access",
            lambda: self.reviewer.review_access(user, access),
            lambda r: r[0],
        )
        if not allowed:
            return Decision(Outcome.DENIED, reason or "access denied", user.username)
        return Decision(Outcome.ALLOWED, reason, user.username)

    async def _through_cache(
        self,
        cache: TtlCache[Any, V],
        key: Hashable,
        kind: str,
        fetch: Callable[[], Awaitable[V]],
        is_positive: Callable[[V], bool],
    ) -> V:
        hit = cache.get(key, self.clock())
        if hit is not None:
            return hit
        flight_key = (kind, key)
        task = self._inflight.get(flight_key)
        if task is None:
            # A task of its own, so that a caller who goes away does not cancel the review that
            # other callers with the same token are waiting for.
            task = asyncio.ensure_future(self._review_and_store(cache, key, kind, fetch, is_positive))
            self._inflight[flight_key] = task
            task.add_done_callback(lambda t: self._settle(flight_key, t))
        result: V = await asyncio.shield(task)
        return result

    async def _review_and_store(
        self,
        cache: TtlCache[Any, V],
        key: Hashable,
        kind: str,
        fetch: Callable[[], Awaitable[V]],
        is_positive: Callable[[V], bool],
    ) -> V:
        try:
            value = await fetch()
        except ReviewUnavailable:
            self._observe(kind, "error")
            raise
        self._observe(kind, "ok")
        ttl = self.allowed_ttl_seconds if is_positive(value) else self.denied_ttl_seconds
        cache.put(key, value, self.clock() + ttl)
        return value

    def _settle(self, flight_key: Hashable, task: asyncio.Future[Any]) -> None:
        self._inflight.pop(flight_key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited any more is not logged as lost

    def _observe(self, kind: str, outcome: str) -> None:
        if self.on_review is not None:
            self.on_review(kind, outcome)
