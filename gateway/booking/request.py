"""What a booking asks for, checked (pure: no I/O).

`parse_booking(...)` and `parse_change(...)` take typed values (the HTTP layer's strict JSON
models, or an MCP tool's arguments) and return immutable requests, or raise InvalidInput naming
the field. `BookingRequest.fingerprint()` is what an Idempotency-Key is bound to: the request
after defaults and normalisation (instants in UTC, attendees lower-cased and sorted), so the
same booking spelled differently is still the same booking.

Calendars are named by the gateway's `cal_...` ids (as availability answers name them), never
by address; None means the integration's primary calendar.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from gateway.booking.idempotency import body_fingerprint
from gateway.clock import rfc3339
from gateway.errors import InvalidInput
from gateway.google.events import GATEWAY_PROPERTY

SendUpdates = Literal["all", "none"]
SEND_UPDATES: tuple[SendUpdates, ...] = ("all", "none")

# One meeting at most this long: availability checks (if_free) answer windows up to 62 days,
# and a "meeting" of weeks is a mistake more often than not.
MAX_DURATION = timedelta(days=14)
MAX_SUMMARY = 1024
MAX_DESCRIPTION = 8192
MAX_LOCATION = 1024
MAX_ATTENDEES = 100
CALENDAR_ID = re.compile(r"^cal_[0-9a-f]{24}$")
# Google event ids: base32hex, 5-1024 characters (the gateway's own are 52).
EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
_ZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LINE_BREAK = re.compile(r"[\r\n]")


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", code="invalid_field", extra={"field": field})


def _text(field: str, value: str | None, max_len: int, *, multiline: bool = False) -> str | None:
    if value is None:
        return None
    if not value.strip():
        raise _invalid(field, "must not be blank")
    if len(value) > max_len:
        raise _invalid(field, f"at most {max_len} characters")
    if _CONTROL.search(value) or (not multiline and _LINE_BREAK.search(value)):
        raise _invalid(field, "must not contain control characters")
    return value


def _instant(field: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        raise _invalid(field, "must have an offset")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is a valid RFC 3339 time whose UTC falls in year 0.
        raise _invalid(field, "is out of range") from None


def _times(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start, end = _instant("start", start), _instant("end", end)
    if end <= start:
        raise _invalid("end", "must be after start")
    if end - start > MAX_DURATION:
        raise _invalid("end", f"a booking may last at most {MAX_DURATION.days} days")
    return start, end


def _attendees(values: Sequence[str] | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if len(values) > MAX_ATTENDEES:
        raise _invalid("attendees", f"at most {MAX_ATTENDEES} attendees")
    seen: set[str] = set()
    for n, email in enumerate(values):
        if not _EMAIL.match(email):
            raise _invalid(f"attendees[{n}].email", "must be an email address")
        if email.lower() in seen:
            raise _invalid(f"attendees[{n}].email", "given more than once")
        seen.add(email.lower())
    return tuple(values)


def _zone_name(value: str | None) -> str | None:
    if value is not None and not _ZONE.match(value):
        raise _invalid("time_zone", "must be an IANA time zone name such as Europe/Berlin")
    return value


def known_time_zone(name: str) -> bool:
    """Whether `name` is a time zone this machine knows. Reads zone files: call it off the
    event loop (asyncio.to_thread)."""
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


def _when(moment: datetime, time_zone: str | None) -> dict[str, str]:
    out = {"dateTime": rfc3339(moment)}
    if time_zone is not None:
        out["timeZone"] = time_zone
    return out


@dataclass(frozen=True)
class BookingRequest:
    """One event to book. `start`/`end` are UTC; `time_zone` (IANA) is the zone Google shows
    the event in (None: the calendar's)."""

    summary: str
    start: datetime
    end: datetime
    calendar_id: str | None = None
    description: str | None = None
    location: str | None = None
    time_zone: str | None = None
    attendees: tuple[str, ...] = ()
    send_updates: SendUpdates = "none"
    if_free: bool = True

    def __repr__(self) -> str:
        # Titles and attendees are personal data: not for logs.
        return f"BookingRequest(start={self.start!r}, end={self.end!r}, if_free={self.if_free})"

    def canonical(self) -> dict[str, Any]:
        """The request after defaults and normalisation (what the fingerprint covers)."""
        return {
            "calendar_id": self.calendar_id,
            "summary": self.summary,
            "description": self.description,
            "location": self.location,
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "time_zone": self.time_zone,
            "attendees": sorted(a.lower() for a in self.attendees),
            "send_updates": self.send_updates,
            "if_free": self.if_free,
        }

    def fingerprint(self) -> str:
        """SHA-256 (hex) of `canonical()`: an Idempotency-Key is bound to it."""
        return body_fingerprint(self.canonical())

    def google_body(self, event_id: str, owner_tag: str) -> dict[str, Any]:
        """The events.insert body, with our id and the booking integration's mark
        (`Integration.owner_tag`), by which only that integration recognises the event."""
        body: dict[str, Any] = {
            "id": event_id,
            "summary": self.summary,
            "start": _when(self.start, self.time_zone),
            "end": _when(self.end, self.time_zone),
            "extendedProperties": {"private": {GATEWAY_PROPERTY: owner_tag}},
        }
        if self.description is not None:
            body["description"] = self.description
        if self.location is not None:
            body["location"] = self.location
        if self.attendees:
            body["attendees"] = [{"email": a} for a in self.attendees]
        return body


def parse_booking(
    *,
    summary: str,
    start: datetime,
    end: datetime,
    calendar_id: str | None = None,
    description: str | None = None,
    location: str | None = None,
    time_zone: str | None = None,
    attendees: Sequence[str] | None = None,
    send_updates: str | None = None,
    if_free: bool | None = None,
) -> BookingRequest:
    """A checked BookingRequest, or InvalidInput naming the first wrong field. Whether
    `time_zone` exists is checked by the service (it reads zone files)."""
    checked_summary = _text("summary", summary, MAX_SUMMARY)
    assert checked_summary is not None
    start_utc, end_utc = _times(start, end)
    if calendar_id is not None and not CALENDAR_ID.match(calendar_id):
        raise _invalid("calendar_id", "must be a calendar id of this integration (cal_...)")
    if send_updates is not None and send_updates not in SEND_UPDATES:
        raise _invalid("send_updates", "must be all or none")
    return BookingRequest(
        summary=checked_summary,
        start=start_utc,
        end=end_utc,
        calendar_id=calendar_id,
        description=_text("description", description, MAX_DESCRIPTION, multiline=True),
        location=_text("location", location, MAX_LOCATION),
        time_zone=_zone_name(time_zone),
        attendees=_attendees(attendees),
        send_updates=send_updates or "none",
        if_free=True if if_free is None else if_free,
    )


@dataclass(frozen=True)
class EventChange:
    """A PATCH of a booked event: only the fields given change (None: unchanged)."""

    summary: str | None = None
    description: str | None = None
    location: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    time_zone: str | None = None
    attendees: tuple[str, ...] | None = None
    send_updates: SendUpdates = "none"

    def __repr__(self) -> str:
        return f"EventChange(start={self.start!r}, end={self.end!r})"

    def google_patch(self) -> dict[str, Any]:
        """The events.patch body."""
        body: dict[str, Any] = {}
        for name in ("summary", "description", "location"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.start is not None:
            body["start"] = _when(self.start, self.time_zone)
        if self.end is not None:
            body["end"] = _when(self.end, self.time_zone)
        if self.attendees is not None:
            body["attendees"] = [{"email": a} for a in self.attendees]
        return body


def parse_change(
    *,
    summary: str | None = None,
    description: str | None = None,
    location: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    time_zone: str | None = None,
    attendees: Sequence[str] | None = None,
    send_updates: str | None = None,
) -> EventChange:
    """A checked EventChange, or InvalidInput naming the field. Times move together: give
    both `start` and `end` (a half-moved event is a common mistake)."""
    if (start is None) != (end is None):
        raise _invalid("end" if end is None else "start", "give start and end together")
    start_utc = end_utc = None
    if start is not None and end is not None:
        start_utc, end_utc = _times(start, end)
    if time_zone is not None and start is None:
        raise _invalid("time_zone", "only with start and end")
    if send_updates is not None and send_updates not in SEND_UPDATES:
        raise _invalid("send_updates", "must be all or none")
    change = EventChange(
        summary=_text("summary", summary, MAX_SUMMARY),
        description=_text("description", description, MAX_DESCRIPTION, multiline=True),
        location=_text("location", location, MAX_LOCATION),
        start=start_utc,
        end=end_utc,
        time_zone=_zone_name(time_zone),
        attendees=_attendees(attendees) if attendees is not None else None,
        send_updates=send_updates or "none",
    )
    if not change.google_patch():
        raise InvalidInput("give at least one field to change", code="empty_change")
    return change
