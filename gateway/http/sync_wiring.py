"""Wiring of calendar sync: the SyncEngine, born with the loop, and its disconnect purge hook.

`setup(app)` adds a cleanup context that runs after the token context (the engine needs the
TokenManager and the shared HTTP session) and registers the record purger of disconnect step 4.
The purger works from the database alone, so a disconnect purges synced records even when no
Google client is configured (then there is no engine, and nothing was ever synced).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.connections.model import Integration
from gateway.google.calendar import CalendarClient
from gateway.http.appkeys import ENGINE_KEY, HTTP_KEY, INTEGRATIONS_KEY, SETTINGS_KEY
from gateway.http.disconnect_routes import disconnect_hooks
from gateway.http.token_wiring import TOKENS_KEY
from gateway.sync.config import SyncConfig
from gateway.sync.engine import SyncEngine
from gateway.sync.store import SyncStore

log = logging.getLogger(__name__)

SYNC_KEY = web.AppKey("sync", SyncEngine)
SYNC_CONFIG_KEY = web.AppKey("sync_config", SyncConfig)


def _config(app: web.Application) -> SyncConfig:
    """The sync settings: GATEWAY_SYNC_*, GATEWAY_TENTATIVE_IS_BUSY, ..._STORE_EVENT_DETAILS."""
    settings = app[SETTINGS_KEY]
    return SyncConfig(
        horizon_past_days=settings.sync_horizon_past_days,
        horizon_future_days=settings.sync_horizon_future_days,
        tentative_is_busy=settings.tentative_is_busy,
        store_event_details=settings.store_event_details,
    )


async def _sync_ctx(app: web.Application) -> AsyncIterator[None]:
    tokens = app.get(TOKENS_KEY)
    if tokens is None:
        log.warning("Google OAuth client not configured: calendar sync is disabled")
        yield
        return
    settings = app[SETTINGS_KEY]
    client = await CalendarClient.create(app[HTTP_KEY], settings.google_calendar_api_url)
    app[SYNC_KEY] = SyncEngine(
        store=SyncStore(app[ENGINE_KEY]),
        client=client,
        tokens=tokens,
        integrations=app[INTEGRATIONS_KEY],
        config=app[SYNC_CONFIG_KEY],
    )
    # Nothing to close: the HTTP session and the engine belong to the app.
    yield


def setup(app: web.Application) -> None:
    """Add calendar sync to `app` (after token_wiring and disconnect_routes)."""
    app[SYNC_CONFIG_KEY] = _config(app)

    async def purge_records(integration: Integration) -> int:
        return await SyncStore(app[ENGINE_KEY]).purge_integration(integration.id)

    disconnect_hooks(app).record_purgers.append(purge_records)
    app.cleanup_ctx.append(_sync_ctx)
