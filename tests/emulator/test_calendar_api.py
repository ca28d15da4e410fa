"""Calendar v3 behaviour over real HTTP: listing, paging, incremental sync, writes and errors."""

from __future__ import annotations

import json
from typing import Any

from emulator.calendar_store import Calendar, CalendarStore
from tests.emulator.calendar_support import Api, error_of, timed
from tests.support.emulator import ALICE, CALENDAR_READONLY, CAROL, RunningEmulator

FULL_410 = {
    "error": {
        "errors": [
            {
                "domain": "calendar",
                "reason": "fullSyncRequired",
                "message": "Sync token is no longer valid, a full sync is required.",
                "locationType": "parameter",
                "location": "syncToken",
            }
        ],
        "code": 410,
        "message": "Sync token is no longer valid, a full sync is required.",
    }
}


def seed_hours(store: CalendarStore, cal: Calendar, count: int) -> list[str]:
    """`count` one-hour events on consecutive hours from 2026-11-24 08:00 Berlin."""
    ids = []
    for n in range(count):
        body = timed(
            f"2026-11-24T{8 + n // 2:02d}:{30 * (n % 2):02d}:00+01:00",
            f"2026-11-24T{9 + n // 2:02d}:{30 * (n % 2):02d}:00+01:00",
            summary=f"e{n}",
        )
        ids.append(store.insert_event(cal, body).id)
    return ids


async def test_calendar_list_has_primary_first_with_owner_role(
    api: Api, store: CalendarStore
) -> None:
    store.add_calendar(ALICE.email, "Sales", "America/New_York")
    status, body = await api.call("GET", "users/me/calendarList")
    assert status == 200
    first, second = body["items"]
    assert (first["id"], first["primary"], first["accessRole"]) == (ALICE.email, True, "owner")
    assert first["timeZone"] == "Europe/Berlin"
    assert second["id"].endswith("@group.calendar.google.com") and "primary" not in second


async def test_paging_with_empty_pages_reaches_every_event_once(
    api: Api, store: CalendarStore, alice_cal: Calendar
) -> None:
    ids = seed_hours(store, alice_cal, 11)
    store.empty_page_every = 2
    items, pages = await api.list_all("calendars/primary/events", {"maxResults": "3"})
    assert sorted(i["id"] for i in items) == sorted(ids)
    assert any(not p["items"] and "nextPageToken" in p for p in pages), "an empty page"
    for page in pages[:-1]:
        assert "nextPageToken" in page and "nextSyncToken" not in page
    assert "nextSyncToken" in pages[-1] and "nextPageToken" not in pages[-1]


async def test_max_page_items_makes_short_pages(
    api: Api, store: CalendarStore, alice_cal: Calendar
) -> None:
    seed_hours(store, alice_cal, 5)
    store.max_page_items = 2
    _, pages = await api.list_all("calendars/primary/events", {"maxResults": "250"})
    assert [len(p["items"]) for p in pages] == [2, 2, 1]


async def test_time_window_is_exclusive_on_both_ends(
    api: Api, store: CalendarStore, alice_cal: Calendar
) -> None:
    store.insert_event(
        alice_cal,
        timed("2026-11-24T09:00:00+01:00", "2026-11-24T10:00:00+01:00", summary="ends at min"),
    )
    store.insert_event(
        alice_cal, timed("2026-11-24T10:00:00+01:00", "2026-11-24T11:00:00+01:00", summary="inside")
    )
    store.insert_event(
        alice_cal,
        timed("2026-11-24T11:00:00+01:00", "2026-11-24T12:00:00+01:00", summary="starts at max"),
    )
    status, body = await api.call(
        "GET",
        "calendars/primary/events",
        params={"timeMin": "2026-11-24T10:00:00+01:00", "timeMax": "2026-11-24T11:00:00+01:00"},
    )
    assert status == 200
    assert [i["summary"] for i in body["items"]] == ["inside"]
    assert body["items"][0]["start"] == {
        "dateTime": "2026-11-24T10:00:00+01:00",
        "timeZone": "Europe/Berlin",
    }


