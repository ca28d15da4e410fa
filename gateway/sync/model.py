"""What the sync engine keeps of an event, and what is busy (pure: no I/O).

`parse_event` reduces one Google event resource to an `EventRecord`: ids, times, status,
transparency, whether the owner declined, recurrence links, etag and `updated`. Titles,
descriptions, attendees and locations are dropped (data minimisation) unless the deployment
opts in or the gateway itself created the event (`details`).

`blocks_for_series` turns a series (a single event, or a recurring master with its exceptions)
into busy blocks inside a horizon. Busy means: not cancelled, `opaque` (Google's default), not
declined by the calendar's owner, not a working-location marker, and for `tentative` events
whatever the deployment chose (busy by default, as Google's own free/busy does).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.sync.errors import EventParseError, RecurrenceError
from gateway.sync.recurrence import (
    day_span,
    expand_all_day,
    expand_timed,
    occurrence_key,
)

# The private extended property the gateway sets on events it creates (booking), so the sync
# engine recognises them and may keep them in full. Its value is the booking integration's
# `owner_tag`: only that integration's copy treats the event as its own.
GATEWAY_PROPERTY = "calendarGateway"

# Fields kept in `details` when they may be stored (opt-in, or an event the gateway created).
DETAIL_FIELDS = ("summary", "description", "location")

_INSTANCE_SUFFIX = re.compile(r"_(\d{8}(?:T\d{6}Z)?)$")


class EventRecord(NamedTuple):
    """The minimal copy of one Google event (a single event, a master or an exception).

    Timed events have `start_at`/`end_at` (UTC) and `time_zone` (the zone the series' wall
    times live in); all-day events have `start_date`/`end_date` (end exclusive). A cancelled
    event may have neither (Google's tombstones carry ids only). `original_start` is the
    occurrence key (see `recurrence.occurrence_key`) an exception replaces.

    A named tuple (immutable, compared field by field like the frozen dataclass it was) whose
    fields are `calendar_events`' columns in order: a sync builds one per event per run, and a
    tuple is built in C.
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
        """The id of the series this record belongs to (its own id when it is not an
        exception): blocks are recomputed per series."""
        return self.recurring_event_id or self.event_id

    @property
    def has_times(self) -> bool:
        return (self.start_at is not None and self.end_at is not None) or (
            self.start_date is not None and self.end_date is not None
        )


class BusyBlock(NamedTuple):
    """A busy interval [start, end) in UTC, from event `event_id` of series `series_id`.

    A named tuple, not a dataclass: a calendar makes thousands of them and sorts them, and
    tuples are built and compared in C (the order is the same: by start, end, ids)."""

    start: datetime
    end: datetime
    event_id: str
    series_id: str


@dataclass(frozen=True)
class Horizon:
    """The window [start, end) (UTC) inside which busy time is materialised."""

    start: datetime
    end: datetime


def zone(name: str | None, fallback: tzinfo = UTC) -> tzinfo:
    """The zone named `name`, or `fallback` for a missing or unknown name."""
    if not name:
        return fallback
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return fallback


def _parse_instant(value: Any, tz_name: str | None, calendar_tz: tzinfo) -> datetime:
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


def _parse_date(value: Any) -> date:
    if not isinstance(value, str):
        raise EventParseError("date is not a string")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise EventParseError("malformed date") from None


def _original_key(item: Mapping[str, Any], calendar_tz: tzinfo) -> str | None:
    original = item.get("originalStartTime")
    if isinstance(original, Mapping):
        if original.get("date"):
            return occurrence_key(_parse_date(original["date"]))
        if original.get("dateTime"):
            instant = _parse_instant(original["dateTime"], original.get("timeZone"), calendar_tz)
            return occurrence_key(instant)
    # Instance ids end with the original start in the same form (`<master>_<key>`).
    found = _INSTANCE_SUFFIX.search(str(item.get("id", "")))
    return found[1] if found else None


def _made_by(item: Mapping[str, Any], owner_tag: str | None) -> bool:
    """Whether the integration whose tag is `owner_tag` booked this event."""
    if not owner_tag:
        return False
    props = item.get("extendedProperties")
    private = props.get("private") if isinstance(props, Mapping) else None
    return isinstance(private, Mapping) and private.get(GATEWAY_PROPERTY) == owner_tag


def _details(item: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: item[k] for k in DETAIL_FIELDS if item.get(k)}
    attendees = item.get("attendees")
    if isinstance(attendees, list):
        out["attendees"] = [
            {k: a[k] for k in ("email", "responseStatus", "self") if k in a}
            for a in attendees
            if isinstance(a, Mapping)
        ]
    return out


def parse_event(
    item: Mapping[str, Any],
    *,
    calendar_tz: str,
    keep_details: bool = False,
    owner_tag: str | None = None,
) -> EventRecord:
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
        "original_start": _original_key(item, cal_tz) if recurring else None,
        "etag": str(item["etag"]) if item.get("etag") else None,
        "updated": str(item["updated"]) if item.get("updated") else None,
    }
    start, end = item.get("start"), item.get("end")
    if not isinstance(start, Mapping) or not isinstance(end, Mapping):
        if status == "cancelled":
            return EventRecord(**base)  # a tombstone: ids only
        raise EventParseError("event without start or end")
    attendees = item.get("attendees")
    declined = isinstance(attendees, list) and any(
        isinstance(a, Mapping) and a.get("self") and a.get("responseStatus") == "declined"
        for a in attendees
    )
    recurrence = item.get("recurrence")
    gateway_made = _made_by(item, owner_tag)
    base.update(
        transparency=str(item.get("transparency") or "opaque"),
        self_declined=declined,
        event_type=str(item.get("eventType") or "default"),
        recurrence=tuple(str(line) for line in recurrence) if recurrence else None,
        created_by_gateway=gateway_made,
        details=_details(item) if keep_details or gateway_made else None,
    )
    if start.get("date") is not None:
        return EventRecord(
            **base,
            all_day=True,
            start_date=_parse_date(start["date"]),
            end_date=_parse_date(end.get("date")),
        )
    tz_name = start.get("timeZone") or calendar_tz
    return EventRecord(
        **base,
        start_at=_parse_instant(start.get("dateTime"), tz_name, cal_tz),
        end_at=_parse_instant(end.get("dateTime"), end.get("timeZone") or tz_name, cal_tz),
        time_zone=str(tz_name),
    )


