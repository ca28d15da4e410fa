"""Wiring of calendar sync: running this process's SyncScheduler (the SyncEngine and the
scheduler are built by gateway.bootstrap), the disconnect purge hook, and the `sync` part of an
integration's status.

`setup(app)` adds a cleanup context that starts the scheduler after the deletion journal was
replayed (disconnect_routes) and registers the record purger of disconnect step 4.
The purger works from the database alone, so a disconnect purges synced records even when no
Google client is configured (then there is no engine, and nothing was ever synced).

The scheduler runs when Google is configured and GATEWAY_SYNC_WORKER is true; it is stopped
(its leases handed back) before the HTTP session closes. `app[SYNC_NUDGE_KEY]` wakes it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.clock import rfc3339
from gateway.connections.model import Integration
from gateway.http.appkeys import (
    ENGINE_KEY,
    SCHEDULER_KEY,
    SERVICES_KEY,
    SETTINGS_KEY,
    SYNC_NUDGE_KEY,
)
from gateway.http.disconnect_routes import disconnect_hooks
from gateway.settings import Settings
from gateway.sync.read_store import CalendarFreshness
from gateway.sync.store import SyncStore

log = logging.getLogger(__name__)


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[SERVICES_KEY].scheduler
    if scheduler is None:
        yield  # gateway.bootstrap said why (no Google client, or GATEWAY_SYNC_WORKER=false)
        return
    app[SCHEDULER_KEY] = scheduler
    app[SYNC_NUDGE_KEY] = scheduler.nudge
    scheduler.start()
    log.info("sync scheduler started: owner=%s", scheduler.owner)
    try:
        yield
    finally:
        await scheduler.stop()
        log.info("sync scheduler stopped: owner=%s", scheduler.owner)


def push_off_reason(settings: Settings) -> str | None:
    """Why this deployment opens no channel at all (a stable code), or None when it does."""
    if not settings.push_enabled:
        return "push_disabled"
    if not settings.push_address_usable:
        return "push_address_not_https"
    return None


def render_sync_status(
    calendars: list[CalendarFreshness], now: datetime, push_off: str | None = None
) -> dict[str, Any]:
    """The `sync` member of `GET /v1/integrations/{id}` (documented in openapi.json).
    `push_error` says why a calendar is polled: `push_off` (the deployment's reason), else
    what Google answered when its channel was opened (`push_refused: webhookUrlNotHttps`)."""
    return {
        "calendars": [
            {
                "id": c.calendar_id,
                "state": c.state,
                "last_success_at": rfc3339(c.last_success_at),
                "push": "active" if c.push_active else "polling",
                "push_error": None if c.push_active else (push_off or c.push_error),
                "lag_s": (
                    max(0, int((now - c.as_of).total_seconds())) if c.as_of is not None else None
                ),
                "backoff_until": rfc3339(c.backoff_until),
                "last_error": c.last_error,
            }
            for c in calendars
        ]
    }


async def sync_status(app: web.Application, integration_id: str, now: datetime) -> dict[str, Any]:
    """The integration's calendars' sync status, from the database alone (any process)."""
    settings = app[SETTINGS_KEY]
    found = await SyncStore(app[ENGINE_KEY]).freshness(
        [integration_id], now, push_trust_s=settings.push_trust_s
    )
    return render_sync_status(found[integration_id], now, push_off_reason(settings))


def setup(app: web.Application) -> None:
    """Add calendar sync to `app` (after disconnect_routes: the journal is replayed before the
    scheduler starts)."""

    async def purge_records(integration: Integration) -> int:
        return await SyncStore(app[ENGINE_KEY]).purge_integration(integration.id)

    disconnect_hooks(app).record_purgers.append(purge_records)
    app.cleanup_ctx.append(_scheduler_ctx)
