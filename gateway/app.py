"""The one place that wires the gateway together: `create_app()`.

Engines, the vault and background work are created inside the running loop (cleanup_ctx)
and closed with it; nothing is done at import time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.apikeys import ApiKeyStore
from gateway.audit import AuditLog
from gateway.availability.index import AvailabilityIndex
from gateway.connections.repository import IntegrationRepository
from gateway.db.engine import create_engine
from gateway.db.listener import CacheCoherence
from gateway.db.migrate import ensure_migrated
from gateway.db.notify import Subscriber
from gateway.http import (
    audit_wiring,
    availability_routes,
    booking_routes,
    connect_routes,
    disconnect_routes,
    health_routes,
    metrics_routes,
    push_wiring,
    receipt_routes,
    sync_wiring,
    token_wiring,
    webhook_endpoint_routes,
)
from gateway.http.appkeys import (
    APIKEYS_KEY,
    AUDIT_KEY,
    COHERENCE_KEY,
    ENGINE_KEY,
    HTTP_KEY,
    INDEX_KEY,
    INTEGRATIONS_KEY,
    LIVE_LIMITS_KEY,
    SETTINGS_KEY,
    TRUST_KEY,
    VAULT_KEY,
)
from gateway.http.json_body import json_response
from gateway.http.middleware import gateway_middleware
from gateway.livecalls import LiveCallLimits
from gateway.mcp import routes as mcp_routes
from gateway.observability.logs import hold_chatty_loggers, quiet_protocol_errors
from gateway.settings import Settings
from gateway.webhooks.outbox import IntegrationOutbox
from gateway.wiring import open_trust_keys, open_vault

# Bodies larger than this are refused with 413 before any handler reads them.
MAX_BODY_BYTES = 64 * 1024


async def healthz(_request: web.Request) -> web.Response:
    """Process liveness: answers as long as the event loop runs."""
    return json_response({"status": "ok"})


_OPENAPI_PATH = Path(__file__).with_name("openapi.json")


async def openapi(_request: web.Request) -> web.Response:
    """The API's OpenAPI 3.1 document (the file kept in the repo, served as is)."""
    text = await asyncio.to_thread(_OPENAPI_PATH.read_text, "utf-8")
    return web.Response(text=text, content_type="application/json")


def create_app(settings: Settings, *, engine: AsyncEngine | None = None) -> web.Application:
    """Build the gateway application. Pass `engine` to share one (tests do)."""
    quiet_protocol_errors()
    hold_chatty_loggers()
    # One middleware: request id, metrics and problem+json (see gateway.http.middleware).
    app = web.Application(
        middlewares=[gateway_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS_KEY] = settings
    app[LIVE_LIMITS_KEY] = LiveCallLimits(
        per_key_per_min=settings.live_calls_per_min_per_key,
        per_tenant_per_min=settings.live_calls_per_min_per_tenant,
    )

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        own = engine is None
        eng = engine if engine is not None else await create_engine(settings.database_url)
        try:
            await ensure_migrated(eng)
            app[ENGINE_KEY] = eng
            api_keys = ApiKeyStore(eng, cache=True)
            app[APIKEYS_KEY] = api_keys
            app[AUDIT_KEY] = AuditLog(eng)
            app[INTEGRATIONS_KEY] = IntegrationRepository(eng, announcer=IntegrationOutbox())
            caches: list[Subscriber] = [api_keys]
            if settings.index_memory_mb > 0:
                index = AvailabilityIndex(budget_bytes=settings.index_memory_mb * 2**20)
                app[INDEX_KEY] = index
                caches.append(index)
            # Born here, in the loop, and stopped before the engine: the caches answer only
            # while it listens for changes (gateway.db.listener).
            coherence = CacheCoherence(eng, settings.database_url, caches=caches)
            app[COHERENCE_KEY] = coherence
            await coherence.start()
            try:
                yield
            finally:
                await coherence.stop()
        finally:
            if own:
                await eng.dispose()

    async def vault_ctx(app: web.Application) -> AsyncIterator[None]:
        vault = await open_vault(settings, app[ENGINE_KEY])
        app[VAULT_KEY] = vault
        try:
            app[TRUST_KEY] = await open_trust_keys(settings, vault)
            yield
        finally:
            await vault.close()

    async def http_ctx(app: web.Application) -> AsyncIterator[None]:
        # Google answers in well under a second; 30 s bounds a hung connection without
        # cutting a slow but live one. Each call site may set a tighter timeout.
        timeout = aiohttp.ClientTimeout(total=30, connect=10)
        async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
            app[HTTP_KEY] = session
            yield

    app.cleanup_ctx.extend([storage_ctx, vault_ctx, http_ctx])
    # Each feature adds its services (as cleanup contexts, after the ones above) and routes.
    for feature in (
        health_routes,
        metrics_routes,
        audit_wiring,
        token_wiring,
        connect_routes,
        disconnect_routes,
        receipt_routes,
        sync_wiring,
        push_wiring,
        availability_routes,
        booking_routes,
        mcp_routes,
        webhook_endpoint_routes,
    ):
        feature.setup(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi)
    return app
