"""The audit log's retention: entries older than GATEWAY_AUDIT_RETENTION_DAYS are purged at
start-up and every hour (gateway.periodic, like the connect-session purge)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from gateway.http.appkeys import AUDIT_KEY, SETTINGS_KEY
from gateway.periodic import periodic

log = logging.getLogger(__name__)

# How often the purge runs (set before the app starts to change it).
AUDIT_PURGE_INTERVAL_KEY = web.AppKey("audit_purge_interval_s", float)
AUDIT_PURGE_INTERVAL_S = 3600.0


def setup(app: web.Application) -> None:
    """Add the audit purge (a cleanup context, after storage)."""

    async def audit_purge_ctx(app: web.Application) -> AsyncIterator[None]:
        audit = app[AUDIT_KEY]
        retention = timedelta(days=app[SETTINGS_KEY].audit_retention_days)

        async def purge() -> None:
            purged = await audit.purge(older_than=retention)
            if purged:
                log.info("purged %d audit entries older than %s", purged, retention)

        interval_s = app.get(AUDIT_PURGE_INTERVAL_KEY, AUDIT_PURGE_INTERVAL_S)
        async with periodic(purge, what="audit log purge", interval_s=interval_s):
            yield

    app.cleanup_ctx.append(audit_purge_ctx)
