"""Fidelity to the discovery document: what the official client sends is accepted, malformed
requests get Google's 400 shapes, and every response validates against the published schemas."""

from __future__ import annotations

from typing import Any

import aiohttp
from googleapiclient.discovery import build

from emulator.calendar_store import Calendar, CalendarStore
from emulator.discovery import load_discovery
from emulator.seed import seed_calendar
from tests.emulator.calendar_support import Api, Receiver, error_of, timed
from tests.support.emulator import ALICE, RunningEmulator

# Methods the emulator implements, with the path arguments the client needs.
IMPLEMENTED: dict[str, dict[str, str]] = {
    "events.list": {"calendarId": "primary"},
    "events.get": {"calendarId": "primary", "eventId": "fidel00001"},
    "events.instances": {"calendarId": "primary", "eventId": "fidel00001"},
    "events.insert": {"calendarId": "primary"},
    "events.patch": {"calendarId": "primary", "eventId": "fidel00001"},
    "events.update": {"calendarId": "primary", "eventId": "fidel00001"},
    "calendarList.list": {},
    "calendarList.get": {"calendarId": "primary"},
    "calendars.get": {"calendarId": "primary"},
}
# Covered by dedicated tests: real tokens are needed for them to mean anything.
SKIP_PARAMS = {"pageToken", "syncToken", "originalStart"}


NAMED_SAMPLES = {
    "timeZone": "Europe/Paris",
    "privateExtendedProperty": "a=b",
    "sharedExtendedProperty": "a=b",
}


def sample(name: str, schema: dict[str, Any]) -> Any:
    """A valid value for a discovery parameter schema."""
    if name in NAMED_SAMPLES:
        return NAMED_SAMPLES[name]
    if "enum" in schema:
        return schema["enum"][-1]
    if schema.get("type") == "boolean":
        return True
    if schema.get("type") == "integer":
        return int(schema.get("minimum", 1))
    if schema.get("format") == "date-time":
        return "2026-11-24T00:00:00Z"
    return "x"


def event_body() -> dict[str, Any]:
    return timed("2026-11-24T10:00:00+01:00", "2026-11-24T11:00:00+01:00", summary="fidelity")


async def test_every_parameter_the_official_client_sends_is_accepted(
    emulator: RunningEmulator,
    http: aiohttp.ClientSession,
    store: CalendarStore,
    alice_cal: Calendar,
) -> None:
    store.insert_event(
        alice_cal, {**event_body(), "id": "fidel00001", "recurrence": ["RRULE:FREQ=DAILY;COUNT=2"]}
    )
    service = build(
        "calendar",
        "v3",
        developerKey="unused",
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": emulator.base_url + "/calendar/v3/"},
    )
    discovery = load_discovery()
    token = emulator.token_for(ALICE)
    sent = 0
    for name, path_args in IMPLEMENTED.items():
        spec = discovery.by_id["calendar." + name]
        resource, method = name.split(".")
        for param, schema in spec.parameters.items():
            if schema.get("location") != "query" or param in SKIP_PARAMS:
                continue
            value = sample(param, schema)
            kwargs: dict[str, Any] = {
                **path_args,
                param: [value] if schema.get("repeated") else value,
            }
            if spec.request_schema:
                kwargs["body"] = event_body()
            if name == "events.list" and param == "orderBy":
                kwargs["singleEvents"] = True
            request = getattr(getattr(service, resource)(), method)(**kwargs)
            headers = {**request.headers, "Authorization": f"Bearer {token}"}
            headers.pop("content-length", None)
            async with http.request(
                request.method, request.uri, data=request.body, headers=headers
            ) as resp:
                body = await resp.text()
                assert resp.status < 300, (name, param, request.uri, body)
            sent += 1
    assert sent > 40


