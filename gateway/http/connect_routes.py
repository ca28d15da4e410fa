"""HTTP routes of the connect flow and the integrations read API.

    POST /v1/connect-sessions                    connections:write  start (Google consent URL)
    GET  /oauth/google/callback                  public             Google sends the browser here
    GET  /v1/integrations?user_id=               connections:read   the tenant's integrations
    GET  /v1/integrations/{integration_id}        connections:read   one integration
    GET  /v1/integrations/{integration_id}/export connections:read   everything stored about it

Handlers are thin: parse (gateway.http.validation), call ConnectService or the repository,
render. Another tenant's integration is 404, like one that does not exist.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pydantic import Field

from gateway.clock import rfc3339, utc_now
from gateway.connections.export import stored_records
from gateway.connections.model import Integration, excess_scopes
from gateway.connections.receipt_store import ReceiptStore
from gateway.google.oauth_flow import requested_scopes
from gateway.http.appkeys import (
    AUDIT_KEY,
    CONNECT_KEY,
    ENGINE_KEY,
    INTEGRATIONS_KEY,
    SETTINGS_KEY,
    VAULT_KEY,
)
from gateway.http.auth import principal, requires_scope
from gateway.http.json_body import json_response
from gateway.http.lookup import integration_for
from gateway.http.sync_wiring import sync_status
from gateway.http.validation import PrintableText, StrictBody, parse_query, read_json
from gateway.periodic import periodic

log = logging.getLogger(__name__)

# How often abandoned connect sessions are purged (set before the app starts to change it).
SESSION_PURGE_INTERVAL_KEY = web.AppKey("session_purge_interval_s", float)
SESSION_PURGE_INTERVAL_S = 3600.0

# Responses the browser sees during the OAuth dance: never cached (they follow URLs that carry
# a code and a state) and never leak those URLs onward in a Referer.
_BROWSER_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class CreateConnectSession(StrictBody):
    user_id: PrintableText = Field(min_length=1, max_length=200)
    return_url: PrintableText = Field(min_length=1, max_length=2048)
    login_hint: PrintableText | None = Field(default=None, min_length=1, max_length=320)
    # Opaque to us and returned on the final redirect: printable ASCII, no spaces, so it
    # survives a URL's query unchanged and cannot carry markup-breaking whitespace.
    app_state: str | None = Field(
        default=None, min_length=1, max_length=512, pattern=r"^[\x21-\x7e]+$"
    )


class ListIntegrations(StrictBody):
    user_id: PrintableText | None = Field(default=None, min_length=1, max_length=200)


def _excess(request: web.Request, integration: Integration) -> list[str]:
    """Scopes the integration's grant holds beyond what this gateway asks Google for."""
    return excess_scopes(integration.granted_scopes, requested_scopes(request.app[SETTINGS_KEY]))


# -- handlers ---------------------------------------------------------------------------------