async def test_full_then_incremental_sync_sees_updates_and_tombstones(
    api: Api, store: CalendarStore, alice_cal: Calendar
) -> None:
    a, b, c = seed_hours(store, alice_cal, 3)
    items, pages = await api.list_all("calendars/primary/events", {"maxResults": "2"})
    token = pages[-1]["nextSyncToken"]
    assert len(items) == 3

    status, body = await api.call("GET", "calendars/primary/events", params={"syncToken": token})
    assert (status, body["items"]) == (200, []), "nothing changed yet"
    token = body["nextSyncToken"]

    store.patch_event(alice_cal, a, {"summary": "renamed"})  # as if edited in Google Calendar
    status, _ = await api.call("DELETE", f"calendars/primary/events/{b}")
    assert status == 204
    status, body = await api.call("GET", "calendars/primary/events", params={"syncToken": token})
    by_id = {i["id"]: i for i in body["items"]}
    assert set(by_id) == {a, b}
    assert by_id[a]["summary"] == "renamed"
    assert by_id[b]["status"] == "cancelled"
    assert set(by_id[b]) <= {"kind", "etag", "id", "status"}, "a tombstone carries no details"
    assert c not in by_id


async def test_sync_token_invalidated_or_expired_answers_exact_410(
    api: Api, emulator: RunningEmulator, store: CalendarStore, alice_cal: Calendar
) -> None:
    seed_hours(store, alice_cal, 1)
    _, body = await api.call("GET", "calendars/primary/events")
    token = body["nextSyncToken"]
    store.invalidate_sync_tokens(ALICE.email)
    status, body = await api.call("GET", "calendars/primary/events", params={"syncToken": token})
    assert status == 410
    assert body == FULL_410

    _, body = await api.call("GET", "calendars/primary/events")
    fresh = body["nextSyncToken"]
    emulator.state.advance_clock(store.sync_token_max_age_s + 1)
    api.token = emulator.token_for(ALICE)  # the old access token expired too
    status, _ = await api.call("GET", "calendars/primary/events", params={"syncToken": fresh})
    assert status == 410
    status, _ = await api.call("GET", "calendars/primary/events", params={"syncToken": "garbage"})
    assert status == 410


async def test_control_route_invalidates_sync_tokens(
    api: Api, emulator: RunningEmulator, http: Any
) -> None:
    _, body = await api.call("GET", "calendars/primary/events")
    async with http.post(
        emulator.url(f"/_emulator/calendar/users/{ALICE.email}/sync-tokens/invalidate")
    ) as r:
        assert r.status == 200
    status, _ = await api.call(
        "GET", "calendars/primary/events", params={"syncToken": body["nextSyncToken"]}
    )
    assert status == 410


async def test_params_not_allowed_with_sync_token(api: Api) -> None:
    _, body = await api.call("GET", "calendars/primary/events")
    token = body["nextSyncToken"]
    for name, value in [
        ("timeMin", "2026-11-24T00:00:00Z"),
        ("timeMax", "2026-11-24T00:00:00Z"),
        ("updatedMin", "2026-11-22T00:00:00Z"),
        ("q", "x"),
        ("iCalUID", "x@google.com"),
        ("orderBy", "updated"),
        ("privateExtendedProperty", "a=b"),
        ("sharedExtendedProperty", "a=b"),
        ("showDeleted", "false"),
    ]:
        status, err = await api.call(
            "GET", "calendars/primary/events", params={"syncToken": token, name: value}
        )
        assert status == 400, name
        assert error_of(err)["location"] == name


async def test_order_by_start_time_needs_single_events(api: Api) -> None:
    status, body = await api.call(
        "GET", "calendars/primary/events", params={"orderBy": "startTime"}
    )
    assert status == 400
    assert error_of(body)["location"] == "orderBy"


async def test_insert_with_client_id_is_idempotent_409(api: Api) -> None:
    body = timed(
        "2026-11-25T10:00:00+01:00", "2026-11-25T11:00:00+01:00", id="booking0001", summary="Demo"
    )
    status, created = await api.call("POST", "calendars/primary/events", json=body)
    assert status == 200
    assert created["id"] == "booking0001" and created["kind"] == "calendar#event"
    assert created["etag"].startswith('"') and created["iCalUID"] == "booking0001@google.com"
    assert created["creator"] == {"email": ALICE.email, "self": True}
    assert created["updated"].endswith("Z") and len(created["updated"]) == 24
    status, err = await api.call("POST", "calendars/primary/events", json=body)
    assert status == 409
    assert error_of(err) == {
        "domain": "global",
        "reason": "duplicate",
        "message": "The requested identifier already exists.",
    }


