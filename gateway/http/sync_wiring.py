"""Wiring of calendar sync: the SyncEngine and this process's SyncScheduler, born with the
loop, the disconnect purge hook, and the `sync` part of an integration's status.

`setup(app)` adds a cleanup context that runs after the services context (the engine needs the
TokenManager and the shared HTTP session) and registers the record purger of disconnect step 4.
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
from gateway.errors import ConfigurationError
from gateway.google.calendar import CalendarClient
from gateway.http.appkeys import (
    ENGINE_KEY,
    HTTP_KEY,
    INTEGRATIONS_KEY,
    SETTINGS_KEY,
    SYNC_NUDGE_KEY,
    TOKENS_KEY,
)
from gateway.http.disconnect_routes import disconnect_hooks
from gateway.settings import Settings
from gateway.sync.config import SchedulerConfig, SyncConfig
from gateway.sync.engine import SyncEngine
from gateway.sync.read_store import CalendarFreshness
from gateway.sync.scheduler import SyncScheduler
from gateway.sync.store import SyncStore

log = logging.getLogger(__name__)

SYNC_KEY = web.AppKey("sync", SyncEngine)
SYNC_CONFIG_KEY = web.AppKey("sync_config", SyncConfig)
SCHEDULER_CONFIG_KEY = web.AppKey("scheduler_config", SchedulerConfig)
# Present only while this process runs a scheduler (Google configured, GATEWAY_SYNC_WORKER).
SCHEDULER_KEY = web.AppKey("sync_scheduler", SyncScheduler)


def _config(app: web.Application) -> SyncConfig:
    """The sync settings: GATEWAY_SYNC_*, GATEWAY_TENTATIVE_IS_BUSY, ..._STORE_EVENT_DETAILS."""
    settings = app[SETTINGS_KEY]
    return SyncConfig(
        horizon_past_days=settings.sync_horizon_past_days,
        horizon_future_days=settings.sync_horizon_future_days,
        tentative_is_busy=settings.tentative_is_busy,
        store_event_details=settings.store_event_details,
    )


def _scheduler_config(app: web.Application) -> SchedulerConfig:
    """GATEWAY_SYNC_TICK_S, ..._POLL_INTERVAL_S, ..._LEASE_S, ..._CONCURRENCY, ..._BACKOFF_*."""
    settings = app[SETTINGS_KEY]
    try:
        return SchedulerConfig(
            tick_s=settings.sync_tick_s,
            poll_interval_s=settings.sync_poll_interval_s,
            # A pushed calendar's copy is trusted this long (gateway.sync.freshness): poll it
            # as often, so a channel that went silent costs no more staleness than that.
            safety_poll_interval_s=settings.push_trust_s,
            lease_s=settings.sync_lease_s,
            concurrency=settings.sync_concurrency,
            backoff_base_s=settings.sync_backoff_base_s,
            backoff_max_s=settings.sync_backoff_max_s,
        )
    except ValueError:
        raise ConfigurationError(
            "GATEWAY_SYNC_BACKOFF_MAX_S: must be at least GATEWAY_SYNC_BACKOFF_BASE_S"
        ) from None


async def _sync_ctx(app: web.Application) -> AsyncIterator[None]:
    tokens = app.get(TOKENS_KEY)
    if tokens is None:
        log.warning("Google OAuth client not configured: calendar sync is disabled")
        yield
        return
    settings = app[SETTINGS_KEY]
    client = await CalendarClient.create(app[HTTP_KEY], settings.google_calendar_api_url)
    engine = SyncEngine(
        store=SyncStore(
            app[ENGINE_KEY], webhook_coalesce_s=settings.webhook_availability_coalesce_s
        ),
        client=client,
        tokens=tokens,
        integrations=app[INTEGRATIONS_KEY],
        config=app[SYNC_CONFIG_KEY],
    )
    app[SYNC_KEY] = engine
    if not settings.sync_worker:
        log.info("GATEWAY_SYNC_WORKER=false: this process syncs no calendar by itself")
        yield
        return
    scheduler = SyncScheduler(engine=engine, config=app[SCHEDULER_CONFIG_KEY])
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
    """Add calendar sync to `app` (after disconnect_routes)."""
    app[SYNC_CONFIG_KEY] = _config(app)
    app[SCHEDULER_CONFIG_KEY] = _scheduler_config(app)

    async def purge_records(integration: Integration) -> int:
        return await SyncStore(app[ENGINE_KEY]).purge_integration(integration.id)

    disconnect_hooks(app).record_purgers.append(purge_records)
    app.cleanup_ctx.append(_sync_ctx)
