"""Conformance: Google's own client (google-api-python-client) drives the emulator.

If the official client can list, page, sync, write, query free/busy and watch against the
emulator, our URLs, parameters and bodies match what Google's discovery document describes. The
client is blocking, so each call runs in a worker thread while the emulator serves on the loop.

Note on `api_endpoint`: the client joins method paths onto it, so it must include the service
path, i.e. `<emulator base>/calendar/v3/` (the bare base URL would put requests at `/calendars/..`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from emulator.calendar_store import CalendarStore
from emulator.discovery import load_discovery
from tests.emulator.calendar_support import Receiver, timed
from tests.support.emulator import ALICE, RunningEmulator


def service_for(emulator: RunningEmulator) -> Any:
    credentials = Credentials(token=emulator.token_for(ALICE))  # type: ignore[no-untyped-call]
    return build(
        "calendar",
        "v3",
        credentials=credentials,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": emulator.base_url + "/calendar/v3/"},
    )


async def run(fn: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(fn)


async def test_official_client_round_trip(
    emulator: RunningEmulator, store: CalendarStore, receiver: Receiver
) -> None:
    service = await run(lambda: service_for(emulator))
    discovery = load_discovery()
    events = service.events()

    listing = await run(lambda: service.calendarList().list().execute())
    assert discovery.response_problems("CalendarList", listing) == []
    assert listing["items"][0]["id"] == ALICE.email

    created = await run(
        lambda: events.insert(
            calendarId="primary",
            body=timed(
                "2026-11-25T10:00:00+01:00",
                "2026-11-25T11:00:00+01:00",
                id="conform001",
                summary="Demo",
            ),
            sendUpdates="none",
        ).execute()
    )
    assert discovery.response_problems("Event", created) == []
    with pytest.raises(HttpError) as duplicate:
        await run(lambda: events.insert(calendarId="primary", body={**created}).execute())
    assert duplicate.value.resp.status == 409
    assert duplicate.value.error_details[0]["reason"] == "duplicate"

    for n in range(4):

        def insert(n: int = n) -> Any:
            return events.insert(
                calendarId="primary",
                body=timed(
                    f"2026-11-26T1{n}:00:00+01:00", f"2026-11-26T1{n}:30:00+01:00", summary=f"n{n}"
                ),
            ).execute()

        await run(insert)
    store.empty_page_every = 2
    request = events.list(
        calendarId="primary",
        maxResults=2,
        singleEvents=True,
        orderBy="startTime",
        timeMin="2026-11-20T00:00:00Z",
    )
    seen: list[str] = []
    last: dict[str, Any] = {}
    while request is not None:
        page = await run(request.execute)
        assert discovery.response_problems("Events", page) == []
        seen.extend(i["id"] for i in page["items"])
        last = page
        request = events.list_next(request, page)
    assert len(seen) == 5 and "nextSyncToken" in last and "nextPageToken" not in last
    store.empty_page_every = 0

    full = await run(lambda: events.list(calendarId="primary").execute())
    patched = await run(
        lambda: events.patch(
            calendarId="primary", eventId="conform001", body={"summary": "Demo (moved)"}
        ).execute()
    )
    assert patched["summary"] == "Demo (moved)"
    await run(lambda: events.delete(calendarId="primary", eventId="conform001").execute())
    delta = await run(
        lambda: events.list(calendarId="primary", syncToken=full["nextSyncToken"]).execute()
    )
    assert [(i["id"], i["status"]) for i in delta["items"]] == [("conform001", "cancelled")]

    store.invalidate_sync_tokens(ALICE.email)
    with pytest.raises(HttpError) as gone:
        await run(
            lambda: events.list(calendarId="primary", syncToken=delta["nextSyncToken"]).execute()
        )
    assert gone.value.resp.status == 410
    assert gone.value.error_details[0]["reason"] == "fullSyncRequired"

    busy = await run(
        lambda: (
            service.freebusy()
            .query(
                body={
                    "timeMin": "2026-11-26T00:00:00Z",
                    "timeMax": "2026-11-27T00:00:00Z",
                    "items": [{"id": "primary"}],
                }
            )
            .execute()
        )
    )
    assert discovery.response_problems("FreeBusyResponse", busy) == []
    assert len(busy["calendars"]["primary"]["busy"]) == 4

    channel = await run(
        lambda: events.watch(
            calendarId="primary",
            body={
                "id": "conformance-channel",
                "type": "web_hook",
                "address": receiver.url,
                "token": "t",
            },
        ).execute()
    )
    assert discovery.response_problems("Channel", channel) == []
    assert (await receiver.wait_for(1))[0]["X-Goog-Resource-State"] == "sync"
    await run(
        lambda: (
            service.channels()
            .stop(body={"id": channel["id"], "resourceId": channel["resourceId"]})
            .execute()
        )
    )
    assert not store.channels


async def test_official_client_surfaces_google_400_for_bad_values(
    emulator: RunningEmulator,
) -> None:
    service = await run(lambda: service_for(emulator))
    with pytest.raises(HttpError) as bad:
        await run(
            lambda: service.events().list(calendarId="primary", orderBy="startTime").execute()
        )
    assert bad.value.resp.status == 400
    with pytest.raises(HttpError) as bad_time:
        await run(
            lambda: (
                service.events()
                .insert(
                    calendarId="primary",
                    body={
                        "start": {"dateTime": "2013-09-24T03:06:00.000-07:0"},
                        "end": {"dateTime": "2013-09-24T04:06:00.000-07:00"},
                    },
                )
                .execute()
            )
        )
    assert bad_time.value.resp.status == 400
    assert bad_time.value.error_details[0]["reason"] == "invalid"


async def test_official_client_batch_request(
    emulator: RunningEmulator, store: CalendarStore
) -> None:
    """The client's batch goes to rootUrl + batchPath, so the test points it at the emulator."""
    service = await run(lambda: service_for(emulator))
    results: dict[str, Any] = {}

    def collect(request_id: str, response: Any, exception: Exception | None) -> None:
        results[request_id] = exception if exception is not None else response

    batch = BatchHttpRequest(callback=collect, batch_uri=emulator.base_url + "/batch/calendar/v3")
    events = service.events()
    batch.add(
        events.insert(
            calendarId="primary",
            body=timed(
                "2026-11-25T10:00:00+01:00",
                "2026-11-25T11:00:00+01:00",
                id="batch00001",
                summary="one",
            ),
        ),
        request_id="a",
    )
    batch.add(
        events.insert(
            calendarId="primary",
            body=timed(
                "2026-11-25T10:00:00+01:00",
                "2026-11-25T11:00:00+01:00",
                id="batch00001",
                summary="again",
            ),
        ),
        request_id="b",
    )
    batch.add(events.get(calendarId="primary", eventId="nosuchevent"), request_id="c")
    await run(batch.execute)
    assert results["a"]["id"] == "batch00001"
    assert isinstance(results["b"], HttpError) and results["b"].resp.status == 409
    assert isinstance(results["c"], HttpError) and results["c"].resp.status == 404
    cal = store.calendars[ALICE.email]
    assert cal.events["batch00001"].body["summary"] == "one"
