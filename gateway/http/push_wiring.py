"""Wiring of push notifications: the webhook route, the ChannelManager with its maintenance
loop, and the hooks that stop channels on disconnect and on reauth.

`setup(app)` (after sync_wiring) adds the webhook route, registers the disconnect channel
stopper and adds a cleanup context that, when push is on (GATEWAY_PUSH_ENABLED, a usable
GATEWAY_PUBLIC_URL and a Google client), builds the ChannelManager and runs its maintenance
pass at startup and every GATEWAY_PUSH_MAINTENANCE_INTERVAL_S (0: never; tests drive it).

The stoppers work from the database alone when push is off: channels opened while it was on
are still refused once their integration goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.connections.model import Integration
from gateway.google.calendar import CalendarClient, TokenSource
from gateway.http import webhook_routes
from gateway.http.appkeys import ENGINE_KEY, HTTP_KEY, SETTINGS_KEY
from gateway.http.disconnect_routes import disconnect_hooks
from gateway.http.token_wiring import TOKENS_KEY
from gateway.settings import Settings
from gateway.sync.channel_store import ChannelStore
from gateway.sync.channels import (
    ChannelManager,
    PushConfig,
    forget_integration,
    stop_locally,
)

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


async def _maintain_forever(manager: ChannelManager, interval_s: float) -> None:
    """The maintenance pass at startup, then every `interval_s`."""
    while True:
        try:
            await manager.run_once()
        except Exception:  # the database or Google may be briefly unreachable: next round
            log.exception("push maintenance failed")
        await asyncio.sleep(interval_s)


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
        yield  # token_wiring warned already: no Google client, nothing to watch
        return
    if not settings.public_url.startswith("https://"):
        log.warning("push webhook address is plain http on loopback: only the emulator accepts it")
    client = await CalendarClient.create(app[HTTP_KEY], settings.google_calendar_api_url)
    manager = ChannelManager(store=store, client=client, tokens=tokens, config=app[PUSH_CONFIG_KEY])
    app[CHANNELS_KEY] = manager
    interval_s = settings.push_maintenance_interval_s
    task = asyncio.create_task(_maintain_forever(manager, interval_s)) if interval_s > 0 else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def setup(app: web.Application) -> None:
    """Add push notifications to `app` (after token_wiring, disconnect_routes, sync_wiring)."""
    app[PUSH_CONFIG_KEY] = push_config(app[SETTINGS_KEY])

    async def stop_channels(integration: Integration, tokens: TokenSource) -> int:
        manager = app.get(CHANNELS_KEY)
        if manager is not None:
            return await manager.stop_integration(integration, tokens)
        return await forget_integration(ChannelStore(app[ENGINE_KEY]), integration)

    disconnect_hooks(app).channel_stoppers.append(stop_channels)
    app.cleanup_ctx.append(_push_ctx)
    webhook_routes.setup(app)
