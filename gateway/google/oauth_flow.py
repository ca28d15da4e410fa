"""The OAuth authorization-code flow with Google, on google-auth-oauthlib's `Flow`.

Two halves, each a plain object the connect service calls:

- `authorization_url(state, code_verifier, login_hint)` builds Google's consent URL (pure, no
  I/O): `access_type=offline` and `prompt=consent` so a refresh token always comes back, PKCE
  S256 from the verifier we chose and stored. Never `include_granted_scopes`: it would fold any
  broader scope the user granted this client before (the full `calendar`, say) into our token.
- `exchange(code, code_verifier)` redeems the code and `verify_identity` verifies the id_token.
  Both are blocking (requests underneath), so they run in a worker thread: nothing here blocks
  the event loop.

What comes back is a `TokenGrant` (oauth_client.py), read by the same `parse_token_response`
as a refresh's answer; its token fields never appear in a repr. Every failure of the exchange
is one `ExchangeFailed` whose message names the step and Google's error code, never a token, a
code or a response body.

The refresh and the revocation are `GoogleOAuthClient`'s (oauth_client.py, on aiohttp); this
module is the part built on google-auth-oauthlib, the library that builds the consent URL and
redeems the code.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import google.auth.transport.requests
import requests
from google.oauth2 import id_token as google_id_token
from google_auth_oauthlib.flow import Flow

from gateway.google.errors import UnexpectedGoogleResponse
from gateway.google.oauth_client import TokenGrant, parse_token_response
from gateway.settings import Settings

log = logging.getLogger(__name__)

# The issuers Google signs id_tokens as (both spellings occur in the wild).
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
# Bounds a hung token or certificate request (requests has no default timeout).
HTTP_TIMEOUT_S = 20.0


class ExchangeFailed(Exception):
    """The code could not be redeemed or the identity not verified. The message is safe to log
    (step and OAuth error code only); `tokens` holds what Google did issue, if anything, so the
    caller can revoke it."""

    def __init__(self, message: str, tokens: TokenGrant | None = None) -> None:
        super().__init__(message)
        self.tokens = tokens


@dataclass(frozen=True)
class GoogleIdentity:
    """The Google account behind a grant, from its verified id_token."""

    sub: str
    email: str | None


class OAuthFlow(Protocol):
    """What the connect service needs from the OAuth flow (a fake can stand in)."""

    def authorization_url(self, *, state: str, code_verifier: str, login_hint: str | None) -> str:
        """Google's consent URL for this session."""
        ...

    async def exchange(self, *, code: str, code_verifier: str) -> TokenGrant:
        """Redeem an authorization code (PKCE) for tokens."""
        ...

    async def verify_identity(self, tokens: TokenGrant) -> GoogleIdentity:
        """Verify the id_token's signature and audience; return the account it names."""
        ...


def allow_plain_http_if_configured(settings: Settings) -> None:
    """Let oauthlib talk plain HTTP when Google's endpoints are configured as http:// URLs.

    oauthlib refuses non-TLS endpoints unless OAUTHLIB_INSECURE_TRANSPORT is set, and that
    environment variable is its only switch. Real Google is always https, so an http:// endpoint
    means an operator pointed the gateway at the local emulator on purpose; we then set the
    switch once at start-up (never at import time) and say so in the log.
    """
    uris = (settings.google_auth_uri, settings.google_token_uri)
    plain = any(urlsplit(uri).scheme == "http" for uri in uris)
    if plain and not os.environ.get("OAUTHLIB_INSECURE_TRANSPORT"):
        log.warning("Google OAuth endpoints are plain http (emulator): TLS check disabled")
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"


# Libraries that log request bodies and token responses at DEBUG (requests_oauthlib logs
# "Obtained token {...}" with every token in it). Capped at WARNING whatever the root level is.
_CHATTY_LOGGERS = ("requests_oauthlib", "oauthlib", "google_auth_oauthlib", "google.auth")


