"""Events as `calendar_events` rows: the ingest fast path (pure: no I/O).

A full sync of 1,000 events used to build an `EventRecord` per event and then a dict per row
for SQLAlchemy to process again, column by column. `parse_rows` goes from Google's decoded page
straight to one plain tuple per event, in the table's column order (`ROW_COLUMNS`, after
`calendar_id` and `generation`), which the store hands to the database driver as it is.

The values are driver-neutral: aware UTC datetimes for `start_at`/`end_at`, `YYYY-MM-DD` text
for all-day dates, JSON text for `recurrence` and `details`, booleans. `gateway.db.bulk` turns
the datetimes into SQLite's text form where needed.

`parse_event` (gateway/google/events.py, which also holds the field extraction functions used
here) stays the reference: `row_of(parse_event(item, ...))` is, by definition, the row of an
item, and `parse_rows` must produce exactly that (tests/sync/test_rows.py checks it on every
fixture and on generated events). Anything the fast path does not recognise as the common
shape (a non-string field, a time without an offset, a malformed value) is handed to that
reference path, so unusual input is treated exactly as before, errors included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson

from gateway.google.errors import EventParseError
from gateway.google.events import (
    kept_details,
    made_by,
    original_key,
    parse_event,
    zone,
)
from gateway.sync.model import EventRecord

# The columns of calendar_events after (calendar_id, generation), in the order of a row; the
# same names and order as EventRecord's fields.
ROW_COLUMNS = (
    "event_id",
    "status",
    "transparency",
    "self_declined",
    "event_type",
    "all_day",
    "start_at",
    "end_at",
    "start_date",
    "end_date",
    "time_zone",
    "recurrence",
    "recurring_event_id",
    "original_start",
    "etag",
    "updated",
    "created_by_gateway",
    "details",
)
EVENT_ID, STATUS, RECURRING_EVENT_ID = 0, 1, 12

EventRow = tuple[Any, ...]


@dataclass(frozen=True)
class Skipped:
    """An item that could not be read: Google's opaque id (cut) and why (no personal data)."""

    event_id: str
    reason: str


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits (an event's field of the wrong type, kept in
        # `details`): the standard library writes the same compact JSON.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def row_of(record: EventRecord) -> EventRow:
    """The row of a record (the reference conversion; the inverse of `record_of`)."""
    return (
        record.event_id,
        record.status,
        record.transparency,
        record.self_declined,
        record.event_type,
        record.all_day,
        record.start_at,
        record.end_at,
        record.start_date.isoformat() if record.start_date else None,
        record.end_date.isoformat() if record.end_date else None,
        record.time_zone,
        _json(list(record.recurrence)) if record.recurrence else None,
        record.recurring_event_id,
        record.original_start,
        record.etag,
        record.updated,
        record.created_by_gateway,
        _json(dict(record.details)) if record.details is not None else None,
    )


def record_of(row: EventRow) -> EventRecord:
    """The record of a row (for busy-block computation and reads)."""
    (
        event_id,
        status,
        transparency,
        self_declined,
        event_type,
        all_day,
        start_at,
        end_at,
        start_date,
        end_date,
        time_zone,
        recurrence,
        recurring_event_id,
        original_start,
        etag,
        updated,
        created_by_gateway,
        details,
    ) = row
    return EventRecord(
        event_id=event_id,
        status=status,
        transparency=transparency,
        self_declined=bool(self_declined),
        event_type=event_type,
        all_day=bool(all_day),
        start_at=start_at,
        end_at=end_at,
        start_date=date.fromisoformat(start_date) if start_date else None,
        end_date=date.fromisoformat(end_date) if end_date else None,
        time_zone=time_zone,
        recurrence=tuple(orjson.loads(recurrence)) if recurrence else None,
        recurring_event_id=recurring_event_id,
        original_start=original_start,
        etag=etag,
        updated=updated,
        created_by_gateway=bool(created_by_gateway),
        details=orjson.loads(details) if details else None,
    )


def _text(item: Mapping[str, Any], key: str) -> str | bool | None:
    """A field the reference reads as `str(v) if v else None`: the string, None, or False
    when it is neither (the caller then takes the reference path)."""
    value = item.get(key)
    if value is None or type(value) is str:
        return value or None
    return False


def _fast_row(
    item: Any, calendar_tz: str, cal_tz: Any, keep_details: bool, owner_tag: str | None
) -> EventRow | None:
    """The row of the common shape of an item, or None to take the reference path."""
    if type(item) is not dict:
        return None
    event_id = item.get("id")
    status = item.get("status") or "confirmed"
    recurring = _text(item, "recurringEventId")
    etag = _text(item, "etag")
    updated = _text(item, "updated")
    if (
        type(event_id) is not str
        or not event_id
        or type(status) is not str
        or recurring is False
        or etag is False
        or updated is False
    ):
        return None
    original = original_key(item, cal_tz) if recurring else None
    start, end = item.get("start"), item.get("end")
    if type(start) is not dict or type(end) is not dict:
        if status != "cancelled":
            return None  # the reference raises EventParseError
        # A tombstone: ids only.
        return (
            event_id,
            status,
            "opaque",
            False,
            "default",
            False,
            None,
            None,
            None,
            None,
            None,
            None,
            recurring,
            original,
            etag,
            updated,
            False,
            None,
        )
    transparency = item.get("transparency") or "opaque"
    event_type = item.get("eventType") or "default"
    if type(transparency) is not str or type(event_type) is not str:
        return None
    declined = False
    attendees = item.get("attendees")
    if attendees is not None:
        if type(attendees) is not list:
            return None
        declined = any(
            isinstance(a, Mapping) and a.get("self") and a.get("responseStatus") == "declined"
            for a in attendees
        )
    recurrence = item.get("recurrence")
    if recurrence:
        if type(recurrence) is not list:
            return None
        recurrence_text: str | None = _json([str(line) for line in recurrence])
    else:
        recurrence_text = None
    made = made_by(item, owner_tag)
    details = _json(kept_details(item)) if keep_details or made else None
    day = start.get("date")
    if day is not None:
        end_day = end.get("date")
        if type(day) is not str or type(end_day) is not str:
            return None
        try:
            first, last = date.fromisoformat(day).isoformat(), date.fromisoformat(end_day)
        except ValueError:
            return None
        return (
            event_id,
            status,
            transparency,
            declined,
            event_type,
            True,
            None,
            None,
            first,
            last.isoformat(),
            None,
            recurrence_text,
            recurring,
            original,
            etag,
            updated,
            made,
            details,
        )
    tz_name = start.get("timeZone") or calendar_tz
    begins, ends = start.get("dateTime"), end.get("dateTime")
    if type(begins) is not str or type(ends) is not str or type(tz_name) is not str:
        return None
    try:
        start_at, end_at = datetime.fromisoformat(begins), datetime.fromisoformat(ends)
    except ValueError:
        return None
    if start_at.tzinfo is None or end_at.tzinfo is None:
        return None  # a wall time in a named zone: the reference resolves the zone
    return (
        event_id,
        status,
        transparency,
        declined,
        event_type,
        False,
        start_at.astimezone(UTC),
        end_at.astimezone(UTC),
        None,
        None,
        tz_name,
        recurrence_text,
        recurring,
        original,
        etag,
        updated,
        made,
        details,
    )


def parse_rows(
    items: Iterable[Any],
    *,
    calendar_tz: str,
    keep_details: bool = False,
    owner_tag: str | None = None,
) -> tuple[list[EventRow], list[Skipped]]:
    """The rows of a page's items (exactly `row_of(parse_event(item, ...))` for each, see the
    module doc), and the items skipped because they cannot be read."""
    cal_tz = zone(calendar_tz)
    rows: list[EventRow] = []
    skipped: list[Skipped] = []
    for item in items:
        try:
            row = _fast_row(item, calendar_tz, cal_tz, keep_details, owner_tag)
        except EventParseError:
            row = None  # the reference path raises it again, with its own message
        if row is None:
            try:
                row = row_of(
                    parse_event(
                        item,
                        calendar_tz=calendar_tz,
                        keep_details=keep_details,
                        owner_tag=owner_tag,
                    )
                )
            except EventParseError as exc:
                skipped.append(Skipped(str(item.get("id", "?"))[:80], str(exc)))
                continue
        rows.append(row)
    return rows, skipped
