"""Recurring events: expansion across DST, EXDATE, modified and cancelled instances, ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from datetime import time as wall_time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from emulator.calendar_store import Calendar, CalendarStore, ListQuery
from emulator.recurrence import TimeValueError, parse_date, parse_datetime
from emulator.seed import seed_calendar
from tests.emulator.calendar_support import Api, error_of

NY = "America/New_York"


def weekly_ny(store: CalendarStore, cal: Calendar, count: int, *extra_lines: str) -> str:
    """Mondays 09:00-10:00 New York from 2026-10-19 (EDT) across the 2026-11-01 change to EST."""
    return store.insert_event(
        cal,
        {
            "id": "series00001",
            "summary": "Weekly",
            "start": {"dateTime": "2026-10-19T09:00:00", "timeZone": NY},
            "end": {"dateTime": "2026-10-19T10:00:00", "timeZone": NY},
            "recurrence": [f"RRULE:FREQ=WEEKLY;COUNT={count}", *extra_lines],
        },
    ).id


async def test_weekly_new_york_meeting_stays_9am_local_across_dst(
    api: Api, store: CalendarStore, alice_cal: Calendar
) -> None:
    weekly_ny(store, alice_cal, 4)
    status, body = await api.call(
        "GET",
        "calendars/primary/events",
        params={"singleEvents": "true", "orderBy": "startTime", "timeZone": NY},
    )
    assert status == 200
    assert [i["id"] for i in body["items"]] == [
        "series00001_20261019T130000Z",
        "series00001_20261026T130000Z",
        "series00001_20261102T140000Z",
        "series00001_20261109T140000Z",
    ]
    assert [i["start"]["dateTime"] for i in body["items"]] == [
        "2026-10-19T09:00:00-04:00",
        "2026-10-26T09:00:00-04:00",
        "2026-11-02T09:00:00-05:00",
        "2026-11-09T09:00:00-05:00",
    ]
    first = body["items"][0]
    assert first["recurringEventId"] == "series00001"
    assert first["originalStartTime"] == {"dateTime": "2026-10-19T09:00:00-04:00", "timeZone": NY}
    assert first["start"]["timeZone"] == NY and "recurrence" not in first

    # Without timeZone the calendar's zone (Berlin, itself changing on 2026-10-25) is used.
    _, body = await api.call(
        "GET", "calendars/primary/events", params={"singleEvents": "true", "orderBy": "startTime"}
    )
    assert [i["start"]["dateTime"] for i in body["items"]] == [
        "2026-10-19T15:00:00+02:00",
        "2026-10-26T14:00:00+01:00",
        "2026-11-02T15:00:00+01:00",
        "2026-11-09T15:00:00+01:00",
    ]


async def test_exdate_modified_and_cancelled_instances(
    api: Api, store: CalendarStore, alice_cal: Calendar
) -> None:
    weekly_ny(store, alice_cal, 5, "EXDATE;TZID=America/New_York:20261026T090000")
    status, moved = await api.call(
        "PATCH",
        "calendars/primary/events/series00001_20261102T140000Z",
        json={
            "summary": "Moved",
            "start": {"dateTime": "2026-11-02T11:00:00-05:00"},
            "end": {"dateTime": "2026-11-02T12:00:00-05:00"},
        },
    )
    assert status == 200, moved
    assert moved["recurringEventId"] == "series00001"
    assert moved["originalStartTime"]["dateTime"] == "2026-11-02T15:00:00+01:00"
    status, _ = await api.call("DELETE", "calendars/primary/events/series00001_20261109T140000Z")
    assert status == 204

    params = {"singleEvents": "true", "orderBy": "startTime", "timeZone": NY}
    _, body = await api.call("GET", "calendars/primary/events", params=params)
    assert [(i["start"]["dateTime"], i.get("summary")) for i in body["items"]] == [
        ("2026-10-19T09:00:00-04:00", "Weekly"),
        ("2026-11-02T11:00:00-05:00", "Moved"),
        ("2026-11-16T09:00:00-05:00", "Weekly"),
    ]
    _, body = await api.call(
        "GET", "calendars/primary/events", params={**params, "showDeleted": "true"}
    )
    cancelled = [i for i in body["items"] if i["status"] == "cancelled"]
    assert [c["id"] for c in cancelled] == ["series00001_20261109T140000Z"]

    # Unexpanded: master, the modified exception, and the cancelled instance in its minimal form.
    _, body = await api.call("GET", "calendars/primary/events")
    by_id = {i["id"]: i for i in body["items"]}
    assert set(by_id) == {
        "series00001",
        "series00001_20261102T140000Z",
        "series00001_20261109T140000Z",
    }
    assert set(by_id["series00001_20261109T140000Z"]) == {
        "kind",
        "etag",
        "id",
        "status",
        "recurringEventId",
        "originalStartTime",
    }

    _, body = await api.call(
        "GET", "calendars/primary/events/series00001/instances", params={"timeZone": NY}
    )
    assert [i["id"] for i in body["items"]] == [
        "series00001_20261019T130000Z",
        "series00001_20261102T140000Z",
        "series00001_20261116T140000Z",
    ]


async def test_instance_get_and_unknown_instance(
    api: Api, store: CalendarStore, alice_cal: Calendar
) -> None:
    weekly_ny(store, alice_cal, 2)
    status, inst = await api.call("GET", "calendars/primary/events/series00001_20261026T130000Z")
    assert status == 200 and inst["recurringEventId"] == "series00001"
    status, err = await api.call("GET", "calendars/primary/events/series00001_20261027T130000Z")
    assert status == 404 and error_of(err)["reason"] == "notFound"


async def test_all_day_series_ids_and_sync_of_exceptions(
    api: Api, store: CalendarStore, alice_cal: Calendar
) -> None:
    store.insert_event(
        alice_cal,
        {
            "id": "fest000001",
            "summary": "Holiday",
            "start": {"date": "2026-12-24"},
            "end": {"date": "2026-12-25"},
            "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"],
        },
    )
    _, full = await api.call("GET", "calendars/primary/events", params={"singleEvents": "true"})
    assert [i["id"] for i in full["items"]] == [
        "fest000001_20261224",
        "fest000001_20261225",
        "fest000001_20261226",
    ]
    assert full["items"][1]["start"] == {"date": "2026-12-25"}
    status, _ = await api.call(
        "PATCH", "calendars/primary/events/fest000001_20261225", json={"summary": "Christmas"}
    )
    assert status == 200
    _, inc = await api.call(
        "GET",
        "calendars/primary/events",
        params={"singleEvents": "true", "syncToken": full["nextSyncToken"]},
    )
    assert [(i["id"], i["summary"]) for i in inc["items"]] == [("fest000001_20261225", "Christmas")]


async def test_recurring_insert_needs_time_zone_and_valid_rule(api: Api) -> None:
    base = {
        "start": {"dateTime": "2026-11-24T09:00:00+01:00"},
        "end": {"dateTime": "2026-11-24T10:00:00+01:00"},
    }
    status, err = await api.call(
        "POST", "calendars/primary/events", json={**base, "recurrence": ["RRULE:FREQ=DAILY"]}
    )
    assert (
        status == 400 and error_of(err)["message"] == "Missing time zone definition for start time."
    )
    base["start"]["timeZone"] = "Europe/Berlin"
    status, err = await api.call(
        "POST", "calendars/primary/events", json={**base, "recurrence": ["RRULE:FREQ=SOMETIMES"]}
    )
    assert status == 400 and error_of(err)["message"] == "Invalid recurrence rule."


def test_time_parsing_uses_google_wording() -> None:
    with pytest.raises(TimeValueError) as info:
        parse_datetime("2013-09-24T03:06:00.000-07:0")
    assert (
        info.value.message
        == 'Invalid format: "2013-09-24T03:06:00.000-07:0" is malformed at "-07:0"'
    )
    with pytest.raises(TimeValueError):
        parse_datetime("2026-11-24T10:00:00")  # offset is mandatory in query parameters
    assert parse_datetime("2026-11-24T10:00:00", offset_required=False).tzinfo is None
    # Google ignores digits past the microsecond; lower-case separators are RFC 3339 too.
    micro = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)
    assert parse_datetime("2026-11-24T10:00:00.123456789Z") == micro
    assert parse_datetime("2026-11-24t10:00:00.1234567z") == micro
    assert parse_datetime("2026-11-24T11:00:00.5+01:00") == micro.replace(microsecond=500000)
    with pytest.raises(TimeValueError) as info:
        parse_date("2017-06-21T00:00:00+09:00")
    assert "Have you accidentally used DateTime instead of a Date?" in info.value.message


def test_seeding_ten_thousand_events_is_deterministic(store: CalendarStore) -> None:
    # Its speed (about 0.65 s for 10,000 events) is a benchmark figure, not asserted here.
    one = store.ensure_user("seed-a@example.com", "Europe/Berlin")
    two = store.ensure_user("seed-b@example.com", "Europe/Berlin")
    report = seed_calendar(store, one, seed=42, count=10_000)
    assert report["inserted"] == 10_000 and report["exceptions"] > 0 and report["deleted"] > 0
    seed_calendar(store, two, seed=42, count=300)
    ids_one = sorted(
        store.list_events(one, ListQuery(max_results=2500))["items"][i]["id"] for i in range(5)
    )
    assert ids_one == sorted(
        store.list_events(one, ListQuery(max_results=2500))["items"][i]["id"] for i in range(5)
    )
    first_300 = {
        b["id"]
        for b in store.list_events(two, ListQuery(max_results=2500, show_deleted=True))["items"]
    }
    assert first_300 <= set(one.events), "same seed, same ids"


ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/Santiago",
]


@settings(max_examples=40, deadline=None)
# Santiago's clocks jump from 00:00 to 01:00 on 2026-09-06: that day's 00:30 instance is
# 01:30 -03:00, and its id must still find it (a random example found this once).
@example("America/Santiago", 247, 0, "DAILY", 3)
@given(
    st.sampled_from(ZONES),
    st.integers(0, 364),
    st.integers(0, 23),
    st.sampled_from(["DAILY", "WEEKLY", "MONTHLY"]),
    st.integers(2, 30),
)
def test_every_instance_keeps_wall_time_and_round_trips_its_id(
    tz_name: str, day: int, hour: int, freq: str, count: int
) -> None:
    store = CalendarStore()
    cal = store.ensure_user("prop@example.com", "UTC")
    tz = ZoneInfo(tz_name)
    wall = datetime(2026, 1, 1, hour, 30) + timedelta(days=day)
    if wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
        return  # a wall time that does not exist in this zone (DST gap)
    master = store.insert_event(
        cal,
        {
            "start": {"dateTime": wall.isoformat(), "timeZone": tz_name},
            "end": {"dateTime": (wall + timedelta(hours=1)).isoformat(), "timeZone": tz_name},
            "recurrence": [f"RRULE:FREQ={freq};COUNT={count}"],
        },
    )
    page = store.list_events(
        cal, ListQuery(single_events=True, max_results=2500, time_zone=tz_name)
    )
    items = page["items"]
    assert 0 < len(items) <= count
    for item in items:
        start = datetime.fromisoformat(item["start"]["dateTime"])
        end = datetime.fromisoformat(item["end"]["dateTime"])
        # The series keeps its wall time; on a day where that time falls in a DST gap
        # (02:30 when clocks jump from 02:00 to 03:00) RFC 5545 moves it forward by the gap.
        local = start.astimezone(tz)
        intended = datetime.combine(local.date(), wall_time(hour, 30), tzinfo=tz)
        expected = intended.astimezone(UTC).astimezone(tz)
        assert (local.hour, local.minute) == (expected.hour, expected.minute), item["start"]
        assert end - start == timedelta(hours=1)
        assert item["id"] == f"{master.id}_{start.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"
        assert store.get_event(cal, item["id"])["start"] == item["start"] | {
            "dateTime": start.isoformat()
        }


async def test_instances_original_start_picks_one(
    api: Api, store: CalendarStore, alice_cal: Calendar
) -> None:
    weekly_ny(store, alice_cal, 4)
    status, body = await api.call(
        "GET",
        "calendars/primary/events/series00001/instances",
        params={"originalStart": "2026-11-02T09:00:00-05:00"},
    )
    assert status == 200
    assert [i["id"] for i in body["items"]] == ["series00001_20261102T140000Z"]
