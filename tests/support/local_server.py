"""Serve an aiohttp app on a free localhost port for the length of a block."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """Yield the port ``app`` answers on (127.0.0.1); the socket is bound before it is served,
    so no other process can take the port in between."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        await runner.cleanup()
