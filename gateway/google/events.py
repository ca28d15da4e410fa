"""Google Calendar's event resource, read once: the only place that knows its wire fields.

Two typed readings of one resource, sharing the field extraction functions below:

* `parse_event` reduces an events.list item to an `Event`, what the sync engine keeps of it:
  ids, times, status, transparency, whether the owner declined, recurrence links, etag and
  `updated`. Titles, descriptions, attendees and locations are dropped (data minimisation)
  unless the deployment opts in or the gateway itself created the event (`details`). The sync
  engine's bulk ingest (gateway/sync/rows.py) goes from a page straight to row tuples with the
  same functions, without building an `Event` per item; `parse_event` stays its reference.
* `EventResource.parse` reads one event the gateway booked as Google answers it (insert, get,
  patch, a listing of its own events), in full: times as UTC instants, status, link, title,
  description, location and attendees' answers. Booking answers with it.

Pure: no I/O. Every failure to read is `EventParseError`, whose message names no personal data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.google.errors import EventParseError

# The private extended property the gateway sets on events it creates (booking), so the sync
# engine recognises them and may keep them in full. Its value is the booking integration's
# `owner_tag`: only that integration's copy treats the event as its own.
GATEWAY_PROPERTY = "calendarGateway"

# Fields kept in `details` when they may be stored (opt-in, or an event the gateway created).
DETAIL_FIELDS = ("summary", "description", "location")

# What a sync asks of events.list (Google's partial response, the `fields` parameter): the
# parts of a page and of its items that `parse_event` and the stored details read, nothing
# else. A real event carries much more (links, creator and organizer, reminders, conference
# data, attendees' names): never sent to us, never decoded.
LIST_FIELDS = (
    "nextPageToken,nextSyncToken,timeZone,items(id,status,etag,updated,start,end,"
    "transparency,eventType,recurrence,recurringEventId,originalStartTime,"
    "extendedProperties/private,attendees(email,responseStatus,self),"
    + ",".join(DETAIL_FIELDS)
    + ")"
)

_INSTANCE_SUFFIX = re.compile(r"_(\d{8}(?:T\d{6}Z)?)$")


class Event(NamedTuple):
    """The minimal copy of one Google event (a single event, a master or an exception).

    Timed events have `start_at`/`end_at` (UTC) and `time_zone` (the zone the series' wall
    times live in); all-day events have `start_date`/`end_date` (end exclusive). A cancelled
    event may have neither (Google's tombstones carry ids only). `original_start` is the
    occurrence key (see `occurrence_key`) an exception replaces.

    A named tuple (immutable, compared field by field like the frozen dataclass it was) whose
    fields are the sync engine's `calendar_events` columns in order: a sync builds one per
    event per run, and a tuple is built in C.
    """

    event_id: str
    status: str = "confirmed"
    transparency: str = "opaque"
    self_declined: bool = False
    event_type: str = "default"
    all_day: bool = False
    start_at: datetime | None = None
    end_at: datetime | None = None
    start_date: date | None = None
    end_date: date | None = None
    time_zone: str | None = None
    recurrence: tuple[str, ...] | None = None
    recurring_event_id: str | None = None
    original_start: str | None = None
    etag: str | None = None
    updated: str | None = None
    created_by_gateway: bool = False
    details: Mapping[str, Any] | None = None

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def series_id(self) -> str:
        """The id of the series this event belongs to (its own id when it is not an
        exception): blocks are recomputed per series."""
        return self.recurring_event_id or self.event_id

    @property
    def has_times(self) -> bool:
        return (self.start_at is not None and self.end_at is not None) or (
            self.start_date is not None and self.end_date is not None
        )


# -- field extraction (parse_event, EventResource and the sync engine's fast path) -------------


def occurrence_key(value: datetime | date) -> str:
    """The key of an original start: UTC `YYYYMMDDTHHMMSSZ` for an aware datetime, `YYYYMMDD`
    for a date (the same text Google appends to instance ids)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a timed original start must be aware")
        v = value.astimezone(UTC)
        # %-formatting, not strftime: one key per occurrence, and this is several times faster.
        return "%04d%02d%02dT%02d%02d%02dZ" % (v.year, v.month, v.day, v.hour, v.minute, v.second)  # noqa: UP031
    return "%04d%02d%02d" % (value.year, value.month, value.day)  # noqa: UP031


def zone(name: str | None, fallback: tzinfo = UTC) -> tzinfo:
    """The zone named `name`, or `fallback` for a missing or unknown name."""
    if not name:
        return fallback
    try:
        return ZoneInfo(name)
    # OSError: a name that is a folder of the zone database ("America") is no zone either.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return fallback


def parse_instant(value: Any, tz_name: str | None, calendar_tz: tzinfo) -> datetime:
    """A `dateTime` as a UTC instant; a value without an offset is in `tz_name` (else the
    calendar's zone)."""
    if not isinstance(value, str):
        raise EventParseError("dateTime is not a string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise EventParseError("malformed dateTime") from None
    if moment.tzinfo is None:
        # Google always sends an offset; a value without one is in the given zone.
        moment = moment.replace(tzinfo=zone(tz_name, calendar_tz))
    return moment.astimezone(UTC)


def parse_date(value: Any) -> date:
    """An all-day `date`."""
    if not isinstance(value, str):
        raise EventParseError("date is not a string")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise EventParseError("malformed date") from None


def original_key(item: Mapping[str, Any], calendar_tz: tzinfo) -> str | None:
    """The occurrence key of the original start an exception replaces."""
    original = item.get("originalStartTime")
    if isinstance(original, Mapping):
        if original.get("date"):
            return occurrence_key(parse_date(original["date"]))
        if original.get("dateTime"):
            instant = parse_instant(original["dateTime"], original.get("timeZone"), calendar_tz)
            return occurrence_key(instant)
    # Instance ids end with the original start in the same form (`<master>_<key>`).
    found = _INSTANCE_SUFFIX.search(str(item.get("id", "")))
    return found[1] if found else None


def made_by(item: Mapping[str, Any], owner_tag: str | None) -> bool:
    """Whether the integration whose tag is `owner_tag` booked this event."""
    if not owner_tag:
        return False
    props = item.get("extendedProperties")
    private = props.get("private") if isinstance(props, Mapping) else None
    return isinstance(private, Mapping) and private.get(GATEWAY_PROPERTY) == owner_tag


def kept_details(item: Mapping[str, Any]) -> dict[str, Any]:
    """Title, description, location and attendees (email, answer, self), as kept in `details`."""
    out: dict[str, Any] = {k: item[k] for k in DETAIL_FIELDS if item.get(k)}
    attendees = item.get("attendees")
    if isinstance(attendees, list):
        out["attendees"] = [
            {k: a[k] for k in ("email", "responseStatus", "self") if k in a}
            for a in attendees
            if isinstance(a, Mapping)
        ]
    return out


def declined_by_owner(attendees: list[Any]) -> bool:
    """Whether the calendar's owner (the attendee marked `self`) declined."""
    return any(
        isinstance(a, Mapping) and a.get("self") and a.get("responseStatus") == "declined"
        for a in attendees
    )


def is_cancelled(item: Mapping[str, Any]) -> bool:
    """Whether the item is a cancelled event (a tombstone may carry nothing but ids)."""
    return item.get("status") == "cancelled"


def utc_time(when: Any) -> datetime:
    """An event's `start` or `end` as a UTC instant: `dateTime`, or an all-day `date` at
    midnight UTC (how booking answers times)."""
    if not isinstance(when, Mapping):
        raise EventParseError("event without start or end")
    if when.get("dateTime"):
        return parse_instant(str(when["dateTime"]), None, UTC)
    try:
        return datetime.fromisoformat(str(when["date"])).replace(tzinfo=UTC)
    except (KeyError, ValueError):
        raise EventParseError("malformed date") from None


# -- the two readings -------------------------------------------------------------------------


def parse_event(
    item: Mapping[str, Any],
    *,
    calendar_tz: str,
    keep_details: bool = False,
    owner_tag: str | None = None,
) -> Event:
    """Reduce one events.list item to what availability and booking need.

    `keep_details` (GATEWAY_STORE_EVENT_DETAILS) keeps title, description, location and
    attendees; events the syncing integration booked (their private property equals its
    `owner_tag`) keep them regardless. Any other integration's meeting, even on the same
    Google account, is minimised like the user's own events. Raises EventParseError.
    """
    event_id = item.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise EventParseError("event without an id")
    cal_tz = zone(calendar_tz)
    status = str(item.get("status") or "confirmed")
    recurring = item.get("recurringEventId")
    base: dict[str, Any] = {
        "event_id": event_id,
        "status": status,
        "recurring_event_id": str(recurring) if recurring else None,
        "original_start": original_key(item, cal_tz) if recurring else None,
        "etag": str(item["etag"]) if item.get("etag") else None,
        "updated": str(item["updated"]) if item.get("updated") else None,
    }
    start, end = item.get("start"), item.get("end")
    if not isinstance(start, Mapping) or not isinstance(end, Mapping):
        if status == "cancelled":
            return Event(**base)  # a tombstone: ids only
        raise EventParseError("event without start or end")
    attendees = item.get("attendees")
    declined = isinstance(attendees, list) and declined_by_owner(attendees)
    recurrence = item.get("recurrence")
    gateway_made = made_by(item, owner_tag)
    base.update(
        transparency=str(item.get("transparency") or "opaque"),
        self_declined=declined,
        event_type=str(item.get("eventType") or "default"),
        recurrence=tuple(str(line) for line in recurrence) if recurrence else None,
        created_by_gateway=gateway_made,
        details=kept_details(item) if keep_details or gateway_made else None,
    )
    if start.get("date") is not None:
        return Event(
            **base,
            all_day=True,
            start_date=parse_date(start["date"]),
            end_date=parse_date(end.get("date")),
        )
    tz_name = start.get("timeZone") or calendar_tz
    return Event(
        **base,
        start_at=parse_instant(start.get("dateTime"), tz_name, cal_tz),
        end_at=parse_instant(end.get("dateTime"), end.get("timeZone") or tz_name, cal_tz),
        time_zone=str(tz_name),
    )


@dataclass(frozen=True)
class Attendee:
    """One attendee of a booked event and their answer (Google's `responseStatus`)."""

    email: str | None
    response_status: str | None


@dataclass(frozen=True)
class EventResource:
    """One event as Google answers it for the gateway's own bookings (see the module doc).
    Its repr names the id only: the rest may be personal."""

    id: str
    etag: str | None
    start: datetime
    end: datetime
    status: str
    html_link: str | None
    summary: str | None
    description: str | None
    location: str | None
    attendees: tuple[Attendee, ...]
    time_zone: str | None
    created: str | None
    updated: str | None

    def __repr__(self) -> str:
        return f"EventResource(id={self.id!r})"

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> EventResource:
        """Read an events.insert/get/patch answer or listed item. Raises EventParseError."""
        attendees = item.get("attendees")
        start = item.get("start")
        return cls(
            id=str(item.get("id")),
            etag=str(item["etag"]) if item.get("etag") else None,
            start=utc_time(start),
            end=utc_time(item.get("end")),
            status=str(item.get("status") or "confirmed"),
            html_link=str(item["htmlLink"]) if item.get("htmlLink") else None,
            summary=item.get("summary"),
            description=item.get("description"),
            location=item.get("location"),
            attendees=tuple(
                Attendee(email=a.get("email"), response_status=a.get("responseStatus"))
                for a in (attendees if isinstance(attendees, list) else [])
                if isinstance(a, Mapping)
            ),
            time_zone=start.get("timeZone") if isinstance(start, Mapping) else None,
            created=item.get("created"),
            updated=item.get("updated"),
        )
