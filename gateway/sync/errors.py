"""The sync package's errors.

    GatewayError (gateway.errors)
    └── SyncError             base of the sync package's own failures
        ├── RecurrenceError   (also a ValueError) recurrence lines we cannot interpret; the
        │                     series falls back to its first occurrence
        └── CalendarZoneChanged  an incremental listing names another time zone for the
                              calendar than the copy was built in: the engine resyncs it

Neither leaves the package: the first is handled where the series is expanded, the second by
the sync engine (a full resync, as after a 410). An event resource
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


class CalendarZoneChanged(SyncError):
    """The calendar's time zone changed at Google since its copy was built (the engine then
    builds a new copy in the new zone: all-day events and series without a zone of their own
    are busy at other instants)."""

    code = "calendar_zone_changed"