async def test_malformed_parameters_get_googles_400(api: Api) -> None:
    cases = [
        ({"bogus": "1"}, "invalid", "bogus"),
        ({"maxResults": "ten"}, "invalidParameter", "maxResults"),
        ({"maxResults": "0"}, "invalidParameter", "maxResults"),
        ({"singleEvents": "yes"}, "invalidParameter", "singleEvents"),
        ({"orderBy": "title"}, "invalidParameter", "orderBy"),
        ({"timeMin": "2026-11-24"}, "invalid", "timeMin"),
        ({"timeMin": "2026-11-24T10:00:00"}, "invalid", "timeMin"),
        ({"alt": "media"}, "invalidParameter", "alt"),
        ({"calendarId": "primary"}, "invalid", "calendarId"),
    ]
    for params, reason, location in cases:
        status, body = await api.call("GET", "calendars/primary/events", params=params)
        assert status == 400, params
        item = error_of(body)
        assert (item["reason"], item["location"], item["locationType"]) == (
            reason,
            location,
            "parameter",
        ), item
        assert body["error"]["code"] == 400
    status, body = await api.call("GET", "calendars/primary/events", params={"maxResults": "0"})
    assert error_of(body)["message"] == "Invalid value '0'. Values must be within the range: [1, ]"
    status, body = await api.call("GET", "calendars/primary/events", params={"maxResults": "99999"})
    assert status == 200, "Google caps maxResults at 2500 instead of refusing it"


async def test_malformed_bodies_get_googles_400(api: Api) -> None:
    status, body = await api.call("POST", "calendars/primary/events", raw=b"{not json")
    assert status == 400 and error_of(body)["reason"] == "parseError"
    status, body = await api.call("POST", "calendars/primary/events", json=[1, 2])
    assert status == 400
    status, body = await api.call(
        "POST", "calendars/primary/events", json={**event_body(), "summary": 5}
    )
    assert status == 400 and error_of(body)["reason"] == "invalid"
    status, body = await api.call(
        "POST", "calendars/primary/events", json={**event_body(), "attendees": {"email": "x"}}
    )
    assert status == 400
    status, body = await api.call(
        "POST",
        "calendars/primary/events",
        json={"start": {"date": "2026-11-24T00:00:00+09:00"}, "end": {"date": "2026-11-25"}},
    )
    assert (
        status == 400
        and "Have you accidentally used DateTime instead of a Date?" in error_of(body)["message"]
    )
    status, created = await api.call(
        "POST", "calendars/primary/events", json={**event_body(), "notAField": 1}
    )
    assert status == 200 and "notAField" not in created, "unknown body fields are ignored"


async def test_unknown_paths_404_and_unimplemented_methods_say_so(api: Api) -> None:
    status, body = await api.call("GET", "calendars/primary/nothing")
    assert status == 404 and error_of(body)["reason"] == "notFound"
    status, body = await api.call("DELETE", "calendars/primary/events")
    assert status == 404
    status, body = await api.call("GET", "calendars/primary/acl")
    assert status == 501 and "calendar.acl.list" in body["error"]["message"]


async def test_responses_validate_against_discovery_schemas(
    api: Api, store: CalendarStore, alice_cal: Calendar, receiver: Receiver
) -> None:
    seed_calendar(store, alice_cal, seed=11, count=200)
    discovery = load_discovery()
    checked = 0
    for params in (
        {},
        {"singleEvents": "true"},
        {"showDeleted": "true"},
        {
            "singleEvents": "true",
            "showDeleted": "true",
            "orderBy": "startTime",
            "timeMin": "2026-11-01T00:00:00Z",
        },
    ):
        items, pages = await api.list_all(
            "calendars/primary/events", {**params, "maxResults": "2500"}
        )
        for page in pages:
            assert discovery.response_problems("Events", page) == [], params
        checked += len(items)
        for item in items[:20]:
            status, got = await api.call("GET", f"calendars/primary/events/{item['id']}")
            assert status == 200
            assert discovery.response_problems("Event", got) == []
    assert checked > 400
    _, cal_list = await api.call("GET", "users/me/calendarList")
    assert discovery.response_problems("CalendarList", cal_list) == []
    _, busy = await api.call(
        "POST",
        "freeBusy",
        json={
            "timeMin": "2026-11-20T00:00:00Z",
            "timeMax": "2026-12-20T00:00:00Z",
            "items": [{"id": "primary"}, {"id": "nobody@example.com"}],
        },
    )
    assert discovery.response_problems("FreeBusyResponse", busy) == []
    assert busy["calendars"]["primary"]["busy"]
    status, channel = await api.call(
        "POST",
        "calendars/primary/events/watch",
        json={"id": "schema-check", "type": "web_hook", "address": receiver.url},
    )
    assert status == 200 and discovery.response_problems("Channel", channel) == []
    await receiver.wait_for(1)  # let the sync message land before the receiver shuts down
