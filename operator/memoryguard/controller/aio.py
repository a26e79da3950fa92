"""Concurrency helpers shared by the operator's adapters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def gather_or_cancel(*awaitables: Awaitable[T]) -> list[T]:
    """``asyncio.gather`` that cancels (and awaits) the siblings of the first failure.

    Plain ``gather`` leaves them running: a request to an agent that went away keeps retrying
    after its cycle gave up on it, its error is never retrieved, and Kopf re-raises it from the
    operator's shutdown as a "hung task".
    """
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
