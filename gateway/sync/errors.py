"""The sync package's errors.

    GatewayError (gateway.errors)
    └── SyncError             base of the sync package's own failures
        ├── EventParseError   (also a ValueError) an event resource we cannot read; the page's
        │                     other events are kept and this one is skipped
        └── RecurrenceError   (also a ValueError) recurrence lines we cannot interpret; the
                              series falls back to its first occurrence

Neither leaves the package: both are handled where the event or series is read. A calendar or
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


class EventParseError(SyncError, ValueError):
    """An event resource we cannot read (its message names no personal data)."""

    code = "event_unreadable"


class RecurrenceError(SyncError, ValueError):
    """Recurrence lines we cannot interpret (the caller falls back to the first occurrence)."""

    code = "recurrence_unreadable"
