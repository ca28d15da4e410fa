"""POST /v1/slots over real HTTP against the Google emulator, on SQLite and PostgreSQL: working
hours across a DST change, buffers (also against busy time just outside the window), several
people in both modes, minimum notice, and unknown time never offered as free."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import utc_now
from gateway.http.appkeys import INTEGRATIONS_KEY
from tests.support.availability import (
    ALICE,
    ERIN,
    FRANK,
    Response,
    at,
    call,
    connect,
    day,
    event,
    freebusy_calls,
    key_with,
    rate_limit,
    sync,
    z,
)
from tests.support.stack import Stack

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS_9_TO_5 = {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}


async def slots(stack: Stack, key: str | None = None, **body: Any) -> Response:
    request = {"mode": "all", "time_zone": "UTC", "duration_minutes": 60, **body}
    return await call(stack, "POST", "/v1/slots", json=request, key=key)


def starts(answer: Response) -> list[str]:
    assert answer.status == 200, answer.body
    return [s["start"] for s in answer.body["slots"]]


def next_berlin_dst_sunday(after: date) -> date:
    """The next last Sunday of March or October (Berlin's DST changes) after `after`."""
    found = []
    for year in (after.year, after.year + 1):
        for month in (3, 10):
            d = date(year, month, 31)
            while d.weekday() != 6:
                d -= timedelta(days=1)
            found.append(d)
    return min(d for d in found if d > after)


def berlin(d: date, hhmm: str) -> datetime:
    return datetime.combine(d, time.fromisoformat(hhmm), BERLIN)


async def test_working_hours_hold_in_local_time_across_a_dst_change(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    sunday = next_berlin_dst_sunday(date.today() + timedelta(days=3))
    friday, monday = sunday - timedelta(days=2), sunday + timedelta(days=1)
    event(stack, ALICE, berlin(monday, "10:00"), berlin(monday, "11:00"))
    event(stack, ALICE, berlin(sunday, "10:00"), berlin(sunday, "11:00"))  # not a working day
    await sync(stack, alice)
    answer = await slots(
        stack,
        integration_ids=[alice],
        time_min=z(berlin(friday, "00:00")),
        time_max=z(berlin(monday + timedelta(days=1), "00:00")),
        time_zone="Europe/Berlin",
        working_hours=WEEKDAYS_9_TO_5,
        granularity_minutes=60,
    )
    expected = [z(berlin(friday, f"{h:02d}:00")) for h in range(9, 17)] + [
        z(berlin(monday, f"{h:02d}:00")) for h in range(9, 17) if h != 10
    ]
    assert starts(answer) == expected
    assert answer.body["complete"] is True
    # The same 09:00 local is a different UTC hour on each side of the change.
    friday_nine = datetime.fromisoformat(expected[0])
    monday_nine = datetime.fromisoformat(expected[8])
    assert friday_nine.astimezone(UTC).hour != monday_nine.astimezone(UTC).hour
    assert abs(friday_nine.astimezone(UTC).hour - monday_nine.astimezone(UTC).hour) == 1
    assert all(s["integration_ids"] == [alice] for s in answer.body["slots"])


async def test_buffers_keep_free_time_around_busy_time_even_outside_the_window(
    stack: Stack,
) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    event(stack, ALICE, at(d, "10:00"), at(d, "11:00"))
    event(stack, ALICE, at(d, "13:05"), at(d, "13:30"))  # after the window's end
    await sync(stack, alice)
    common: dict[str, Any] = {
        "integration_ids": [alice],
        "time_min": z(at(d, "09:00")),
        "time_max": z(at(d, "13:00")),
        "duration_minutes": 30,
        "granularity_minutes": 15,
    }
    plain = await slots(stack, **common)
    assert starts(plain) == [
        z(at(d, t))
        for t in ("09:00", "09:15", "09:30", "11:00", "11:15", "11:30", "11:45", "12:00")
    ] + [z(at(d, "12:15")), z(at(d, "12:30"))]
    buffered = await slots(stack, **common, buffer_minutes=15)
    assert starts(buffered) == [
        z(at(d, t)) for t in ("09:00", "09:15", "11:15", "11:30", "11:45", "12:00", "12:15")
    ]
    limited = await slots(stack, **common, buffer_minutes=15, limit=3)
    assert starts(limited) == starts(buffered)[:3]


async def test_several_people_in_both_modes(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    erin = await connect(stack, ERIN)
    d = day(10)
    event(stack, ALICE, at(d, "09:00"), at(d, "10:00"))
    event(stack, ERIN, at(d, "10:00"), at(d, "11:00"))
    await sync(stack, alice)  # Erin is never synced: her calendar is asked live
    common: dict[str, Any] = {
        "integration_ids": [alice, erin],
        "time_min": z(at(d, "09:00")),
        "time_max": z(at(d, "12:00")),
        "granularity_minutes": 60,
    }
    group = await slots(stack, **common, mode="all")
    assert group.body["slots"] == [
        {"start": z(at(d, "11:00")), "end": z(at(d, "12:00")), "integration_ids": [alice, erin]}
    ]
    assert group.body["complete"] is True
    assert group.body["integrations"][alice]["source"] == "cache"
    assert group.body["integrations"][erin]["source"] == "google"

    robin = await slots(stack, **common, mode="any")
    assert [(s["start"], s["integration_ids"]) for s in robin.body["slots"]] == [
        (z(at(d, "09:00")), [erin]),
        (z(at(d, "10:00")), [alice]),
        (z(at(d, "11:00")), [alice, erin]),
    ]


async def test_an_unknown_calendar_is_never_offered_as_free(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    frank = await connect(stack, FRANK)  # never synced, and Google rate-limits him
    d = day(7)
    await sync(stack, alice)
    rate_limit(stack, FRANK, times=2)
    common: dict[str, Any] = {
        "integration_ids": [alice, frank],
        "time_min": z(at(d, "09:00")),
        "time_max": z(at(d, "12:00")),
        "granularity_minutes": 60,
    }
    robin = await slots(stack, **common, mode="any")
    assert [(s["start"], s["integration_ids"]) for s in robin.body["slots"]] == [
        (z(at(d, h)), [alice]) for h in ("09:00", "10:00", "11:00")
    ]
    assert robin.body["complete"] is False
    assert robin.body["incomplete_integration_ids"] == [frank]
    assert robin.body["integrations"][frank]["problem"]["code"] == "rate_limited"
    assert robin.body["integrations"][alice]["complete"] is True

    group = await slots(stack, **common, mode="all")
    assert group.body["slots"] == [] and group.body["complete"] is False


async def test_a_stale_copy_offers_no_slot_and_nobody_known_is_503(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    frank = await connect(stack, FRANK)
    d = day(7)
    [calendar_id] = await sync(stack, alice)
    rate_limit(stack, ALICE)
    stale = await slots(
        stack,
        integration_ids=[alice],
        time_min=z(at(d, "09:00")),
        time_max=z(at(d, "12:00")),
        max_staleness_s=0,
    )
    assert stale.status == 200, stale.body
    assert stale.body["slots"] == [] and stale.body["complete"] is False
    assert stale.body["integrations"][alice]["calendars"][calendar_id]["state"] == "stale"

    rate_limit(stack, FRANK)
    nobody = await slots(
        stack, integration_ids=[frank], time_min=z(at(d, "09:00")), time_max=z(at(d, "12:00"))
    )
    assert nobody.status == 503, nobody.body
    assert nobody.body["code"] == "rate_limited" and int(nobody.headers["Retry-After"]) >= 1


async def test_min_notice_counts_from_now(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    await sync(stack, alice)
    hour = utc_now().replace(minute=0, second=0, microsecond=0)
    before = utc_now()
    answer = await slots(
        stack,
        integration_ids=[alice],
        time_min=z(hour - timedelta(hours=1)),
        time_max=z(hour + timedelta(hours=8)),
        duration_minutes=30,
        granularity_minutes=15,
        min_notice_minutes=120,
    )
    after = utc_now()
    first = datetime.fromisoformat(starts(answer)[0])
    assert before + timedelta(minutes=120) <= first + timedelta(seconds=1)
    assert first < after + timedelta(minutes=120 + 15)


async def test_invalid_requests_are_422_and_ask_google_nothing(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    ok: dict[str, Any] = {
        "integration_ids": [alice],
        "time_min": z(at(d, "09:00")),
        "time_max": z(at(d, "17:00")),
    }
    bad: list[tuple[dict[str, Any], str]] = [
        ({**ok, "time_min": "2026-12-01T09:00:00"}, "time_min"),
        ({**ok, "time_max": z(at(d, "08:00"))}, "time_max"),
        ({**ok, "time_max": z(d + timedelta(days=70))}, "time_max"),
        ({**ok, "integration_ids": [f"int_{n:024x}" for n in range(51)]}, "integration_ids"),
        ({**ok, "integration_ids": [alice, alice]}, "integration_ids[1]"),
        ({**ok, "attendees": []}, "attendees"),
        ({**ok, "time_zone": "Mars/Olympus_Mons"}, "time_zone"),
        ({**ok, "working_hours": {"mon": [["09:00", "08:00"]]}}, "working_hours"),
        ({**ok, "working_hours": {"funday": [["09:00", "10:00"]]}}, "working_hours"),
        ({**ok, "duration_minutes": 0}, "duration_minutes"),
        ({**ok, "duration_minutes": "60"}, "duration_minutes"),
        ({**ok, "mode": "some"}, "mode"),
        ({**ok, "buffer_minutes": -5}, "buffer_minutes"),
        ({**ok, "max_staleness_s": 90000}, "max_staleness_s"),
    ]
    for body, field in bad:
        answer = await slots(stack, **body)
        assert answer.status == 422, (body, answer.body)
        assert answer.body["field"] == field, (body, answer.body)
    assert freebusy_calls(stack) == 0


async def test_scope_tenant_and_inactive(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    erin = await connect(stack, ERIN)
    d = day(7)
    body: dict[str, Any] = {
        "integration_ids": [alice, erin],
        "time_min": z(at(d, "09:00")),
        "time_max": z(at(d, "17:00")),
    }
    no_read = await key_with(stack, "connections:read", "connections:write", "calendar:write")
    assert (await slots(stack, key=no_read, **body)).status == 403

    foreign = await slots(stack, key=stack.other_tenant_key, **body)
    assert foreign.status == 404 and foreign.body["code"] == "integration_not_found"
    unknown = await slots(stack, **{**body, "integration_ids": [alice, "int_" + "a" * 24]})
    assert unknown.status == 404

    await stack.app[INTEGRATIONS_KEY].mark_needs_reauth(erin, reason="invalid_grant", at=utc_now())
    inactive = await slots(stack, **body)
    assert inactive.status == 409, inactive.body
    assert inactive.body["code"] == "integration_inactive"
    assert inactive.body["integration_status"] == "needs_reauth"
    assert freebusy_calls(stack) == 0
