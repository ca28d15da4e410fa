"""Housekeeping that runs at start-up and then every so often, for as long as the app runs.

    async with periodic(service.purge_expired_sessions, what="connect session purge",
                        interval_s=3600):
        yield   # inside an aiohttp cleanup context

By default the first round runs before the app serves (so a restart purges at once, and a
test sees it done without waiting); `first="background"` starts it in the task instead (work
that may wait on Google must not hold start-up), `first="later"` only after `interval_s` (start-up
did it already). Later rounds run in a task that the context cancels on the way out. A failing
round (the database briefly unreachable) is logged and tried again next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]
First = Literal["now", "background", "later"]


async def _round(job: Job, what: str) -> None:
    try:
        await job()
    except Exception:
        log.exception("%s failed", what)


async def _forever(job: Job, what: str, interval_s: float, *, first: bool) -> None:
    if first:
        await _round(job, what)
    while True:
        await asyncio.sleep(interval_s)
        await _round(job, what)


@asynccontextmanager
async def periodic(
    job: Job, *, what: str, interval_s: float, first: First = "now"
) -> AsyncIterator[None]:
    """Run `job` now (see `first`), then every `interval_s` until the context exits."""
    if first == "now":
        await _round(job, what)
    task = asyncio.create_task(_forever(job, what, interval_s, first=first == "background"))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
