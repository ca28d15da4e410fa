"""Calendar control routes under /_emulator/calendar/ and the smaller read endpoints."""

from __future__ import annotations

import aiohttp

from emulator.calendar_store import CalendarStore
from tests.emulator.calendar_support import Api, Receiver, timed
from tests.support.emulator import ALICE, RunningEmulator


async def test_settings_and_paging_knobs_over_http(
    api: Api, emulator: RunningEmulator, http: aiohttp.ClientSession, store: CalendarStore
) -> None:
    url = emulator.url("/_emulator/calendar/settings")
    async with http.post(
        url, json={"emptyPageEvery": 2, "maxPageItems": 1, "syncTokenMaxAgeS": 60}
    ) as r:
        assert r.status == 200
        assert (await r.json())["maxPageItems"] == 1
    assert (store.empty_page_every, store.max_page_items, store.sync_token_max_age_s) == (2, 1, 60)
    async with http.post(url, json={"noSuchKnob": 1}) as r:
        assert r.status == 400


async def test_add_calendar_and_push_faults_over_http(
    api: Api,
    emulator: RunningEmulator,
    http: aiohttp.ClientSession,
    store: CalendarStore,
    receiver: Receiver,
) -> None:
    async with http.post(
        emulator.url(f"/_emulator/calendar/users/{ALICE.email}/calendars"),
        json={"summary": "Sales", "timeZone": "America/New_York"},
    ) as r:
        assert r.status == 200
        cal_id = (await r.json())["id"]
    _, listing = await api.call("GET", "users/me/calendarList")
    assert [c["id"] for c in listing["items"]] == [ALICE.email, cal_id]
    async with http.post(
        emulator.url("/_emulator/calendar/push/faults"), json={"drop": 2, "duplicate": 1}
    ) as r:
        assert await r.json() == {"drop": 2, "duplicate": 1}
    status, _ = await api.call(
        "POST",
        "calendars/primary/events/watch",
        json={"id": "ctl", "type": "web_hook", "address": receiver.url},
    )
    assert status == 200
    async with http.get(emulator.url("/_emulator/calendar/channels")) as r:
        listed = await r.json()
    assert [c["id"] for c in listed["channels"]] == ["ctl"]
    assert listed["deliveries"][0]["delivered"] is False, "the sync message was dropped"


async def test_settings_endpoint_and_max_attendees(api: Api, store: CalendarStore) -> None:
    status, tz = await api.call("GET", "users/me/settings/timezone")
    assert (status, tz["value"]) == (200, "Europe/Berlin")
    status, _ = await api.call("GET", "users/me/settings/nope")
    assert status == 404
    cal = store.ensure_user(ALICE.email)
    event = store.insert_event(
        cal,
        timed(
            "2026-11-24T10:00:00+01:00",
            "2026-11-24T11:00:00+01:00",
            attendees=[
                {"email": "a@example.net"},
                {"email": ALICE.email},
                {"email": "b@example.net"},
            ],
        ),
    )
    _, got = await api.call(
        "GET", f"calendars/primary/events/{event.id}", params={"maxAttendees": "1"}
    )
    assert got["attendeesOmitted"] is True
    assert got["attendees"] == [{"email": ALICE.email, "self": True}]


async def test_reset_route_clears_faults_or_data(
    emulator: RunningEmulator, http: aiohttp.ClientSession, store: CalendarStore
) -> None:
    cal = store.ensure_user(ALICE.email)
    store.insert_event(cal, timed("2026-11-24T10:00:00+01:00", "2026-11-24T11:00:00+01:00"))
    store.empty_page_every, store.push_faults.drop_next = 2, 3
    async with http.post(emulator.url("/_emulator/calendar/reset")) as r:
        assert r.status == 200
    assert (store.empty_page_every, store.push_faults.drop_next) == (0, 0)
    assert len(cal.events) == 1, "faults only"
    async with http.post(emulator.url("/_emulator/calendar/reset"), json={"data": True}) as r:
        assert r.status == 200
    assert store.calendars == {}
