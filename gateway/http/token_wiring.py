"""Wiring of token keeping: the Google OAuth client and the TokenManager, born with the loop.

`setup(app)` adds a cleanup context that runs after storage, vault and the shared HTTP session
exist. When no Google OAuth client is configured (GOOGLE_CLIENT_ID/SECRET unset) neither key is
set and a warning is logged: the gateway still serves everything that does not need Google.
Handlers read them with `request.app.get(TOKENS_KEY)` and answer 503 when absent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.connections.tokens import TokenManager
from gateway.google.oauth_client import GoogleOAuthClient
from gateway.http.appkeys import (
    AUDIT_KEY,
    HTTP_KEY,
    INTEGRATIONS_KEY,
    SETTINGS_KEY,
    VAULT_KEY,
)

log = logging.getLogger(__name__)

GOOGLE_OAUTH_KEY = web.AppKey("google_oauth", GoogleOAuthClient)
TOKENS_KEY = web.AppKey("tokens", TokenManager)


async def _tokens_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    if not settings.google_configured:
        log.warning("Google OAuth client not configured: token refresh is disabled")
        yield
        return
    oauth = GoogleOAuthClient.from_settings(app[HTTP_KEY], settings)
    app[GOOGLE_OAUTH_KEY] = oauth
    app[TOKENS_KEY] = TokenManager(
        repository=app[INTEGRATIONS_KEY],
        vault=app[VAULT_KEY],
        oauth=oauth,
        audit=app[AUDIT_KEY],
        margin_s=settings.token_refresh_margin_s,
    )
    # Nothing to close: the HTTP session belongs to the app and in-flight refreshes end with
    # the requests that started them.
    yield


def setup(app: web.Application) -> None:
    """Add the token services to `app` (after the storage, vault and HTTP contexts)."""
    app.cleanup_ctx.append(_tokens_ctx)
