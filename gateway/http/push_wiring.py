"""Wiring of push notifications: the webhook route, the ChannelManager's maintenance loop,
and the hooks that stop channels on disconnect.

`setup(app)` (after sync_wiring) adds the webhook route, registers the disconnect channel
stopper and adds a cleanup context that, when push is on (GATEWAY_PUSH_ENABLED, a usable
GATEWAY_PUBLIC_URL and a Google client; gateway.bootstrap then built the ChannelManager and
hooked channel stops to reauth), hooks the manager into this process's sync scheduler (a
calendar's first channel opens right after its first full sync), and runs its maintenance
pass at startup and every GATEWAY_PUSH_MAINTENANCE_INTERVAL_S, waking in between when a
refused channel is due for a retry (0: no loop at all; tests drive it).

A new calendar's first channel opens in its first sync's task, before that sync lists the
calendar (`ChannelManager.open_before_first_sync`), so Google's first message has no gap to
close; a full sync that did not get one that way opens one right after it committed.

The stoppers work from the database alone when push is off: channels opened while it was on
are still refused once their integration goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from gateway.connections.model import Integration
from gateway.google.calendar import TokenSource
from gateway.http import webhook_routes
from gateway.http.appkeys import (
    CHANNELS_KEY,
    ENGINE_KEY,
    SCHEDULER_KEY,
    SERVICES_KEY,
    SETTINGS_KEY,
)
from gateway.http.disconnect_routes import disconnect_hooks
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.channel_store import ChannelStore, WatchTarget
from gateway.sync.channels import (
    ChannelManager,
    forget_integration,
)
from gateway.sync.engine import SyncOutcome
from gateway.sync.scheduler import AfterSync, BeforeSync, SyncScheduler

log = logging.getLogger(__name__)

# A retry loop that fails (the database away) tries again after at least this long.
MIN_RETRY_WAIT_S = 1.0


def _target(calendar: CalendarRow) -> WatchTarget:
    return WatchTarget(calendar.id, calendar.integration_id, calendar.google_calendar_id)


def open_channels_with_syncs(
    scheduler: SyncScheduler, manager: ChannelManager
) -> tuple[BeforeSync, AfterSync]:
    """Make `scheduler` open a calendar's channel with its syncs instead of at the next
    maintenance pass: before the first full sync of a calendar without a copy lists it, and
    after a full sync committed (a rebuild after a 410, or a first channel that could not be
    opened before). Returns the hooks (to remove them again)."""

    async def before(calendar: CalendarRow) -> None:
        if calendar.active_generation is None:
            await manager.open_before_first_sync(_target(calendar))

    async def after(calendar: CalendarRow, outcome: SyncOutcome) -> None:
        if outcome.full:
            await manager.open_after_sync(_target(calendar))

    scheduler.before_sync.append(before)
    scheduler.after_sync.append(after)
    return before, after


async def _maintain_forever(manager: ChannelManager, interval_s: float) -> None:
    """The maintenance pass at startup and every `interval_s`; in between, refused channels are
    retried as their backoff ends (`ChannelManager.next_retry_at`)."""
    loop = asyncio.get_running_loop()
    next_pass = loop.time()
    while True:
        manager.retry_planned.clear()
        try:
            if loop.time() >= next_pass:
                next_pass = loop.time() + interval_s
                await manager.run_once()
            else:
                await manager.retry_due()
        except Exception:  # the database or Google may be briefly unreachable: next round
            log.exception("push maintenance failed")
        wait_s = next_pass - loop.time()
        retry_at = manager.next_retry_at()
        if retry_at is not None:
            retry_in = (retry_at - manager.now()) / timedelta(seconds=1)
            wait_s = min(wait_s, max(retry_in, MIN_RETRY_WAIT_S))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(manager.retry_planned.wait(), max(wait_s, 0.0))


async def _push_ctx(app: web.Application) -> AsyncIterator[None]:
    manager = app[SERVICES_KEY].channels
    if manager is None:
        yield  # gateway.bootstrap said why push is off
        return
    app[CHANNELS_KEY] = manager
    scheduler = app.get(SCHEDULER_KEY)
    hooks = open_channels_with_syncs(scheduler, manager) if scheduler is not None else None
    interval_s = app[SETTINGS_KEY].push_maintenance_interval_s
    task = asyncio.create_task(_maintain_forever(manager, interval_s)) if interval_s > 0 else None
    try:
        yield
    finally:
        if scheduler is not None and hooks is not None:
            scheduler.before_sync.remove(hooks[0])
            scheduler.after_sync.remove(hooks[1])
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def setup(app: web.Application) -> None:
    """Add push notifications to `app` (after disconnect_routes and sync_wiring)."""

    async def stop_channels(integration: Integration, tokens: TokenSource) -> int:
        manager = app.get(CHANNELS_KEY)
        if manager is not None:
            return await manager.stop_integration(integration, tokens)
        return await forget_integration(ChannelStore(app[ENGINE_KEY]), integration)

    disconnect_hooks(app).channel_stoppers.append(stop_channels)
    app.cleanup_ctx.append(_push_ctx)
    webhook_routes.setup(app)