def is_busy(record: EventRecord, *, tentative_is_busy: bool = True) -> bool:
    """Whether the event makes the calendar's owner busy."""
    if record.cancelled or record.transparency == "transparent" or record.self_declined:
        return False
    if record.event_type == "workingLocation":
        return False  # a marker of where someone works, never busy time
    return tentative_is_busy or record.status != "tentative"


def _single_span(record: EventRecord, calendar_tz: tzinfo) -> tuple[datetime, datetime] | None:
    if record.all_day and record.start_date is not None and record.end_date is not None:
        return day_span(record.start_date, record.end_date, calendar_tz)
    if record.start_at is not None and record.end_at is not None:
        return record.start_at, record.end_at
    return None


def _single_block(
    record: EventRecord, series_id: str, calendar_tz: tzinfo, horizon: Horizon
) -> list[BusyBlock]:
    span = _single_span(record, calendar_tz)
    if span is None or span[1] <= span[0]:
        return []  # zero-length events block nothing
    if span[1] <= horizon.start or span[0] >= horizon.end:
        return []
    return [BusyBlock(span[0], span[1], record.event_id, series_id)]


def blocks_for_series(
    master: EventRecord | None,
    exceptions: Sequence[EventRecord],
    *,
    calendar_tz: str,
    horizon: Horizon,
    tentative_is_busy: bool = True,
) -> list[BusyBlock]:
    """Busy blocks of one series inside the horizon, sorted.

    `master` is the single event or recurring master (None if we only know exceptions, e.g.
    the master lies outside what Google sent); `exceptions` its modified and cancelled
    instances. Every exception removes the occurrence whose original start it names; a
    modified one adds its own block. A master whose recurrence cannot be read is treated as
    its first occurrence only (better than losing the event).
    """
    tz = zone(calendar_tz)
    blocks: list[BusyBlock] = []
    if (
        master is not None
        and master.has_times
        and is_busy(master, tentative_is_busy=tentative_is_busy)
    ):
        series_id = master.event_id
        if master.recurrence:
            replaced = {e.original_start for e in exceptions if e.original_start}
            try:
                if master.all_day:
                    assert master.start_date is not None and master.end_date is not None
                    occurrences = expand_all_day(
                        master.recurrence,
                        master.start_date,
                        master.end_date,
                        tz,
                        horizon.start,
                        horizon.end,
                    )
                else:
                    assert master.start_at is not None and master.end_at is not None
                    occurrences = expand_timed(
                        master.recurrence,
                        master.start_at,
                        master.end_at,
                        zone(master.time_zone, tz),
                        horizon.start,
                        horizon.end,
                    )
            except RecurrenceError:
                blocks.extend(_single_block(master, series_id, tz, horizon))
            else:
                blocks.extend(
                    BusyBlock(o.start, o.end, series_id, series_id)
                    for o in occurrences
                    if o.key not in replaced and o.end > o.start
                )
        else:
            blocks.extend(_single_block(master, series_id, tz, horizon))
    for exception in exceptions:
        if is_busy(exception, tentative_is_busy=tentative_is_busy):
            blocks.extend(_single_block(exception, exception.series_id, tz, horizon))
    return sorted(blocks)


def blocks_for_records(
    records: Iterable[EventRecord],
    *,
    calendar_tz: str,
    horizon: Horizon,
    tentative_is_busy: bool = True,
) -> list[BusyBlock]:
    """Busy blocks of every series the records form (records of a whole calendar, or of the
    series touched by a delta)."""
    masters: dict[str, EventRecord] = {}
    exceptions: dict[str, list[EventRecord]] = defaultdict(list)
    for record in records:
        if record.recurring_event_id:
            exceptions[record.recurring_event_id].append(record)
        else:
            masters[record.event_id] = record
    out: list[BusyBlock] = []
    tz = zone(calendar_tz)
    for series_id, master in masters.items():
        # Most series are one event without exceptions: what blocks_for_series does for
        # them, without its set-up per call.
        if series_id not in exceptions and not master.recurrence:
            if master.has_times and is_busy(master, tentative_is_busy=tentative_is_busy):
                out.extend(_single_block(master, series_id, tz, horizon))
            continue
        out.extend(
            blocks_for_series(
                master,
                exceptions.get(series_id, []),
                calendar_tz=calendar_tz,
                horizon=horizon,
                tentative_is_busy=tentative_is_busy,
            )
        )
    for series_id in exceptions.keys() - masters.keys():
        out.extend(
            blocks_for_series(
                None,
                exceptions[series_id],
                calendar_tz=calendar_tz,
                horizon=horizon,
                tentative_is_busy=tentative_is_busy,
            )
        )
    return sorted(out)