@requires_scope("connections:write")
async def create_connect_session(request: web.Request) -> web.Response:
    """Start a connection: returns Google's consent URL for the user's browser."""
    body = await read_json(request, CreateConnectSession)
    started = await request.app[CONNECT_KEY].create_session(
        tenant_id=principal(request).tenant_id,
        user_id=body.user_id,
        return_url=body.return_url,
        login_hint=body.login_hint,
        app_state=body.app_state,
    )
    return json_response(
        {"connect_url": started.connect_url, "expires_at": rfc3339(started.expires_at)},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


async def oauth_callback(request: web.Request) -> web.Response:
    """Google's redirect back: finish the connection, send the browser to its return_url."""
    # First value of each parameter: Google sends each once; extras are someone else's noise.
    query = {key: request.query.getone(key) for key in request.query}
    outcome = await request.app[CONNECT_KEY].complete_callback(query)
    if outcome.location is None:
        # An unknown state names no session, so no return_url we could trust: a plain page.
        return web.Response(
            status=400,
            text=f"Connecting your calendar failed: {outcome.error}. "
            "Go back to the app and start again.\n",
            content_type="text/plain",
            headers=_BROWSER_HEADERS,
        )
    return web.Response(status=302, headers={"Location": outcome.location, **_BROWSER_HEADERS})


@requires_scope("connections:read")
async def list_integrations(request: web.Request) -> web.Response:
    query = parse_query(request.query, ListIntegrations)
    found = await request.app[INTEGRATIONS_KEY].list_for_user(
        principal(request).tenant_id, query.user_id
    )
    return json_response({"integrations": [i.to_public() for i in found]})


@requires_scope("connections:read")
async def get_integration(request: web.Request) -> web.Response:
    """One integration, with the sync status of its calendars (`sync`)."""
    integration = await integration_for(request)
    document = integration.to_public()
    document["excess_scopes"] = _excess(request, integration)
    document["sync"] = await sync_status(request.app, integration.id, utc_now())
    return json_response(document)


@requires_scope("connections:read")
async def export_integration(request: web.Request) -> web.Response:
    """Everything stored about an integration (the user's right of access), without secrets:
    its fields, whether tokens are held (never the tokens or their ciphertext), its vault key's
    metadata (never key bytes), its disconnect progress, its audit entries, its signed
    destruction receipt, and every stored record about it (`records`: calendars, events with
    their stored details, busy blocks, push channels, bookings; see connections/export.py)."""
    integration = await integration_for(request)
    repo = request.app[INTEGRATIONS_KEY]
    sealed = await repo.sealed_tokens(integration.id)
    key = await request.app[VAULT_KEY].key_info(integration.tenant_id, integration.id)
    job = await repo.disconnect_job(integration.id)
    disconnect = json.loads(job[1]) if job is not None and job[1] else None
    entries = await request.app[AUDIT_KEY].entries(
        tenant_id=integration.tenant_id, integration_id=integration.id
    )
    document: dict[str, Any] = {
        "exported_at": rfc3339(utc_now()),
        "integration": {
            **integration.to_public(),
            "tenant_id": integration.tenant_id,
            "google_sub": integration.google_sub,
            "access_token_expires_at": rfc3339(integration.access_token_expires_at),
            "disconnect_requested_at": rfc3339(integration.disconnect_requested_at),
            "excess_scopes": _excess(request, integration),
        },
        "tokens": {
            "refresh_token_stored": bool(sealed and sealed.refresh_token),
            "access_token_stored": bool(sealed and sealed.access_token),
            "sealed_with": "vault data key below (AES-256-GCM)" if key else None,
        },
        "data_key": (
            {
                "dek_id": key.dek_id,
                "kek_id": key.kek_id,
                "kek_version": key.kek_version,
                "created_at": rfc3339(key.created_at),
                "rewrapped_at": rfc3339(key.rewrapped_at),
            }
            if key is not None
            else None
        ),
        # Progress or receipt of a disconnect (counts and flags only), once one began.
        "disconnect": disconnect,
        "audit": [
            {
                "at": rfc3339(e.at),
                "action": e.action,
                "outcome": e.outcome,
                "request_id": e.request_id,
                "detail": e.detail,
            }
            for e in entries
        ],
    }
    document["records"] = await stored_records(
        request.app[ENGINE_KEY], integration.tenant_id, integration.id
    )
    signed = await ReceiptStore(request.app[ENGINE_KEY]).for_integration(
        integration.tenant_id, integration.id
    )
    document["receipt"] = signed.to_public() if signed is not None else None
    return json_response(document, headers={"Cache-Control": "no-store"})


# -- wiring -----------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """Add the routes and the purge of abandoned connect sessions (the service itself is
    built by gateway.bootstrap)."""

    async def session_purge_ctx(app: web.Application) -> AsyncIterator[None]:
        service = app[CONNECT_KEY]
        interval_s = app.get(SESSION_PURGE_INTERVAL_KEY, SESSION_PURGE_INTERVAL_S)

        async def purge_sessions() -> None:
            # A quiet gateway (no new connections) must not keep abandoned sessions' login
            # hints (emails) for ever.
            purged = await service.purge_expired_sessions()
            if purged:
                log.info("purged %d expired connect session(s)", purged)

        async with periodic(purge_sessions, what="connect session purge", interval_s=interval_s):
            yield

    app.cleanup_ctx.append(session_purge_ctx)
    app.router.add_post("/v1/connect-sessions", create_connect_session)
    app.router.add_get("/oauth/google/callback", oauth_callback)
    app.router.add_get("/v1/integrations", list_integrations)
    app.router.add_get("/v1/integrations/{integration_id}", get_integration)
    app.router.add_get("/v1/integrations/{integration_id}/export", export_integration)
