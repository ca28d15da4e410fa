"""The stepped path for common rules (gateway/sync/recurrence.py) gives exactly dateutil's
occurrences: generated rules, first starts around DST changes in several zones, EXDATEs in every
form, windows cutting anywhere, and rules it must leave to dateutil."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sync.errors import RecurrenceError
from gateway.sync.recurrence import (
    Occurrence,
    expand_all_day,
    expand_timed,
)

ZONES = [ZoneInfo(z) for z in ("America/New_York", "Europe/Berlin", "Australia/Sydney", "UTC")]
DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")

_starts = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.none()
).map(lambda d: d.replace(second=0, microsecond=0))


@st.composite
def rules(draw: st.DrawFn, first: datetime) -> list[str]:
    parts = [f"FREQ={draw(st.sampled_from(['DAILY', 'WEEKLY', 'WEEKLY', 'MONTHLY']))}"]
    if draw(st.booleans()):
        parts.append(f"INTERVAL={draw(st.integers(1, 4))}")
    end = draw(st.sampled_from(["count", "until-utc", "until-local", "until-date", "none"]))
    last = first + timedelta(days=draw(st.integers(-3, 400)))
    if end == "count":
        parts.append(f"COUNT={draw(st.integers(0, 60))}")
    elif end == "until-utc":
        parts.append(f"UNTIL={last:%Y%m%dT%H%M%S}Z")
    elif end == "until-local":
        parts.append(f"UNTIL={last:%Y%m%dT%H%M%S}")
    elif end == "until-date":
        parts.append(f"UNTIL={last:%Y%m%d}")
    if draw(st.booleans()):
        own = DAYS[first.weekday()]
        parts.append(f"BYDAY={draw(st.sampled_from([own, own, 'MO,WE', '1MO', 'SU']))}")
    if draw(st.integers(0, 9)) == 0:
        parts.append("WKST=SU")
    lines = ["RRULE:" + ";".join(draw(st.permutations(parts)))]
    for _ in range(draw(st.integers(0, 2))):
        skip = first + timedelta(weeks=draw(st.integers(0, 8)))
        form = draw(st.sampled_from(["utc", "tzid", "floating", "date", "list"]))
        if form == "utc":
            lines.append(f"EXDATE:{skip.astimezone(UTC):%Y%m%dT%H%M%S}Z")
        elif form == "tzid":
            lines.append(f"EXDATE;TZID=Europe/Berlin:{skip:%Y%m%dT%H%M%S}")
        elif form == "floating":
            lines.append(f"EXDATE:{skip:%Y%m%dT%H%M%S}")
        elif form == "date":
            lines.append(f"EXDATE;VALUE=DATE:{skip:%Y%m%d}")
        else:
            more = skip + timedelta(days=1)
            lines.append(f"EXDATE:{skip:%Y%m%dT%H%M%S},{more:%Y%m%dT%H%M%S}")
    if draw(st.integers(0, 9)) == 0:
        lines.append(f"RDATE:{last:%Y%m%dT%H%M%S}")
    return lines


def both(expand: object, *args: object) -> tuple[list[Occurrence] | str, list[Occurrence] | str]:
    """(stepped path, dateutil), each the occurrences or the error's type name."""
    out: list[list[Occurrence] | str] = []
    for fast in (True, False):
        try:
            out.append(expand(*args, fast=fast))  # type: ignore[operator]
        except (RecurrenceError, ValueError) as exc:
            out.append(type(exc).__name__)
    return out[0], out[1]


@settings(max_examples=300, deadline=None)
@given(st.data(), _starts, st.sampled_from(ZONES), st.integers(-30, 400), st.integers(1, 400))
def test_timed_series_match_dateutil(
    data: st.DataObject, first: datetime, tz: ZoneInfo, offset_days: int, span_days: int
) -> None:
    lines = data.draw(rules(first.replace(tzinfo=tz)))
    start = first.replace(tzinfo=tz)
    window_start = (start + timedelta(days=offset_days)).astimezone(UTC)
    window = (window_start, window_start + timedelta(days=span_days))
    fast, slow = both(expand_timed, lines, start, start + timedelta(minutes=45), tz, *window)
    assert fast == slow, lines


@settings(max_examples=150, deadline=None)
@given(st.data(), _starts, st.sampled_from(ZONES), st.integers(1, 3), st.integers(-30, 400))
def test_all_day_series_match_dateutil(
    data: st.DataObject, first: datetime, tz: ZoneInfo, days: int, offset_days: int
) -> None:
    day = first.date()
    lines = data.draw(rules(datetime.combine(day, datetime.min.time())))
    window_start = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(
        days=offset_days
    )
    window = (window_start, window_start + timedelta(days=365))
    fast, slow = both(expand_all_day, lines, day, day + timedelta(days=days), tz, *window)
    assert fast == slow, lines


def test_the_common_weekly_rule_with_an_exdate() -> None:
    tz = ZoneInfo("America/New_York")
    start = datetime(2026, 10, 19, 9, tzinfo=tz)  # a Monday, weeks across the November change
    lines = ["RRULE:FREQ=WEEKLY;BYDAY=MO;UNTIL=20261130T235959Z", "EXDATE:20261102T140000Z"]
    window = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    fast, slow = both(expand_timed, lines, start, start + timedelta(hours=1), tz, *window)
    assert fast == slow
    assert [o.key for o in fast] == [  # type: ignore[union-attr]
        "20261019T130000Z",
        "20261026T130000Z",
        "20261109T140000Z",
        "20261116T140000Z",
        "20261123T140000Z",
        "20261130T140000Z",
    ]
    assert date(2026, 11, 2) not in {o.start.date() for o in fast}  # type: ignore[union-attr]
