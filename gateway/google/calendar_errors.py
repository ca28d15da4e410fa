"""Calendar v3 failures: the Calendar branch of the Google error tree in `gateway.google.errors`.

GoogleError
├── TransientGoogleError
│   └── RateLimited          403/429 usageLimits (rateLimitExceeded, userRateLimitExceeded,
│                            quotaExceeded, dailyLimitExceeded): back off, then retry
├── InsufficientScope        403 insufficientPermissions: the grant lacks a scope
├── GoogleNotFound           404: no such calendar or event
├── DuplicateEvent           409 duplicate: a client-chosen event id exists already
├── SyncTokenExpired         410 fullSyncRequired / updatedMinTooLongAgo: drop the token
├── EventGone                410 deleted: the event was deleted already
├── PreconditionFailed       412 conditionNotMet: If-Match etag is stale
└── CalendarBadRequest       400: a request Google refused (`location` names the field)
"""

from __future__ import annotations

from typing import Any

from gateway.google.errors import GoogleError, TransientGoogleError


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
