"""Google's OAuth 2.0 token and revocation endpoints, over the app's shared aiohttp session.

Both calls POST `application/x-www-form-urlencoded` bodies: the refresh token, the token to
revoke and our client secret travel only in the body, never in a URL (URLs end up in proxy
and access logs). One call is one attempt; retrying is the caller's policy
(`gateway.google.retry.RetryPolicy`), because only the caller knows its budget.

Errors map onto `gateway.google.errors`:

    refresh   200                          -> TokenGrant (`parse_token_response`, the one
                                              parser of token answers, the code exchange's too)
              400 invalid_grant            -> InvalidGrant
              401/400 invalid_client,      -> OAuthClientMisconfigured
                  unauthorized_client
              5xx, 408, 429, 403 rate limit,
                  timeout, connection error -> TransientGoogleError
              anything else                -> UnexpectedGoogleResponse
    revoke    200                          -> True (revoked now)
              400 invalid_token            -> False (unknown or already revoked: done either way)
              transient as above           -> TransientGoogleError
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import aiohttp

from gateway.errors import ConfigurationError
from gateway.google.errors import (
    GoogleError,
    InvalidGrant,
    OAuthClientMisconfigured,
    TransientGoogleError,
    UnexpectedGoogleResponse,
)
from gateway.settings import Settings

log = logging.getLogger(__name__)

# Google's OAuth error bodies are a few hundred bytes; anything bigger is not one of them.
_MAX_BODY_BYTES = 64 * 1024
# Google's descriptions are short sentences; cap what we copy into messages.
_MAX_DESCRIPTION_CHARS = 200
_REDACTED = "[redacted]"
_RATE_LIMIT_ERRORS = frozenset(
    {"rate_limit_exceeded", "rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"}
)
_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


@dataclass(frozen=True)
class TokenGrant:
    """One token-endpoint answer (a code exchange or a refresh), parsed by
    `parse_token_response`. Tokens are kept out of `repr` (and so out of tracebacks).

    `refresh_token` is None unless Google issued one (on a refresh it then replaces the stored
    one); `scopes` is None when the answer did not list them (on a refresh: nothing changed);
    `expires_in_s` is None when the answer gave no usable lifetime.
    """

    access_token: str = field(repr=False)
    expires_in_s: int | None
    refresh_token: str | None = field(repr=False)
    scopes: frozenset[str] | None
    id_token: str | None = field(repr=False)

    @property
    def rotated(self) -> bool:
        """Whether Google issued a new refresh token (the old one is then dead)."""
        return self.refresh_token is not None

    @property
    def granted_scopes(self) -> frozenset[str]:
        """The scopes the answer lists (none listed: none known)."""
        return self.scopes if self.scopes is not None else frozenset()

    def expires_at(self, sent_at: datetime) -> datetime | None:
        """When the access token expires, counted from when it was asked for (`sent_at`), so
        never later than Google's own reckoning; None without a lifetime."""
        if self.expires_in_s is None:
            return None
        return sent_at + timedelta(seconds=self.expires_in_s)


class TokenRefresher(Protocol):
    """A refresh at Google's token endpoint (`GoogleOAuthClient` is the one; tests may wrap
    it)."""

    async def refresh(self, refresh_token: str) -> TokenGrant:
        """A new access token for the grant (one attempt, errors as in the module doc)."""
        ...


class TokenRevoker(Protocol):
    """A revocation at Google's revocation endpoint (`GoogleOAuthClient` is the one)."""

    async def revoke(self, token: str) -> bool:
        """True: revoked now; False: Google answered invalid_token (already revoked or
        expired, done either way)."""
        ...


def parse_token_response(data: object) -> TokenGrant:
    """Google's token answer (the decoded JSON object of a 200, or oauthlib's token dict of a
    code exchange) as a TokenGrant. Raises UnexpectedGoogleResponse (a message safe to log)
    when it is not an object or has no access token; a missing or unusable `expires_in` is
    None (the refresh refuses it, the code exchange stores no expiry)."""
    if not isinstance(data, Mapping):
        raise UnexpectedGoogleResponse("Google token answer is not an object", google_status=200)
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise UnexpectedGoogleResponse("Google token answer has no access_token", google_status=200)
    expires_in = data.get("expires_in")
    # Google sends an integer; tolerate a float or a digit string, refuse anything else (bools
    # are ints to Python).
    expires_in_s: int | None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        expires_in_s = max(0, int(expires_in))
    elif isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in_s = int(expires_in.strip())
    else:
        expires_in_s = None
    # A space-separated string on the wire; oauthlib hands a code exchange's on as a list.
    scope = data.get("scope")
    scopes: frozenset[str] | None
    if isinstance(scope, str):
        scopes = frozenset(scope.split())
    elif isinstance(scope, list | tuple):
        scopes = frozenset(str(s) for s in scope)
    else:
        scopes = None
    refresh_token = data.get("refresh_token")
    id_token = data.get("id_token")
    return TokenGrant(
        access_token=access_token,
        expires_in_s=expires_in_s,
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        scopes=scopes,
        id_token=id_token if isinstance(id_token, str) and id_token else None,
    )


