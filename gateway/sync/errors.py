"""The sync package's errors.

    GatewayError (gateway.errors)
    └── SyncError             base of the sync package's own failures
        └── RecurrenceError   (also a ValueError) recurrence lines we cannot interpret; the
                              series falls back to its first occurrence

It does not leave the package: it is handled where the series is expanded. An event resource
we cannot read is Google's wire format, so its error lives there
(`gateway.google.errors.EventParseError`); the sync skips that event and keeps the rest of
its page. A calendar or
integration that does not exist is `gateway.errors.NotFound`; Google's failures are
`gateway.google.errors.GoogleError` and an inactive integration is
`gateway.connections.errors.IntegrationInactive`, raised through as they are.

Messages name no personal data (no event title, attendee or address).
"""

from __future__ import annotations

from gateway.errors import GatewayError


class SyncError(GatewayError):
    """Base of the sync package's own failures."""

    code = "sync_error"


class RecurrenceError(SyncError, ValueError):
    """Recurrence lines we cannot interpret (the caller falls back to the first occurrence)."""

    code = "recurrence_unreadable"