async def test_insert_validation_errors(api: Api) -> None:
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        (
            timed("2026-11-25T10:00:00+01:00", "2026-11-25T11:00:00+01:00", id="UPPER"),
            400,
            "invalid",
            "Invalid resource id value.",
        ),
        (
            timed("2026-11-25T10:00:00+01:00", "2026-11-25T11:00:00+01:00", id="abw12"),
            400,
            "invalid",
            None,
        ),
        (
            {"start": {"date": "2026-11-25"}, "end": {"dateTime": "2026-11-25T11:00:00+01:00"}},
            400,
            "invalid",
            "Start and end times must either both be date or both be dateTime.",
        ),
        (
            timed("2026-11-25T11:00:00+01:00", "2026-11-25T10:00:00+01:00"),
            400,
            "timeRangeEmpty",
            "The specified time range is empty.",
        ),
        (
            {"start": {"dateTime": "2026-11-25T10:00:00+01:00"}},
            400,
            "required",
            "Missing end time.",
        ),
        (
            {
                "start": {"dateTime": "2013-09-24T03:06:00.000-07:0"},
                "end": {"dateTime": "2013-09-24T04:06:00.000-07:00"},
            },
            400,
            "invalid",
            "Invalid value for: Invalid format: "
            '"2013-09-24T03:06:00.000-07:0" is malformed at "-07:0"',
        ),
        (
            timed("2026-11-25T10:00:00", "2026-11-25T11:00:00", tz="Mars/Olympus"),
            400,
            "invalid",
            "Invalid time zone definition for start time.",
        ),
    ]
    for body, code, reason, message in cases:
        status, err = await api.call("POST", "calendars/primary/events", json=body)
        assert status == code, body
        item = error_of(err)
        assert item["reason"] == reason, (body, item)
        if message:
            assert item["message"] == message
    status, err = await api.call(
        "POST",
        "calendars/primary/events",
        params={"sendUpdates": "everyone"},
        json=timed("2026-11-25T10:00:00+01:00", "2026-11-25T11:00:00+01:00"),
    )
    assert status == 400 and error_of(err)["location"] == "sendUpdates"


async def test_patch_update_if_match_and_sequence(api: Api) -> None:
    _, created = await api.call(
        "POST",
        "calendars/primary/events",
        json=timed(
            "2026-11-25T10:00:00+01:00",
            "2026-11-25T11:00:00+01:00",
            summary="Call",
            attendees=[{"email": "x@example.net"}, {"email": "y@example.net"}],
        ),
    )
    eid, etag = created["id"], created["etag"]
    status, patched = await api.call(
        "PATCH",
        f"calendars/primary/events/{eid}",
        json={
            "attendees": [{"email": "z@example.net"}],
            "end": {"dateTime": "2026-11-25T11:30:00+01:00"},
        },
        headers={"If-Match": etag},
    )
    assert status == 200
    assert [a["email"] for a in patched["attendees"]] == ["z@example.net"], (
        "arrays are replaced whole"
    )
    assert patched["end"] == {
        "dateTime": "2026-11-25T11:30:00+01:00",
        "timeZone": "Europe/Berlin",
    }, "objects merge"
    assert patched["etag"] != etag and patched["sequence"] == 1
    status, err = await api.call(
        "PATCH",
        f"calendars/primary/events/{eid}",
        json={"summary": "x"},
        headers={"If-Match": etag},
    )
    assert status == 412
    assert error_of(err) == {
        "domain": "global",
        "reason": "conditionNotMet",
        "message": "Precondition Failed",
        "locationType": "header",
        "location": "If-Match",
    }
    status, updated = await api.call(
        "PUT",
        f"calendars/primary/events/{eid}",
        json=timed("2026-11-25T10:00:00+01:00", "2026-11-25T11:00:00+01:00", summary="Whole"),
    )
    assert status == 200
    assert updated["summary"] == "Whole" and "attendees" not in updated, "PUT replaces the resource"
    assert updated["created"] == created["created"] and updated["id"] == eid


