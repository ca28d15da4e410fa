"""GET, PATCH and DELETE of the events the gateway booked, over real HTTP against the Google
emulator, on SQLite and PostgreSQL: only our events, in full; If-Match and 412; delete twice;
other tenants' and the user's own events are 404; disconnect purges the booking rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from gateway.clock import utc_now
from gateway.db.schema import bookings
from gateway.http.appkeys import INTEGRATIONS_KEY
from tests.support.availability import (
    ALICE,
    DAVE,
    Response,
    at,
    call,
    connect,
    day,
    event,
    key_with,
    sync,
    z,
)
from tests.support.booking import book, events_path, gateway_events, slot
from tests.support.stack import Stack


def event_path(integration_id: str, event_id: str) -> str:
    return f"{events_path(integration_id)}/{event_id}"


async def patch(
    stack: Stack,
    integration_id: str,
    event_id: str,
    body: dict[str, Any],
    *,
    if_match: str | None = None,
    api_key: str | None = None,
) -> Response:
    headers = stack.auth(api_key)
    if if_match is not None:
        headers["If-Match"] = if_match
    async with stack.http.patch(
        stack.url(event_path(integration_id, event_id)), json=body, headers=headers
    ) as response:
        return Response(
            response.status, dict(response.headers), await response.json(content_type=None)
        )


async def test_list_shows_only_our_events_in_the_window_in_full(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    event(stack, ALICE, at(d, "08:00"), at(d, "09:00"), summary="Dentist")  # the user's own
    body = slot(d, description="Agenda", location="Room 1", attendees=[{"email": "a@b.org"}])
    first = await book(stack, alice, body, key="k-1")
    second = await book(stack, alice, slot(d, "14:00", "15:00"), key="k-2")
    await book(stack, alice, slot(day(9)), key="k-later")  # outside the window
    window = {"time_min": z(at(d, "00:00")), "time_max": z(at(d, "23:59"))}
    listed = await call(stack, "GET", events_path(alice), params=window)
    assert listed.status == 200, listed.body
    found = listed.body["events"]
    assert [e["id"] for e in found] == [first.body["id"], second.body["id"]]
    assert found[0]["summary"] == "Intro call" and found[0]["description"] == "Agenda"
    assert found[0]["location"] == "Room 1"
    assert found[0]["attendees"][0]["email"] == "a@b.org"
    assert (found[0]["start"], found[0]["end"]) == (z(at(d, "10:00")), z(at(d, "10:30")))
    assert found[0]["etag"] == first.body["etag"]
    assert "Dentist" not in str(listed.body)
    assert listed.body["integration_id"] == alice

    bad = await call(stack, "GET", events_path(alice), params={"time_min": z(d)})
    assert bad.status == 422 and bad.body["field"] == "time_max"
    other = await call(stack, "GET", events_path(alice), params=window, key=stack.other_tenant_key)
    assert other.status == 404


async def test_patch_changes_our_event_and_if_match_guards_it(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(8)
    booked = await book(stack, alice, slot(d), key="k-patch")
    event_id, etag = booked.body["id"], booked.body["etag"]

    moved = await patch(
        stack,
        alice,
        event_id,
        {"summary": "Intro call (moved)", "start": z(at(d, "11:00")), "end": z(at(d, "11:30"))},
        if_match=etag,
    )
    assert moved.status == 200, moved.body
    assert (moved.body["start"], moved.body["end"]) == (z(at(d, "11:00")), z(at(d, "11:30")))
    assert moved.body["etag"] != etag
    [stored] = gateway_events(stack, ALICE)
    assert stored["summary"] == "Intro call (moved)"

    stale = await patch(stack, alice, event_id, {"summary": "Again"}, if_match=etag)
    assert stale.status == 412 and stale.body["code"] == "etag_mismatch"
    assert gateway_events(stack, ALICE)[0]["summary"] == "Intro call (moved)"
    unconditional = await patch(stack, alice, event_id, {"location": "Room 2"})
    assert unconditional.status == 200

    half = await patch(stack, alice, event_id, {"start": z(at(d, "12:00"))})
    assert half.status == 422 and half.body["field"] == "end"
    empty = await patch(stack, alice, event_id, {})
    assert empty.status == 422 and empty.body["code"] == "empty_change"


async def test_moving_an_event_moves_its_busy_time_at_once(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(9)
    await sync(stack, alice)
    booked = await book(stack, alice, slot(d), key="k-move")
    await patch(
        stack, alice, booked.body["id"], {"start": z(at(d, "15:00")), "end": z(at(d, "15:30"))}
    )
    window = {"time_min": z(at(d, "09:00")), "time_max": z(at(d, "17:00"))}
    answer = await call(stack, "GET", f"/v1/integrations/{alice}/freebusy", params=window)
    assert answer.body["source"] == "cache"
    assert answer.body["busy"] == [{"start": z(at(d, "15:00")), "end": z(at(d, "15:30"))}]
    # Deleting frees it at once too.
    deleted = await call(stack, "DELETE", event_path(alice, booked.body["id"]))
    assert deleted.status == 204
    answer = await call(stack, "GET", f"/v1/integrations/{alice}/freebusy", params=window)
    assert answer.body["busy"] == []


async def test_delete_twice_is_204_and_only_our_events_can_be_touched(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(10)
    own = event(stack, ALICE, at(d, "08:00"), at(d, "09:00"))  # made in Google Calendar
    booked = await book(stack, alice, slot(d), key="k-del")
    event_id = booked.body["id"]

    for who in (stack.other_tenant_key,):
        assert (await call(stack, "DELETE", event_path(alice, event_id), key=who)).status == 404
        assert (await patch(stack, alice, event_id, {"summary": "x"}, api_key=who)).status == 404
    assert len(gateway_events(stack, ALICE)) == 1

    for target in (own, "0123456789abcdefghijklmnopqrstuv", "NOT-AN-ID"):
        gone = await call(stack, "DELETE", event_path(alice, target))
        assert gone.status == 404 and gone.body["code"] == "event_not_found", target
        changed = await patch(stack, alice, target, {"summary": "mine now"})
        assert changed.status == 404, target
    assert stack.google.calendars.ensure_user(ALICE).events[own].body["status"] != "cancelled"

    first = await call(stack, "DELETE", event_path(alice, event_id))
    assert first.status == 204
    assert gateway_events(stack, ALICE) == []
    again = await call(stack, "DELETE", event_path(alice, event_id))
    assert again.status == 204
    after = await patch(stack, alice, event_id, {"summary": "back?"})
    assert after.status == 404


async def test_scopes_and_inactive_integrations_on_every_event_call(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(11)
    booked = await book(stack, alice, slot(d), key="k-scope")
    event_id = booked.body["id"]
    window = {"time_min": z(at(d, "00:00")), "time_max": z(at(d, "23:00"))}
    reader = await key_with(stack, "calendar:read")
    assert (await call(stack, "GET", events_path(alice), params=window, key=reader)).status == 200
    assert (await patch(stack, alice, event_id, {"summary": "x"}, api_key=reader)).status == 403
    denied = await call(stack, "DELETE", event_path(alice, event_id), key=reader)
    assert denied.status == 403 and denied.body["code"] == "insufficient_scope"

    await stack.app[INTEGRATIONS_KEY].mark_needs_reauth(alice, reason="invalid_grant", at=utc_now())
    for answer in (
        await call(stack, "GET", events_path(alice), params=window),
        await patch(stack, alice, event_id, {"summary": "x"}),
        await call(stack, "DELETE", event_path(alice, event_id)),
    ):
        assert answer.status == 409 and answer.body["code"] == "integration_inactive"
    assert len(gateway_events(stack, ALICE)) == 1


async def test_disconnect_purges_the_booking_rows(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    await book(stack, alice, slot(day(12)), key="k-purge")

    async def rows() -> int:
        async with stack.engine.connect() as conn:
            query = select(func.count()).select_from(bookings)
            return int(
                (await conn.execute(query.where(bookings.c.integration_id == alice))).scalar_one()
            )

    assert await rows() == 1
    gone = await call(stack, "DELETE", f"/v1/integrations/{alice}")
    assert gone.status == 200, gone.body
    assert await rows() == 0
    after = await book(stack, alice, slot(day(12)), key="k-purge")
    assert after.status == 409 and after.body["code"] == "integration_inactive"


async def test_google_failures_on_list_change_and_cancel(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(13)
    booked = await book(stack, alice, slot(d), key="k-google")
    event_id = booked.body["id"]
    window = {"time_min": z(at(d, "00:00")), "time_max": z(at(d, "23:00"))}

    stack.google.inject_fault(status=429, endpoint="events.list", user=ALICE)
    listed = await call(stack, "GET", events_path(alice), params=window)
    assert listed.status == 503 and listed.body["code"] == "rate_limited"
    assert int(listed.headers["Retry-After"]) >= 1

    stack.google.inject_fault(status=503, endpoint="events.patch", user=ALICE)
    changed = await patch(stack, alice, event_id, {"summary": "x"})
    assert changed.status == 503 and changed.body["code"] == "google_unavailable"
    assert gateway_events(stack, ALICE)[0]["summary"] == "Intro call"

    stack.google.inject_fault(status=403, reason="rateLimitExceeded", endpoint="events.delete")
    cancelled = await call(stack, "DELETE", event_path(alice, event_id))
    assert cancelled.status == 503 and cancelled.body["code"] == "rate_limited"
    assert len(gateway_events(stack, ALICE)) == 1  # still there: the agent retries
    assert (await call(stack, "DELETE", event_path(alice, event_id))).status == 204
    assert gateway_events(stack, ALICE) == []


async def test_a_freebusy_only_grant_cannot_list_change_or_cancel(stack: Stack) -> None:
    dave = await connect(stack, DAVE)
    d = day(14)
    window = {"time_min": z(at(d, "00:00")), "time_max": z(at(d, "23:00"))}
    listed = await call(stack, "GET", events_path(dave), params=window)
    assert listed.status == 403 and listed.body["code"] == "insufficient_google_scope"
    some_id = "0123456789abcdefghijklmnopqrstuv"
    changed = await patch(stack, dave, some_id, {"summary": "x"})
    assert changed.status == 403 and changed.body["code"] == "insufficient_google_scope"
    cancelled = await call(stack, "DELETE", event_path(dave, some_id))
    assert cancelled.status == 403 and cancelled.body["code"] == "insufficient_google_scope"
