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
from gateway.connections.repository import IntegrationRepository
from gateway.db.engine import create_engine
from gateway.db.migrate import ensure_migrated
from gateway.http import (
    availability_routes,
    booking_routes,
    connect_routes,
    disconnect_routes,
    health_routes,
    mcp_routes,
    metrics_routes,
    push_wiring,
    sync_wiring,
    token_wiring,
    webhook_endpoint_routes,
)
from gateway.http.appkeys import (
    APIKEYS_KEY,
    AUDIT_KEY,
    ENGINE_KEY,
    HTTP_KEY,
    INTEGRATIONS_KEY,
    SETTINGS_KEY,
    VAULT_KEY,
)
from gateway.http.metrics_routes import metrics_middleware
from gateway.http.problems import problem_middleware
from gateway.http.request_id import request_id_middleware
from gateway.observability.logs import quiet_protocol_errors
from gateway.settings import Settings
from gateway.wiring import open_vault

# Bodies larger than this are refused with 413 before any handler reads them.
MAX_BODY_BYTES = 64 * 1024


async def healthz(_request: web.Request) -> web.Response:
    """Process liveness: answers as long as the event loop runs."""
    return web.json_response({"status": "ok"})


_OPENAPI_PATH = Path(__file__).with_name("openapi.json")


async def openapi(_request: web.Request) -> web.Response:
    """The API's OpenAPI 3.1 document (the file kept in the repo, served as is)."""
    text = await asyncio.to_thread(_OPENAPI_PATH.read_text, "utf-8")
    return web.Response(text=text, content_type="application/json")


def create_app(settings: Settings, *, engine: AsyncEngine | None = None) -> web.Application:
    """Build the gateway application. Pass `engine` to share one (tests do)."""
    quiet_protocol_errors()
    # The request id is bound outside the problem middleware, so error answers carry it too.
    app = web.Application(
        middlewares=[request_id_middleware, metrics_middleware, problem_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS_KEY] = settings

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        own = engine is None
        eng = engine if engine is not None else await create_engine(settings.database_url)
        try:
            await ensure_migrated(eng)
            app[ENGINE_KEY] = eng
            app[APIKEYS_KEY] = ApiKeyStore(eng)
            app[AUDIT_KEY] = AuditLog(eng)
            app[INTEGRATIONS_KEY] = IntegrationRepository(eng)
            yield
        finally:
            if own:
                await eng.dispose()

    async def vault_ctx(app: web.Application) -> AsyncIterator[None]:
        vault = await open_vault(settings, app[ENGINE_KEY])
        app[VAULT_KEY] = vault
        try:
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
        token_wiring,
        connect_routes,
        disconnect_routes,
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