async def test_delete_twice_is_410_and_unknown_is_404_and_get_returns_cancelled(api: Api) -> None:
    _, created = await api.call(
        "POST",
        "calendars/primary/events",
        json=timed("2026-11-25T10:00:00+01:00", "2026-11-25T11:00:00+01:00"),
    )
    eid = created["id"]
    status, body = await api.call("DELETE", f"calendars/primary/events/{eid}")
    assert (status, body) == (204, None)
    status, err = await api.call("DELETE", f"calendars/primary/events/{eid}")
    assert status == 410
    assert error_of(err) == {
        "domain": "global",
        "reason": "deleted",
        "message": "Resource has been deleted",
    }
    status, got = await api.call("GET", f"calendars/primary/events/{eid}")
    assert status == 200 and got["status"] == "cancelled"
    status, err = await api.call("DELETE", "calendars/primary/events/nosuchevent1")
    assert status == 404 and error_of(err)["reason"] == "notFound"
    status, err = await api.call("GET", "calendars/someone-else@example.com/events")
    assert status == 404


async def test_scopes_decide_reads_and_writes(emulator: RunningEmulator, http: Any) -> None:
    reader = Api(http, emulator.base_url, emulator.token_for(CAROL, scopes=[CALENDAR_READONLY]))
    status, _ = await reader.call("GET", "calendars/primary/events")
    assert status == 200
    status, err = await reader.call(
        "POST",
        "calendars/primary/events",
        json=timed("2026-11-25T10:00:00+01:00", "2026-11-25T11:00:00+01:00"),
    )
    assert status == 403 and error_of(err)["reason"] == "insufficientPermissions"
    fb_only = Api(
        http,
        emulator.base_url,
        emulator.token_for(ALICE, scopes=["https://www.googleapis.com/auth/calendar.freebusy"]),
    )
    status, _ = await fb_only.call(
        "POST",
        "freeBusy",
        json={"timeMin": "2026-11-24T00:00:00Z", "timeMax": "2026-11-25T00:00:00Z", "items": []},
    )
    assert status == 200
    status, err = await fb_only.call("GET", "calendars/primary/events")
    assert status == 403
    anon = Api(http, emulator.base_url, "ya29.bogus")
    status, err = await anon.call("GET", "calendars/primary/events")
    assert status == 401 and error_of(err)["reason"] == "authError"


async def test_freebusy_merges_skips_free_declined_and_reports_unknown(
    api: Api, store: CalendarStore, alice_cal: Calendar
) -> None:
    store.insert_event(alice_cal, timed("2026-11-24T09:00:00+01:00", "2026-11-24T10:00:00+01:00"))
    store.insert_event(alice_cal, timed("2026-11-24T09:30:00+01:00", "2026-11-24T10:30:00+01:00"))
    store.insert_event(
        alice_cal, timed("2026-11-24T12:00:00+01:00", "2026-11-24T12:00:00+01:00", summary="zero")
    )
    store.insert_event(
        alice_cal,
        timed("2026-11-24T13:00:00+01:00", "2026-11-24T14:00:00+01:00", transparency="transparent"),
    )
    store.insert_event(
        alice_cal,
        timed(
            "2026-11-24T15:00:00+01:00",
            "2026-11-24T16:00:00+01:00",
            attendees=[{"email": ALICE.email, "responseStatus": "declined"}],
        ),
    )
    store.insert_event(
        alice_cal,
        timed("2026-11-24T23:00:00+01:00", "2026-11-25T02:00:00+01:00", summary="clipped"),
    )
    status, body = await api.call(
        "POST",
        "freeBusy",
        json={
            "timeMin": "2026-11-24T00:00:00+01:00",
            "timeMax": "2026-11-25T00:00:00+01:00",
            "items": [{"id": "primary"}, {"id": "ghost@example.com"}],
        },
    )
    assert status == 200
    assert body["calendars"]["primary"]["busy"] == [
        {"start": "2026-11-24T08:00:00Z", "end": "2026-11-24T09:30:00Z"},
        {"start": "2026-11-24T11:00:00Z", "end": "2026-11-24T11:00:00Z"},
        {"start": "2026-11-24T22:00:00Z", "end": "2026-11-24T23:00:00Z"},
    ]
    assert body["calendars"]["ghost@example.com"] == {
        "errors": [{"domain": "global", "reason": "notFound"}],
        "busy": [],
    }
    assert body["timeMin"] == "2026-11-23T23:00:00.000Z"
    status, err = await api.call(
        "POST",
        "freeBusy",
        json={"timeMin": "2026-01-01T00:00:00Z", "timeMax": "2026-12-01T00:00:00Z", "items": []},
    )
    assert status == 400 and error_of(err)["reason"] == "timeRangeTooLong"
    status, err = await api.call(
        "POST",
        "freeBusy",
        json={"timeMin": "2026-01-02T00:00:00Z", "timeMax": "2026-01-01T00:00:00Z", "items": []},
    )
    assert status == 400 and error_of(err)["reason"] == "timeRangeEmpty"


