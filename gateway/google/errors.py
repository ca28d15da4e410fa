"""Google's failures, as the rest of the gateway sees them.

    GatewayError
    └── GoogleError                   base: Google answered with an error, or could not be reached
        ├── InvalidGrant              400 invalid_grant: the grant is dead (revoked, expired,
        │                             unused six months, password change, token limit, testing app)
        ├── RevokedOrInvalidToken     the token we presented is unknown or revoked
        ├── OAuthClientMisconfigured  invalid_client / unauthorized_client: our client id or
        │                             secret is wrong for this grant (an operator must act)
        ├── TransientGoogleError      5xx, 408, 429, 403 rate limit, timeouts, connection errors:
        │   │                         retry later with backoff (`retry_after_s` when Google says)
        │   └── RateLimited           403/429 usageLimits (rateLimitExceeded, quotaExceeded, ...)
        ├── InsufficientScope         Calendar 403 insufficientPermissions: the grant lacks a scope
        ├── GoogleNotFound            Calendar 404: no such calendar or event
        ├── DuplicateEvent            Calendar 409 duplicate: a client-chosen event id exists
        ├── SyncTokenExpired          Calendar 410 fullSyncRequired / updatedMinTooLongAgo
        ├── EventGone                 Calendar 410 deleted: the event was deleted already
        ├── PreconditionFailed        Calendar 412 conditionNotMet: the If-Match etag is stale
        ├── CalendarBadRequest        Calendar 400 (`location` names the parameter or field)
        └── UnexpectedGoogleResponse  anything else (a 4xx we do not expect, a malformed body)
            └── EventParseError       (also a ValueError) an event resource we cannot read

Every message here is safe to log: it names the HTTP status and Google's error code and
description, never a token, a client secret or a user's address. Callers building a message
must keep that promise (the OAuth client redacts any echo of what it sent).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import GatewayError


class GoogleError(GatewayError):
    """Base of every Google failure.

    `google_status` is the HTTP status Google answered (None when there was no answer) and
    `google_error` Google's machine code (`invalid_grant`, `rateLimitExceeded`, ...) if any.
    """

    code = "google_error"

    def __init__(
        self,
        message: str,
        *,
        google_status: int | None = None,
        google_error: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.google_status = google_status
        self.google_error = google_error

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, google_status={self.google_status!r}, "
            f"google_error={self.google_error!r})"
        )


class InvalidGrant(GoogleError):
    """Google killed the grant: the integration needs the user to connect again.

    `reason` is the short code we persist (`integrations.reauth_reason`, at most 64 chars);
    Google does not say *why* a grant died, so it is `invalid_grant` unless a caller knows more.
    """

    code = "invalid_grant"

    def __init__(
        self,
        reason: str = "invalid_grant",
        *,
        description: str | None = None,
        google_status: int | None = 400,
    ) -> None:
        detail = f": {description}" if description else ""
        super().__init__(
            f"Google refused the grant ({reason}){detail}",
            google_status=google_status,
            google_error="invalid_grant",
        )
        self.reason = reason[:64]
        self.description = description


class RevokedOrInvalidToken(GoogleError):
    """The token presented is unknown, expired or revoked (revocation's `invalid_token`, or a
    Calendar API 401 that a refresh could not cure)."""

    code = "invalid_token"


class OAuthClientMisconfigured(GoogleError):
    """Google does not accept our OAuth client (wrong id or secret, or a grant made to another
    client). Never the user's fault, never retried: GOOGLE_CLIENT_ID/SECRET need fixing."""

    code = "oauth_client_misconfigured"


class TransientGoogleError(GoogleError):
    """A failure worth retrying later: Google is down, slow, unreachable or rate limiting us.

    `retry_after_s` is Google's Retry-After, when it sent one. Never a sign of revocation.
    """

    code = "google_unavailable"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        google_status: int | None = None,
        google_error: str | None = None,
    ) -> None:
        super().__init__(message, google_status=google_status, google_error=google_error)
        self.retry_after_s = retry_after_s


class UnexpectedGoogleResponse(GoogleError):
    """Google answered something we do not understand (bad JSON, an unexpected 4xx)."""

    code = "google_unexpected_response"


# -- Calendar v3 (gateway.google.calendar) ------------------------------------------------


class RateLimited(TransientGoogleError):
    code = "google_rate_limited"


class InsufficientScope(GoogleError):
    code = "google_insufficient_scope"


class GoogleNotFound(GoogleError):
    code = "google_not_found"


class DuplicateEvent(GoogleError):
    code = "google_duplicate"


class SyncTokenExpired(GoogleError):
    code = "google_sync_token_expired"


class EventGone(GoogleError):
    code = "google_gone"


class PreconditionFailed(GoogleError):
    code = "google_precondition_failed"


class CalendarBadRequest(GoogleError):
    code = "google_bad_request"

    def __init__(self, message: str, *, location: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.location = location


class EventParseError(UnexpectedGoogleResponse, ValueError):
    """An event resource we cannot read (`gateway.google.events`); its message names no
    personal data. Sync skips such an event and keeps the rest of its page."""

    code = "event_unreadable"
