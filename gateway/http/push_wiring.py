"""Wiring of push notifications: the webhook route, the ChannelManager with its maintenance
loop, and the hooks that stop channels on disconnect and on reauth.

`setup(app)` (after sync_wiring) adds the webhook route, registers the disconnect channel
stopper and adds a cleanup context that, when push is on (GATEWAY_PUSH_ENABLED, a usable
GATEWAY_PUBLIC_URL and a Google client), builds the ChannelManager, hooks it into this
process's sync scheduler (a calendar's first channel opens right after its first full sync),
and runs its maintenance pass at startup and every GATEWAY_PUSH_MAINTENANCE_INTERVAL_S, waking
in between when a refused channel is due for a retry (0: no loop at all; tests drive it).

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
from gateway.google.calendar import CalendarClient, TokenSource
from gateway.http import webhook_routes
from gateway.http.appkeys import (
    ENGINE_KEY,
    HTTP_KEY,
    SCHEDULER_CONFIG_KEY,
    SCHEDULER_KEY,
    SETTINGS_KEY,
    TOKENS_KEY,
)
from gateway.http.disconnect_routes import disconnect_hooks
from gateway.settings import Settings
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.channel_store import ChannelStore, WatchTarget
from gateway.sync.channels import (
    ChannelManager,
    PushConfig,
    forget_integration,
    stop_locally,
)
from gateway.sync.engine import SyncOutcome
from gateway.sync.scheduler import AfterSync, SyncScheduler

log = logging.getLogger(__name__)

CHANNELS_KEY = web.AppKey("push_channels", ChannelManager)
PUSH_CONFIG_KEY = web.AppKey("push_config", PushConfig)


def push_config(settings: Settings) -> PushConfig:
    """The channel settings: GATEWAY_PUBLIC_URL and GATEWAY_PUSH_*."""
    return PushConfig(
        address=settings.push_webhook_url,
        renew_before_s=settings.push_renew_before_s,
        silence_threshold_s=settings.push_silence_threshold_s,
    )


# A retry loop that fails (the database away) tries again after at least this long.
MIN_RETRY_WAIT_S = 1.0


def open_channels_after_sync(scheduler: SyncScheduler, manager: ChannelManager) -> AfterSync:
    """Make `scheduler` open a calendar's channel as soon as a full sync of it committed (its
    first, or a rebuild after a 410), instead of at the next maintenance pass. Returns the hook
    (to remove it again)."""

    async def hook(calendar: CalendarRow, outcome: SyncOutcome) -> None:
        if outcome.full:
            target = WatchTarget(calendar.id, calendar.integration_id, calendar.google_calendar_id)
            await manager.open_after_sync(target)

    scheduler.after_sync.append(hook)
    return hook


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
    settings = app[SETTINGS_KEY]
    store = ChannelStore(app[ENGINE_KEY])
    tokens = app.get(TOKENS_KEY)
    if tokens is not None:

        async def on_reauth(integration: Integration) -> None:
            # No grant left to call Google with: refuse the channels' notifications from now.
            await stop_locally(store, integration)

        tokens.add_reauth_hook(on_reauth)
    if not settings.push_enabled:
        log.info("push notifications are off (GATEWAY_PUSH_ENABLED=false): calendars are polled")
        yield
        return
    if not settings.push_address_usable:
        log.warning(
            "push notifications are off: Google only delivers to https addresses and "
            "GATEWAY_PUBLIC_URL is not one; calendars are polled"
        )
        yield
        return
    if tokens is None:
        yield  # gateway.bootstrap warned already: no Google client, nothing to watch
        return
    if not settings.public_url.startswith("https://"):
        log.warning("push webhook address is plain http on loopback: only the emulator accepts it")
    client = await CalendarClient.create(app[HTTP_KEY], settings.google_calendar_api_url)
    manager = ChannelManager(
        store=store,
        client=client,
        tokens=tokens,
        config=app[PUSH_CONFIG_KEY],
        backoff_s=app[SCHEDULER_CONFIG_KEY].backoff_s,
    )
    app[CHANNELS_KEY] = manager
    scheduler = app.get(SCHEDULER_KEY)
    hook = open_channels_after_sync(scheduler, manager) if scheduler is not None else None
    interval_s = settings.push_maintenance_interval_s
    task = asyncio.create_task(_maintain_forever(manager, interval_s)) if interval_s > 0 else None
    try:
        yield
    finally:
        if scheduler is not None and hook is not None:
            scheduler.after_sync.remove(hook)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def setup(app: web.Application) -> None:
    """Add push notifications to `app` (after disconnect_routes and sync_wiring)."""
    app[PUSH_CONFIG_KEY] = push_config(app[SETTINGS_KEY])

    async def stop_channels(integration: Integration, tokens: TokenSource) -> int:
        manager = app.get(CHANNELS_KEY)
        if manager is not None:
            return await manager.stop_integration(integration, tokens)
        return await forget_integration(ChannelStore(app[ENGINE_KEY]), integration)

    disconnect_hooks(app).channel_stoppers.append(stop_channels)
    app.cleanup_ctx.append(_push_ctx)
    webhook_routes.setup(app)
