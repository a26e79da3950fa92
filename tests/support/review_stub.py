"""A local stand-in for the Kubernetes API server's review endpoints, for testing the agent's auth.

It answers ``POST /apis/authentication.k8s.io/v1/tokenreviews`` from a table of known tokens and
``POST /apis/authorization.k8s.io/v1/subjectaccessreviews`` from a list of grants, and records
every request (path, the caller's own bearer token, JSON body) so tests can assert on exactly
what the agent sent. Like a real API server it refuses (401) review calls that do not carry
the agent's own ServiceAccount token. ``mode`` injects failures: ``"error"`` answers 500,
``"hang"`` never answers.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


@dataclass
class RecordedReview:
    path: str
    bearer: str | None
    body: dict[str, Any]

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.body.get("spec", {})
        return spec


@dataclass
class ReviewStub:
    agent_token: str = "agent-sa-token"
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # caller token -> TokenReview user
    grants: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (username, attributes)
    mode: str = "ok"  # "ok" | "error" | "hang"
    requests: list[RecordedReview] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def add_user(
        self, token: str, username: str, groups: tuple[str, ...] = ("system:authenticated",)
    ) -> None:
        self.users[token] = {"username": username, "uid": f"uid-{username}", "groups": list(groups)}

    def grant(self, username: str, attributes: dict[str, Any]) -> None:
        """Allow ``username`` exactly the SubjectAccessReview attributes given, e.g.
        ``{"resourceAttributes": {...}}`` or ``{"nonResourceAttributes": {...}}``."""
        self.grants.append((username, attributes))

    def reviews(self, path: str) -> list[RecordedReview]:
        return [r for r in self.requests if r.path == path]

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        """Serve on a free localhost port (HTTPS with ``ssl_context``); the base URL."""
        app = web.Application()
        app.router.add_post(TOKEN_REVIEWS, self._token_review)
        app.router.add_post(ACCESS_REVIEWS, self._access_review)
        self._release.clear()
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _admit(self, request: web.Request, path: str) -> dict[str, Any]:
        header = request.headers.get("Authorization", "")
        bearer = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        body = await request.json()
        self.requests.append(RecordedReview(path=path, bearer=bearer, body=body))
        if self.mode == "hang":
            await self._release.wait()  # until close(): a test's timeout fires long before
        if self.mode == "error":
            raise web.HTTPInternalServerError(text='{"kind": "Status", "message": "etcd unavailable"}')
        if bearer != self.agent_token:
            raise web.HTTPUnauthorized(text='{"kind": "Status", "reason": "Unauthorized"}')
        return body

    async def _token_review(self, request: web.Request) -> web.Response:
        body = await self._admit(request, TOKEN_REVIEWS)
        user = self.users.get(body.get("spec", {}).get("token", ""))
        status: dict[str, Any] = {"authenticated": True, "user": user} if user else {"authenticated": False}
        if not user:
            status["error"] = "invalid bearer token"
        return web.json_response(body | {"status": status}, status=201)

    async def _access_review(self, request: web.Request) -> web.Response:
        body = await self._admit(request, ACCESS_REVIEWS)
        spec = body.get("spec", {})
        asked = {k: v for k, v in spec.items() if k in ("resourceAttributes", "nonResourceAttributes")}
        allowed = any(user == spec.get("user") and attrs == asked for user, attrs in self.grants)
        status = {"allowed": allowed, "reason": "granted by test" if allowed else "no grant in test"}
        return web.json_response(body | {"status": status}, status=201)
