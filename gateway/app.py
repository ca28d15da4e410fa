"""The one place that wires the gateway together: `create_app()`.

Its first cleanup context builds the services once (gateway/bootstrap.py, inside the running
loop, closed with it) and publishes them; then each feature adds its routes. Nothing is done
at import time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.bootstrap import Services, open_services, scheduler_config
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
    webhook_endpoint_routes,
)
from gateway.http.appkeys import (
    APIKEYS_KEY,
    AUDIT_KEY,
    AVAILABILITY_KEY,
    BOOKING_KEY,
    COHERENCE_KEY,
    CONNECT_KEY,
    DISCONNECT_CONFIG_KEY,
    DISCONNECT_SERVICE_KEY,
    ENDPOINTS_KEY,
    ENGINE_KEY,
    GOOGLE_OAUTH_KEY,
    HTTP_KEY,
    INDEX_KEY,
    INTEGRATIONS_KEY,
    JOURNAL_REPLAY_KEY,
    LIVE_LIMITS_KEY,
    PUSH_CONFIG_KEY,
    SCHEDULER_CONFIG_KEY,
    SERVICES_KEY,
    SETTINGS_KEY,
    SYNC_CONFIG_KEY,
    SYNC_KEY,
    TOKENS_KEY,
    TRUST_KEY,
    VAULT_KEY,
    WEBHOOK_RESOLVE_KEY,
    WEBHOOK_STORE_KEY,
)
from gateway.http.json_body import json_response
from gateway.http.middleware import gateway_middleware
from gateway.mcp import routes as mcp_routes
from gateway.observability.logs import hold_chatty_loggers, quiet_protocol_errors
from gateway.settings import Settings
from gateway.webhooks.destinations import system_resolve

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


def _publish(app: web.Application, services: Services) -> None:
    """Put the container, and each of its services under its own key, on the application."""
    app[SERVICES_KEY] = services
    app[ENGINE_KEY] = services.engine
    app[VAULT_KEY] = services.vault
    app[TRUST_KEY] = services.trust_keys
    app[HTTP_KEY] = services.http
    app[APIKEYS_KEY] = services.api_keys
    app[AUDIT_KEY] = services.audit
    app[INTEGRATIONS_KEY] = services.integrations
    app[LIVE_LIMITS_KEY] = services.live_limits
    app[COHERENCE_KEY] = services.coherence
    app[CONNECT_KEY] = services.connect
    app[JOURNAL_REPLAY_KEY] = services.journal_replay
    app[DISCONNECT_SERVICE_KEY] = services.disconnect
    app[SYNC_CONFIG_KEY] = services.sync_config
    app[SCHEDULER_CONFIG_KEY] = services.scheduler_config
    app[PUSH_CONFIG_KEY] = services.push_config
    if services.index is not None:
        app[INDEX_KEY] = services.index
    # Absent, not None, without a Google client: handlers test `app.get(...)`.
    if services.google_oauth is not None:
        app[GOOGLE_OAUTH_KEY] = services.google_oauth
    if services.tokens is not None:
        app[TOKENS_KEY] = services.tokens
    if services.sync is not None:
        app[SYNC_KEY] = services.sync
    if services.availability is not None:
        app[AVAILABILITY_KEY] = services.availability
    if services.booking is not None:
        app[BOOKING_KEY] = services.booking
    app[WEBHOOK_STORE_KEY] = services.webhook_store
    app[ENDPOINTS_KEY] = services.endpoints


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
    # Here, not at start-up: a bad GATEWAY_SYNC_BACKOFF_* pair fails before anything opens.
    scheduling = scheduler_config(settings)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        resolve = app.get(WEBHOOK_RESOLVE_KEY, system_resolve)
        async with open_services(
            settings,
            engine=engine,
            scheduling=scheduling,
            resolve=resolve,
            disconnecting=app[DISCONNECT_CONFIG_KEY],
            hooks=disconnect_routes.disconnect_hooks(app),
        ) as services:
            _publish(app, services)
            yield

    app.cleanup_ctx.append(services_ctx)
    # Each feature adds its routes; those whose services are not yet in the container
    # (gateway/bootstrap.py) still build them in a cleanup context, after the one above.
    # The hot path's routes first: aiohttp tries the routes under one path prefix
    # (`/v1/integrations`) in the order they were added, a regex each. (Booking stays in its
    # place: it registers the disconnect purger that runs after the sync engine's.)
    for feature in (
        availability_routes,
        health_routes,
        metrics_routes,
        audit_wiring,
        connect_routes,
        disconnect_routes,
        receipt_routes,
        sync_wiring,
        push_wiring,
        booking_routes,
        mcp_routes,
        webhook_endpoint_routes,
    ):
        feature.setup(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi)
    return app
