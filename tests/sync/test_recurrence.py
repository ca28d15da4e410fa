"""Local expansion of recurring series: DST, EXDATE/RDATE forms, COUNT/UNTIL, all-day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sync.errors import RecurrenceError
from gateway.sync.recurrence import (
    expand_all_day,
    expand_timed,
    occurrence_key,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
WINDOW = (datetime(2026, 9, 1, tzinfo=UTC), datetime(2027, 12, 31, tzinfo=UTC))


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)  # type: ignore[misc]


def weekly_ny(*lines: str, start: datetime | None = None) -> list[datetime]:
    first = start or ny(2026, 10, 19, 9)
    occurrences = expand_timed(lines, first, first + timedelta(hours=1), NY, *WINDOW)
    for o in occurrences:
        assert o.end - o.start == timedelta(hours=1)
    return [o.start for o in occurrences]


def test_new_york_9am_stays_9am_across_the_november_change() -> None:
    starts = weekly_ny("RRULE:FREQ=WEEKLY;COUNT=4")
    assert [s.strftime("%m-%d %H:%M") for s in starts] == [
        "10-19 13:00",
        "10-26 13:00",
        "11-02 14:00",
        "11-09 14:00",
    ]
    assert {s.astimezone(NY).hour for s in starts} == {9}


def test_new_york_9am_stays_9am_across_the_march_change() -> None:
    starts = weekly_ny("RRULE:FREQ=WEEKLY;COUNT=3", start=ny(2027, 3, 8, 9))
    assert [s.strftime("%m-%d %H:%M") for s in starts] == [
        "03-08 14:00",
        "03-15 13:00",
        "03-22 13:00",
    ]


@pytest.mark.parametrize(
    "exdate",
    [
        "EXDATE;TZID=America/New_York:20261026T090000",
        "EXDATE:20261026T130000Z",
        "EXDATE;VALUE=DATE:20261026",
        "EXDATE;TZID=Europe/Berlin:20261026T140000",  # the same instant in another zone
    ],
)
def test_exdate_forms_remove_the_occurrence(exdate: str) -> None:
    starts = weekly_ny("RRULE:FREQ=WEEKLY;COUNT=3", exdate)
    assert [s.date() for s in starts] == [date(2026, 10, 19), date(2026, 11, 2)]


def test_exdate_after_the_dst_change_in_local_time() -> None:
    starts = weekly_ny("RRULE:FREQ=WEEKLY;COUNT=4", "EXDATE;TZID=America/New_York:20261102T090000")
    assert date(2026, 11, 2) not in [s.date() for s in starts] and len(starts) == 3


@pytest.mark.parametrize(
    ("until", "count"),
    [
        ("UNTIL=20261102T140000Z", 3),  # UTC, exactly the third start: inclusive
        ("UNTIL=20261102T135959Z", 2),
        ("UNTIL=20261102", 3),  # a date includes the whole day
        ("UNTIL=20261102T090000", 3),  # local
        ("COUNT=2", 2),
    ],
)
def test_count_and_until(until: str, count: int) -> None:
    assert len(weekly_ny(f"RRULE:FREQ=WEEKLY;{until}")) == count


def test_rdate_adds_occurrences() -> None:
    starts = weekly_ny(
        "RRULE:FREQ=WEEKLY;COUNT=2",
        "RDATE;TZID=America/New_York:20261021T150000,20261023T150000",
    )
    assert [s.astimezone(NY).strftime("%d %H") for s in starts] == [
        "19 09",
        "21 15",
        "23 15",
        "26 09",
    ]


def test_endless_rule_stops_at_the_window() -> None:
    starts = weekly_ny("RRULE:FREQ=DAILY")
    assert starts[0] == ny(2026, 10, 19, 9) and starts[-1] < WINDOW[1]
    assert len(starts) == (WINDOW[1].date() - date(2026, 10, 19)).days


def test_window_cuts_both_ends_and_counts_partial_overlap() -> None:
    first = ny(2026, 10, 19, 9)
    window = (ny(2026, 10, 26, 9, 30), ny(2026, 11, 2, 9))  # inside the 2nd, touching the 3rd
    occ = expand_timed(["RRULE:FREQ=WEEKLY"], first, first + timedelta(hours=1), NY, *window)
    assert [o.start.astimezone(NY).day for o in occ] == [26]


def test_keys_match_google_instance_suffixes() -> None:
    [o] = expand_timed(
        ["RRULE:FREQ=DAILY;COUNT=1"], ny(2026, 10, 19, 9), ny(2026, 10, 19, 10), NY, *WINDOW
    )
    assert o.key == "20261019T130000Z"
    assert occurrence_key(date(2026, 12, 24)) == "20261224"


def test_all_day_series_blocks_local_days_across_dst() -> None:
    occ = expand_all_day(
        ["RRULE:FREQ=WEEKLY;COUNT=3"], date(2027, 3, 21), date(2027, 3, 22), BERLIN, *WINDOW
    )
    assert [o.key for o in occ] == ["20270321", "20270328", "20270404"]
    assert [o.end - o.start for o in occ] == [
        timedelta(hours=24),
        timedelta(hours=23),
        timedelta(hours=24),
    ]
    assert occ[0].start == datetime(2027, 3, 20, 23, tzinfo=UTC)  # Berlin midnight, CET
    assert occ[2].start == datetime(2027, 4, 3, 22, tzinfo=UTC)  # CEST


def test_all_day_until_and_exdate() -> None:
    occ = expand_all_day(
        ["RRULE:FREQ=DAILY;UNTIL=20261224", "EXDATE;VALUE=DATE:20261223"],
        date(2026, 12, 21),
        date(2026, 12, 22),
        BERLIN,
        *WINDOW,
    )
    assert [o.key for o in occ] == ["20261221", "20261222", "20261224"]


def test_unreadable_rules_raise() -> None:
    with pytest.raises(RecurrenceError):
        weekly_ny("RRULE:FREQ=SOMETIMES")
    with pytest.raises(RecurrenceError):
        weekly_ny("EXDATE:20261026T130000Z")  # nothing recurs
    with pytest.raises(RecurrenceError):
        weekly_ny("RRULE:FREQ=WEEKLY", "EXDATE;TZID=Mars/Olympus:20261026T090000")


@pytest.mark.parametrize(
    "value",
    ["20261332", "2026102", "20261026T0900", "20261026X090000", "2026\uff11026", "20261026T25000Z"],
)
def test_malformed_until_and_exdate_values_raise(value: str) -> None:
    # Out of range, too short, a wrong separator, a non-ASCII digit, a 25th hour.
    with pytest.raises(RecurrenceError):
        weekly_ny(f"RRULE:FREQ=WEEKLY;UNTIL={value}")
    with pytest.raises(RecurrenceError):
        weekly_ny("RRULE:FREQ=WEEKLY", f"EXDATE:{value}")


ZONES = ["America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata", "UTC"]


@settings(max_examples=60, deadline=None)
@given(
    zone_name=st.sampled_from(ZONES),
    day=st.dates(min_value=date(2026, 9, 1), max_value=date(2027, 6, 1)),
    hour=st.integers(min_value=4, max_value=22),  # no DST gap in these zones at these hours
    minutes=st.integers(min_value=15, max_value=600),
    freq=st.sampled_from(["DAILY", "WEEKLY", "MONTHLY"]),
    count=st.integers(min_value=1, max_value=40),
)
def test_wall_time_and_duration_are_kept(
    zone_name: str, day: date, hour: int, minutes: int, freq: str, count: int
) -> None:
    tz = ZoneInfo(zone_name)
    first = datetime(day.year, day.month, day.day, hour, tzinfo=tz)
    occ = expand_timed(
        [f"RRULE:FREQ={freq};COUNT={count}"],
        first,
        first + timedelta(minutes=minutes),
        tz,
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2031, 1, 1, tzinfo=UTC),
    )
    assert 1 <= len(occ) <= count
    assert occ[0].start == first
    for o in occ:
        assert o.start.astimezone(tz).hour == hour
        assert o.end - o.start == timedelta(minutes=minutes)
        assert o.key == occurrence_key(o.start)
    assert [o.start for o in occ] == sorted({o.start for o in occ})
