"""What is busy, from the events the sync engine keeps (pure: no I/O).

The events themselves are Google's, read once in `gateway.google.events` (`parse_event` reduces
an events.list item to an `Event`: ids, times, status, transparency, whether the owner
declined, recurrence links, etag and `updated`; details only when they may be kept). The sync
engine calls the `Event` it keeps an `EventRecord`.

`blocks_for_series` turns a series (a single event, or a recurring master with its exceptions)
into busy blocks inside a horizon. Busy means: not cancelled, `opaque` (Google's default), not
declined by the calendar's owner, not a working-location marker, and for `tentative` events
whatever the deployment chose (busy by default, as Google's own free/busy does).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import NamedTuple

from gateway.google.events import Event, zone
from gateway.sync.errors import RecurrenceError
from gateway.sync.recurrence import (
    day_span,
    expand_all_day,
    expand_timed,
)

# What the sync engine keeps of an event: Google's event as `gateway.google.events` reads it.
EventRecord = Event


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
                        keys=bool(replaced),
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
