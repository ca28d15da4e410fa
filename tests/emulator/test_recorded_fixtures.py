"""Real Google recordings (tests/fixtures/google) load, serve and round-trip.

`northworld-events.json` is anonymised and two of its items share one id; a calendar cannot hold
two events with one id, so the store keeps the later item and reports the repeat."""

from __future__ import annotations

from typing import Any

import aiohttp

from emulator.calendar_store import CalendarStore
from emulator.discovery import load_discovery
from emulator.errors import GoogleApiError
from tests.emulator.calendar_support import Api
from tests.fixtures import google_recording
from tests.support.emulator import ALICE, RunningEmulator


def fixture(name: str) -> Any:
    return google_recording(name)


def test_recordings_themselves_validate_against_discovery_schemas() -> None:
    discovery = load_discovery()
    assert discovery.response_problems("Events", fixture("northworld-events.json")) == []
    assert discovery.response_problems("Events", fixture("northworld-repeating_events.json")) == []
    assert discovery.response_problems("Event", fixture("northworld-cancelled_events.json")) == []
    assert (
        discovery.response_problems("FreeBusyResponse", fixture("northworld-freebusy_query.json"))
        == []
    )


async def test_events_page_round_trips(api: Api, store: CalendarStore) -> None:
    recorded = fixture("northworld-events.json")
    cal = store.add_calendar(ALICE.email, "placeholder", "UTC")
    report = store.load_events_payload(cal, recorded)
    assert report.duplicate_ids == ["fhru34kt6ikmr20knd2456l08n"]
    status, served = await api.call("GET", f"calendars/{cal.id}/events")
    assert status == 200
    for key in ("kind", "summary", "description", "timeZone", "accessRole", "defaultReminders"):
        assert served[key] == recorded[key], key
    expected = {item["id"]: item for item in recorded["items"]}  # the later duplicate wins
    assert {i["id"]: i for i in served["items"]} == expected
    status, one = await api.call(
        "GET",
        f"calendars/{cal.id}/events/_75342gho74p3aba4852j6b9k6l0j2ba16l23cba18p2j8h9p74o4adhh6k",
    )
    assert status == 200 and one == expected[one["id"]]


async def test_repeating_events_expand_with_google_instance_ids(
    api: Api, store: CalendarStore
) -> None:
    cal = store.add_calendar(ALICE.email, "placeholder", "UTC")
    store.load_events_payload(cal, fixture("northworld-repeating_events.json"))
    _, served = await api.call(
        "GET", f"calendars/{cal.id}/events", params={"singleEvents": "true", "orderBy": "startTime"}
    )
    assert [i["id"] for i in served["items"]] == [
        "fhru34kt6ikmr20knd2456l08n_20141116T010000Z",
        "fhru34kt6ikmr20knd2456l08n_20141117T010000Z",
        "fhru34kt6ikmr20knd2456l08n_20141118T010000Z",
    ]
    assert served["items"][0]["start"] == {
        "timeZone": "America/Los_Angeles",
        "dateTime": "2014-11-15T17:00:00-08:00",
    }
    assert "nextSyncToken" in served and "nextPageToken" not in served


async def test_cancelled_instance_serves_in_its_minimal_shape(
    api: Api, store: CalendarStore
) -> None:
    recorded = fixture("northworld-cancelled_events.json")
    cal = store.add_calendar(ALICE.email, "Tokyo", "Asia/Tokyo")
    store.load_events_payload(cal, [recorded])
    _, served = await api.call("GET", f"calendars/{cal.id}/events")
    assert served["items"] == [recorded]


async def test_freebusy_reproduces_the_recorded_answer(api: Api, store: CalendarStore) -> None:
    recorded = fixture("northworld-freebusy_query.json")
    busy = store.add_calendar(ALICE.email, "busy", "UTC", calendar_id="busy-calendar-id")
    store.add_calendar(ALICE.email, "free", "UTC", calendar_id="not-busy-calendar-id")
    for start, end in (("10:00", "11:00"), ("11:30", "11:30")):
        store.insert_event(
            busy,
            {
                "start": {"dateTime": f"2015-03-06T{start}:00Z"},
                "end": {"dateTime": f"2015-03-06T{end}:00Z"},
            },
        )
    status, body = await api.call(
        "POST",
        "freeBusy",
        json={
            "timeMin": recorded["timeMin"],
            "timeMax": recorded["timeMax"],
            "items": [{"id": "busy-calendar-id"}, {"id": "not-busy-calendar-id"}],
        },
    )
    assert status == 200
    assert body.pop("kind") == "calendar#freeBusy"
    assert body == recorded


async def test_insert_error_matches_the_recorded_400(api: Api) -> None:
    recorded = fixture("calcentral-google_events_insert_invalid.json")
    status, body = await api.call(
        "POST",
        "calendars/primary/events",
        json={
            "start": {"dateTime": "2013-09-24T03:06:00.000-07:0"},
            "end": {"dateTime": "2013-09-24T04:06:00.000-07:00"},
        },
    )
    assert status == 400
    assert body == recorded


def test_rate_limit_envelope_matches_the_recorded_403() -> None:
    recorded = fixture("northworld-403_calendar_rate_limit.json")
    body = GoogleApiError(
        403, "quotaExceeded", "Calendar usage limits exceeded.", domain="usageLimits"
    ).body()
    assert body == recorded


async def test_load_route_accepts_a_recorded_page(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    url = emulator.url(f"/_emulator/calendar/calendars/{ALICE.email}/load")
    async with http.post(url, json=fixture("northworld-repeating_events.json")) as resp:
        assert resp.status == 200
        assert await resp.json() == {"loaded": ["fhru34kt6ikmr20knd2456l08n"], "duplicateIds": []}
