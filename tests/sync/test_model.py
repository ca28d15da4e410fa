"""What is kept of an event and what is busy: Google's recorded responses, busy rules,
series with exceptions, data minimisation in the record."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.google.errors import EventParseError
from gateway.google.events import GATEWAY_PROPERTY, parse_event
from gateway.sync.model import (
    EventRecord,
    Horizon,
    blocks_for_records,
    blocks_for_series,
    is_busy,
)
from tests.fixtures import google_recording

HORIZON = Horizon(datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 12, 1, tzinfo=UTC))


def _load(name: str) -> Any:
    return google_recording(name)


def timed(event_id: str, start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "status": "confirmed",
        "start": {"dateTime": start, "timeZone": "Europe/Berlin"},
        "end": {"dateTime": end, "timeZone": "Europe/Berlin"},
        **extra,
    }


def test_recorded_event_pages_parse() -> None:
    page = _load("northworld-events.json")
    records = [parse_event(i, calendar_tz=page["timeZone"]) for i in page["items"]]
    assert records and all(r.has_times for r in records)
    master = records[0]
    assert master.recurrence and master.recurrence[0].startswith("RRULE:FREQ=WEEKLY")
    assert master.start_at == datetime(2011, 10, 3, 16, 30, tzinfo=UTC)
    assert master.time_zone == "America/Los_Angeles"
    # The recorded series still expand (their UNTIL is in UTC).
    window = Horizon(datetime(2011, 1, 1, tzinfo=UTC), datetime(2013, 1, 1, tzinfo=UTC))
    assert len(blocks_for_series(master, [], calendar_tz=page["timeZone"], horizon=window)) > 10

    repeating = _load("northworld-repeating_events.json")
    [daily] = [parse_event(i, calendar_tz=repeating["timeZone"]) for i in repeating["items"]]
    window = Horizon(datetime(2014, 11, 1, tzinfo=UTC), datetime(2014, 12, 1, tzinfo=UTC))
    blocks = blocks_for_series(daily, [], calendar_tz=repeating["timeZone"], horizon=window)
    assert [b.start.day for b in blocks] == [16, 17, 18]  # 17:00 PST is 01:00 UTC next day


def test_recorded_cancelled_instance_parses_as_an_exception() -> None:
    record = parse_event(_load("northworld-cancelled_events.json"), calendar_tz="Asia/Tokyo")
    assert record.cancelled and not record.has_times
    assert record.recurring_event_id == "5hskl88u70fdekmted80rkjut4_R20150527T010000"
    assert record.original_start == "20150701T010000Z"


def test_details_are_dropped_unless_opted_in_or_made_by_the_gateway() -> None:
    item = timed(
        "ev1",
        "2026-11-23T10:00:00+01:00",
        "2026-11-23T11:00:00+01:00",
        summary="Secret merger",
        description="Top secret",
        location="Room 7",
        attendees=[{"email": "x@example.com", "responseStatus": "accepted"}],
    )
    assert parse_event(item, calendar_tz="Europe/Berlin").details is None
    opted = parse_event(item, calendar_tz="Europe/Berlin", keep_details=True)
    assert opted.details is not None and opted.details["summary"] == "Secret merger"
    booked = {**item, "extendedProperties": {"private": {GATEWAY_PROPERTY: "tag-of-ours"}}}
    ours = parse_event(booked, calendar_tz="Europe/Berlin", owner_tag="tag-of-ours")
    assert ours.created_by_gateway and ours.details is not None
    assert ours.details["attendees"] == [{"email": "x@example.com", "responseStatus": "accepted"}]
    # Another integration's meeting (same Google account, other tenant or an earlier
    # connection) is the user's event to this one: minimised.
    theirs = parse_event(booked, calendar_tz="Europe/Berlin", owner_tag="tag-of-another")
    assert not theirs.created_by_gateway and theirs.details is None
    assert parse_event(booked, calendar_tz="Europe/Berlin").details is None


@pytest.mark.parametrize(
    ("extra", "busy", "busy_if_tentative_free"),
    [
        ({}, True, True),
        ({"transparency": "transparent"}, False, False),
        ({"status": "tentative"}, True, False),
        (
            {"attendees": [{"email": "a@x", "self": True, "responseStatus": "declined"}]},
            False,
            False,
        ),
        ({"attendees": [{"email": "b@x", "responseStatus": "declined"}]}, True, True),
        (
            {"attendees": [{"email": "a@x", "self": True, "responseStatus": "tentative"}]},
            True,
            True,
        ),
        ({"eventType": "workingLocation"}, False, False),
        ({"status": "cancelled"}, False, False),
    ],
)
def test_what_is_busy(extra: dict[str, Any], busy: bool, busy_if_tentative_free: bool) -> None:
    record = parse_event(
        timed("ev1", "2026-11-23T10:00:00+01:00", "2026-11-23T11:00:00+01:00", **extra),
        calendar_tz="Europe/Berlin",
    )
    assert is_busy(record) is busy
    assert is_busy(record, tentative_is_busy=False) is busy_if_tentative_free


def test_all_day_blocks_whole_local_days() -> None:
    record = parse_event(
        {"id": "day1", "start": {"date": "2026-12-24"}, "end": {"date": "2026-12-26"}},
        calendar_tz="Europe/Berlin",
    )
    [block] = blocks_for_series(record, [], calendar_tz="Europe/Berlin", horizon=HORIZON)
    assert block.start == datetime(2026, 12, 23, 23, tzinfo=UTC)
    assert block.end == datetime(2026, 12, 25, 23, tzinfo=UTC)  # end date exclusive


def test_series_with_exdate_modified_and_cancelled_instances_across_dst() -> None:
    master = parse_event(
        {
            **timed("s1", "2027-03-15T09:00:00+01:00", "2027-03-15T10:00:00+01:00"),
            "recurrence": [
                "RRULE:FREQ=WEEKLY;COUNT=6",
                "EXDATE;TZID=Europe/Berlin:20270322T090000",
            ],
        },
        calendar_tz="Europe/Berlin",
    )
    moved = parse_event(
        {
            **timed(
                "s1_20270329T070000Z", "2027-03-29T11:00:00+02:00", "2027-03-29T12:00:00+02:00"
            ),
            "recurringEventId": "s1",
            "originalStartTime": {"dateTime": "2027-03-29T09:00:00+02:00"},
        },
        calendar_tz="Europe/Berlin",
    )
    cancelled = parse_event(
        {
            "id": "s1_20270405T070000Z",
            "status": "cancelled",
            "recurringEventId": "s1",
            "originalStartTime": {"dateTime": "2027-04-05T09:00:00+02:00"},
        },
        calendar_tz="Europe/Berlin",
    )
    blocks = blocks_for_records(
        [cancelled, moved, master], calendar_tz="Europe/Berlin", horizon=HORIZON
    )
    assert [(b.start.strftime("%m-%d %H:%M"), b.event_id) for b in blocks] == [
        ("03-15 08:00", "s1"),
        ("03-29 09:00", "s1_20270329T070000Z"),
        ("04-12 07:00", "s1"),
        ("04-19 07:00", "s1"),
    ]
    assert {b.series_id for b in blocks} == {"s1"}


def test_declined_master_frees_every_occurrence_but_a_busy_exception_stays() -> None:
    master = EventRecord(
        event_id="s2",
        self_declined=True,
        start_at=datetime(2026, 11, 23, 9, tzinfo=UTC),
        end_at=datetime(2026, 11, 23, 10, tzinfo=UTC),
        time_zone="UTC",
        recurrence=("RRULE:FREQ=DAILY;COUNT=3",),
    )
    accepted = EventRecord(
        event_id="s2_20261124T090000Z",
        start_at=datetime(2026, 11, 24, 9, tzinfo=UTC),
        end_at=datetime(2026, 11, 24, 10, tzinfo=UTC),
        recurring_event_id="s2",
        original_start="20261124T090000Z",
    )
    blocks = blocks_for_series(master, [accepted], calendar_tz="UTC", horizon=HORIZON)
    assert [b.event_id for b in blocks] == ["s2_20261124T090000Z"]


def test_unreadable_recurrence_keeps_the_first_occurrence() -> None:
    master = EventRecord(
        event_id="s3",
        start_at=datetime(2026, 11, 23, 9, tzinfo=UTC),
        end_at=datetime(2026, 11, 23, 10, tzinfo=UTC),
        recurrence=("RRULE:FREQ=NEVER",),
    )
    assert len(blocks_for_series(master, [], calendar_tz="UTC", horizon=HORIZON)) == 1


def test_malformed_events_are_refused() -> None:
    with pytest.raises(EventParseError):
        parse_event({"status": "confirmed"}, calendar_tz="UTC")
    with pytest.raises(EventParseError):
        parse_event({"id": "x", "start": {"dateTime": "soon"}, "end": {}}, calendar_tz="UTC")
    with pytest.raises(EventParseError):
        parse_event({"id": "x", "status": "confirmed"}, calendar_tz="UTC")
