"""Housekeeping that runs at start-up and then every so often, for as long as the app runs.

    async with periodic(service.purge_expired_sessions, what="connect session purge",
                        interval_s=3600):
        yield   # inside an aiohttp cleanup context

The first round runs before the app serves (so a restart purges at once, and a test sees it
done without waiting); later rounds run in a task that the context cancels on the way out. A
failing round (the database briefly unreachable) is logged and tried again next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]


async def _round(job: Job, what: str) -> None:
    try:
        await job()
    except Exception:
        log.exception("%s failed", what)


async def _forever(job: Job, what: str, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await _round(job, what)


@asynccontextmanager
async def periodic(job: Job, *, what: str, interval_s: float) -> AsyncIterator[None]:
    """Run `job` now, then every `interval_s` until the context exits."""
    await _round(job, what)
    task = asyncio.create_task(_forever(job, what, interval_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