async def test_google_side_changes_via_control_routes(
    api: Api, emulator: RunningEmulator, http: Any
) -> None:
    base = emulator.url(f"/_emulator/calendar/calendars/{ALICE.email}/events")
    async with http.post(
        base,
        json=timed("2026-11-24T09:00:00+01:00", "2026-11-24T10:00:00+01:00", summary="From Google"),
    ) as r:
        assert r.status == 200
        eid = (await r.json())["id"]
    async with http.patch(f"{base}/{eid}", json={"summary": "Edited in Google"}) as r:
        assert r.status == 200
    _, got = await api.call("GET", f"calendars/primary/events/{eid}")
    assert got["summary"] == "Edited in Google"
    async with http.delete(f"{base}/{eid}") as r:
        assert r.status == 200
    _, got = await api.call("GET", f"calendars/primary/events/{eid}")
    assert got["status"] == "cancelled"
    async with http.post(
        emulator.url(f"/_emulator/calendar/calendars/{ALICE.email}/seed"),
        json={"seed": 3, "count": 50},
    ) as r:
        assert (await r.json())["inserted"] == 50
    items, _ = await api.list_all("calendars/primary/events", {"maxResults": "2500"})
    assert len(items) >= 40


async def test_fields_and_pretty_print(api: Api, store: CalendarStore, alice_cal: Calendar) -> None:
    seed_hours(store, alice_cal, 2)
    status, body = await api.call(
        "GET",
        "calendars/primary/events",
        params={"fields": "items(id,summary),nextSyncToken", "prettyPrint": "false"},
    )
    assert status == 200
    assert set(body) == {"items", "nextSyncToken"}
    assert all(set(i) == {"id", "summary"} for i in body["items"])


async def test_pages_are_indented_unless_pretty_print_is_false(
    api: Api, store: CalendarStore, alice_cal: Calendar
) -> None:
    """Google indents its JSON by default; `prettyPrint=false` (what the gateway asks for)
    gets the same document without the whitespace."""
    seed_hours(store, alice_cal, 3)
    texts = {}
    for pretty in ("true", "false"):
        async with api.http.get(
            f"{api.base}/calendar/v3/calendars/primary/events",
            params={"prettyPrint": pretty},
            headers={"Authorization": f"Bearer {api.token}"},
        ) as r:
            assert r.status == 200 and r.content_type == "application/json"
            texts[pretty] = await r.text()
    assert texts["true"].startswith('{\n  "') and "\n    {\n" in texts["true"]
    assert "\n" not in texts["false"] and texts["false"].startswith('{"kind":"calendar#events"')
    assert json.loads(texts["true"]) == json.loads(texts["false"])
    assert len(json.loads(texts["false"])["items"]) == 3


async def test_reminder_and_all_day_rules(api: Api) -> None:
    day = {"start": {"date": "2026-11-25"}, "end": {"date": "2026-11-25"}}
    status, err = await api.call("POST", "calendars/primary/events", json=day)
    assert status == 400 and error_of(err)["reason"] == "timeRangeEmpty"
    body = timed(
        "2026-11-25T10:00:00+01:00",
        "2026-11-25T11:00:00+01:00",
        reminders={"useDefault": True, "overrides": [{"method": "popup", "minutes": 5}]},
    )
    status, err = await api.call("POST", "calendars/primary/events", json=body)
    assert status == 400
    assert error_of(err)["reason"] == "cannotUseDefaultRemindersAndSpecifyOverride"
    body["reminders"]["useDefault"] = False
    status, created = await api.call("POST", "calendars/primary/events", json=body)
    assert status == 200 and created["reminders"]["overrides"] == [
        {"method": "popup", "minutes": 5}
    ]