class GoogleOAuthClient:
    """Refresh and revoke against Google's OAuth endpoints (or the emulator's)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token_uri: str,
        revoke_uri: str,
        client_id: str,
        client_secret: str,
        timeout_s: float = 10.0,
    ) -> None:
        self._session = session
        self.token_uri = token_uri
        self.revoke_uri = revoke_uri
        self.client_id = client_id
        self._client_secret = client_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def __repr__(self) -> str:
        return f"GoogleOAuthClient(client_id={self.client_id!r}, token_uri={self.token_uri!r})"

    @classmethod
    def from_settings(cls, session: aiohttp.ClientSession, settings: Settings) -> GoogleOAuthClient:
        """The client for the configured Google OAuth app; ConfigurationError if there is none."""
        secret = settings.google_client_secret
        if not settings.google_client_id or secret is None or not secret.get_secret_value():
            raise ConfigurationError(
                "GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET must both be set to talk to Google"
            )
        return cls(
            session,
            token_uri=settings.google_token_uri,
            revoke_uri=settings.google_revoke_uri,
            client_id=settings.google_client_id,
            client_secret=secret.get_secret_value(),
        )

    async def refresh(self, refresh_token: str) -> TokenGrant:
        """Exchange `refresh_token` for a new access token (one attempt, see module doc)."""
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.client_id,
            "client_secret": self._client_secret,
        }
        status, headers, body = await self._post(self.token_uri, form, "token")
        secrets = (refresh_token, self._client_secret)
        if status == 200:
            return _parse_grant(body)
        error, description = _oauth_error(body, secrets)
        if status == 400 and error == "invalid_grant":
            raise InvalidGrant(description=description)
        if error in _CLIENT_ERRORS:
            raise OAuthClientMisconfigured(
                _describe("token", status, error, description),
                google_status=status,
                google_error=error,
            )
        raise _status_error("token", status, headers, error, description)

    async def revoke(self, token: str) -> bool:
        """Revoke `token` (a refresh token revokes the whole grant). True: revoked now; False:
        Google did not know it (already revoked or expired), which counts as done."""
        status, headers, body = await self._post(self.revoke_uri, {"token": token}, "revoke")
        if status == 200:
            return True
        error, description = _oauth_error(body, (token, self._client_secret))
        if status == 400 and error == "invalid_token":
            return False
        raise _status_error("revoke", status, headers, error, description)

    async def _post(
        self, url: str, form: dict[str, str], what: str
    ) -> tuple[int, dict[str, str], bytes]:
        """POST `form`; return status, headers, body. Network failures become transient errors
        whose message names only the endpoint and the failure type (never the form)."""
        try:
            async with self._session.post(
                url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await response.content.read(_MAX_BODY_BYTES)
                return response.status, dict(response.headers), body
        except TimeoutError:
            raise TransientGoogleError(f"Google {what} endpoint timed out") from None
        except aiohttp.ClientError as exc:
            # The exception text may quote the URL (harmless) but we keep to its type.
            raise TransientGoogleError(
                f"Google {what} endpoint unreachable ({type(exc).__name__})"
            ) from None


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


def _oauth_error(body: bytes, secrets: tuple[str, ...]) -> tuple[str | None, str | None]:
    """Google's `(error, error_description)`, redacted and truncated; (None, None) if the body
    is not the OAuth error shape."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    if isinstance(error, dict):  # the Calendar-style envelope, seen on some front-end errors
        errors = error.get("errors")
        reason = errors[0].get("reason") if isinstance(errors, list) and errors else None
        message = error.get("message")
        error, description = reason, message
    else:
        description = data.get("error_description")
    error = _redact(error, secrets)[:64] if isinstance(error, str) else None
    description = (
        _redact(description, secrets)[:_MAX_DESCRIPTION_CHARS]
        if isinstance(description, str)
        else None
    )
    return error, description


def _describe(what: str, status: int, error: str | None, description: str | None) -> str:
    text = f"Google {what} endpoint answered {status}"
    if error:
        text += f" {error}"
    if description:
        text += f": {description}"
    return text


def _retry_after_s(headers: dict[str, str]) -> float | None:
    """Retry-After in seconds (the delta form; Google does not send HTTP dates here)."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _status_error(
    what: str, status: int, headers: dict[str, str], error: str | None, description: str | None
) -> GoogleError:
    message = _describe(what, status, error, description)
    transient = (
        status >= 500 or status in (408, 429) or (status == 403 and error in _RATE_LIMIT_ERRORS)
    )
    if transient:
        return TransientGoogleError(
            message,
            retry_after_s=_retry_after_s(headers),
            google_status=status,
            google_error=error,
        )
    return UnexpectedGoogleResponse(message, google_status=status, google_error=error)


def _parse_grant(body: bytes) -> TokenGrant:
    """A 200 refresh answer as a TokenGrant; UnexpectedGoogleResponse if it is not one."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        raise UnexpectedGoogleResponse(
            "Google token endpoint answered 200 with a body that is not JSON", google_status=200
        ) from None
    grant = parse_token_response(data)
    if grant.expires_in_s is None:
        # A refreshed token without a lifetime could never be refreshed ahead of time.
        raise UnexpectedGoogleResponse(
            "Google token answer has no usable expires_in", google_status=200
        )
    return grant