def quiet_token_logging() -> None:
    """Stop OAuth libraries from logging secrets at DEBUG (called once at start-up)."""
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def requested_scopes(settings: Settings) -> list[str]:
    """The scopes asked for: the configured least-privilege set, plus `openid` because the
    account is identified from the id_token."""
    scopes = list(settings.google_scopes)
    if "openid" not in scopes:
        scopes.insert(0, "openid")
    return scopes


class GoogleFlow:
    """`OAuthFlow` on google-auth-oauthlib and google-auth, configured from settings."""

    def __init__(self, settings: Settings) -> None:
        if not settings.google_configured:
            raise ValueError("Google OAuth client is not configured")
        assert settings.google_client_id is not None and settings.google_client_secret is not None
        self._client_id = settings.google_client_id
        self._client_secret = settings.google_client_secret
        self._auth_uri = settings.google_auth_uri
        self._token_uri = settings.google_token_uri
        self._certs_uri = settings.google_certs_uri
        self._redirect_uri = settings.oauth_redirect_uri
        self._scopes = requested_scopes(settings)

    def __repr__(self) -> str:
        return f"GoogleFlow(client_id={self._client_id!r}, token_uri={self._token_uri!r})"

    def _flow(self, scopes: list[str] | None, code_verifier: str) -> Any:
        config = {
            "web": {
                "client_id": self._client_id,
                "client_secret": self._client_secret.get_secret_value(),
                "auth_uri": self._auth_uri,
                "token_uri": self._token_uri,
                "redirect_uris": [self._redirect_uri],
            }
        }
        return Flow.from_client_config(
            config,
            scopes=scopes,
            redirect_uri=self._redirect_uri,
            code_verifier=code_verifier,
            autogenerate_code_verifier=False,
        )

    def authorization_url(self, *, state: str, code_verifier: str, login_hint: str | None) -> str:
        extra = {"login_hint": login_hint} if login_hint else {}
        url, _ = self._flow(self._scopes, code_verifier).authorization_url(
            state=state,
            access_type="offline",
            prompt="consent",
            **extra,
        )
        return str(url)

    async def exchange(self, *, code: str, code_verifier: str) -> TokenGrant:
        # No scopes on the exchanging session: oauthlib would otherwise raise "Scope has
        # changed" on every partial grant (and on Google's URL form of `email`). The `scope`
        # field of the response is the truth we read ourselves.
        flow = self._flow(None, code_verifier)

        def fetch() -> Any:
            try:
                return flow.fetch_token(code=code, timeout=HTTP_TIMEOUT_S)
            finally:
                flow.oauth2session.close()  # no pooled socket left for the GC to find

        try:
            token = await asyncio.to_thread(fetch)
        except requests.RequestException as exc:
            raise ExchangeFailed(f"token endpoint unreachable ({type(exc).__name__})") from None
        except Exception as exc:  # oauthlib raises OAuth2Error subclasses and plain ones
            error = getattr(exc, "error", None) or type(exc).__name__
            raise ExchangeFailed(f"token endpoint refused the code ({error})") from None
        try:
            return parse_token_response(dict(token))
        except UnexpectedGoogleResponse:
            raise ExchangeFailed("token response without an access_token") from None

    async def verify_identity(self, tokens: TokenGrant) -> GoogleIdentity:
        if not tokens.id_token:
            raise ExchangeFailed("no id_token in the token response", tokens)
        try:
            claims = await asyncio.to_thread(self._verify, tokens.id_token)
        except Exception as exc:
            raise ExchangeFailed(f"id_token not verified ({type(exc).__name__})", tokens) from None
        if claims.get("iss") not in GOOGLE_ISSUERS or not isinstance(claims.get("sub"), str):
            raise ExchangeFailed("id_token has an unexpected issuer or no subject", tokens)
        email = claims.get("email")
        return GoogleIdentity(sub=claims["sub"], email=email if isinstance(email, str) else None)

    def _verify(self, raw: str) -> dict[str, Any]:
        """Blocking: fetches Google's certificates, checks signature, audience and expiry."""
        with requests.Session() as session:
            request = google.auth.transport.requests.Request(session=session)
            claims = google_id_token.verify_token(
                raw, request, audience=self._client_id, certs_url=self._certs_uri
            )
        return dict(claims)
