"""POST /v1/integrations/{id}/events (idempotent booking) over real HTTP against the Google
emulator, on SQLite and PostgreSQL: the derived event id, replays, key reuse, if_free against
fresh availability, a response lost on the way back, concurrent bookings of one slot, the event
visible in free/busy at once, validation, scopes, tenants, inactive integrations, Google
failures."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from gateway.booking.idempotency import google_event_id
from gateway.clock import utc_now
from gateway.db.schema import bookings, calendars
from gateway.http.appkeys import INTEGRATIONS_KEY
from tests.support.availability import (
    ALICE,
    DAVE,
    at,
    call,
    connect,
    day,
    event,
    key_with,
    sync,
    z,
)
from tests.support.booking import book, events_path, gateway_events, inserts, slot
from tests.support.stack import Stack


def freebusy(integration_id: str) -> str:
    return f"/v1/integrations/{integration_id}/freebusy"


async def test_booking_creates_one_event_under_the_derived_id(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    body = slot(
        d,
        description="Agenda: pricing",
        location="Room 1",
        attendees=[{"email": "lead@example.org"}],
        time_zone="Europe/Berlin",
    )
    answer = await book(stack, alice, body, key="lead-42-intro")
    assert answer.status == 201, answer.body
    assert "Idempotent-Replayed" not in answer.headers
    expected_id = google_event_id("acme", alice, "lead-42-intro")
    assert answer.body["id"] == expected_id
    assert answer.body["calendar_id"].startswith("cal_")
    assert (answer.body["start"], answer.body["end"]) == (z(at(d, "10:00")), z(at(d, "10:30")))
    assert answer.body["status"] == "confirmed"
    assert answer.body["etag"] and answer.body["html_link"]
    [created] = gateway_events(stack, ALICE)
    assert created["id"] == expected_id
    assert created["summary"] == "Intro call" and created["location"] == "Room 1"
    assert created["start"]["timeZone"] == "Europe/Berlin"
    assert [a["email"] for a in created["attendees"]] == ["lead@example.org"]


async def test_same_key_same_body_replays_and_another_body_is_refused(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(8)
    first = await book(stack, alice, slot(d), key="k-1")
    assert first.status == 201, first.body
    again = await book(stack, alice, slot(d), key="k-1")
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.body == first.body
    # The same request spelled differently (defaults given, another offset) is the same.
    spelled = {**slot(d), "if_free": True, "start": at(d, "10:00").isoformat()}
    assert (await book(stack, alice, spelled, key="k-1")).status == 201
    reused = await book(stack, alice, slot(d, "11:00", "11:30"), key="k-1")
    assert reused.status == 422 and reused.body["code"] == "idempotency_key_reused"
    assert len(gateway_events(stack, ALICE)) == 1
    assert inserts(stack) == [200]


async def test_a_dropped_answer_is_retried_into_the_same_event(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(9)
    stack.google.inject_fault(drop_response=True, endpoint="events.insert")
    lost = await book(stack, alice, slot(d), key="k-drop")
    assert lost.status == 503 and lost.body["code"] == "google_unavailable"
    assert "Retry-After" in lost.headers
    assert len(gateway_events(stack, ALICE)) == 1  # applied at Google all the same

    retry = await book(stack, alice, slot(d), key="k-drop")
    assert retry.status == 201, retry.body
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.body["id"] == google_event_id("acme", alice, "k-drop")
    assert len(gateway_events(stack, ALICE)) == 1
    # The retry asked Google for the event instead of booking it again.
    assert inserts(stack) == [0]


async def test_a_duplicate_at_google_is_success(stack: Stack) -> None:
    """A pending row lost (or never written) and Google has the event: 409 duplicate means
    "already created"."""
    alice = await connect(stack, ALICE)
    d = day(10)
    first = await book(stack, alice, slot(d), key="k-dup")
    # Forget our bookkeeping, as if the database had been restored from before the booking.
    async with stack.engine.begin() as conn:
        await conn.execute(bookings.delete())
    again = await book(stack, alice, slot(d, if_free=False), key="k-dup")
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.body["id"] == first.body["id"]
    assert inserts(stack) == [200, 409]
    assert len(gateway_events(stack, ALICE)) == 1


async def test_if_free_refuses_a_busy_slot_and_books_nothing(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(11)
    event(stack, ALICE, at(d, "10:15"), at(d, "11:00"))
    busy = await book(stack, alice, slot(d), key="k-busy")
    assert busy.status == 409 and busy.body["code"] == "slot_busy"
    assert busy.body["conflicts"] == [{"start": z(at(d, "10:15")), "end": z(at(d, "10:30"))}]
    assert gateway_events(stack, ALICE) == [] and inserts(stack) == []
    # The key was not spent: the same key books once the caller says "book anyway".
    forced = await book(stack, alice, slot(d, if_free=False), key="k-busy")
    assert forced.status == 201, forced.body


async def test_unknown_availability_is_not_booked_blind(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(12)
    # Never synced: no copy at all, and Google's freeBusy fails.
    stack.google.inject_fault(status=503, endpoint="freebusy.query")
    answer = await book(stack, alice, slot(d), key="k-unknown")
    assert answer.status == 503 and answer.body["code"] == "availability_unknown"
    assert int(answer.headers["Retry-After"]) >= 1
    # A copy an hour old is not fresh enough either (GATEWAY_BOOKING_MAX_STALENESS_S=30).
    await sync(stack, alice)
    async with stack.engine.begin() as conn:
        await conn.execute(
            calendars.update().values(last_success_at=utc_now() - timedelta(hours=1))
        )
    stack.google.inject_fault(status=503, endpoint="freebusy.query")
    stale = await book(stack, alice, slot(d), key="k-unknown")
    assert stale.status == 503 and stale.body["code"] == "availability_unknown"
    assert inserts(stack) == []
    # Once Google answers, the same key books.
    assert (await book(stack, alice, slot(d), key="k-unknown")).status == 201


async def test_a_booking_is_busy_in_freebusy_at_once(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(13)
    await sync(stack, alice)
    window = {"time_min": z(at(d, "09:00")), "time_max": z(at(d, "12:00"))}
    before = await call(stack, "GET", freebusy(alice), params=window)
    assert before.body["source"] == "cache" and before.body["busy"] == []
    assert (await book(stack, alice, slot(d), key="k-visible")).status == 201
    after = await call(stack, "GET", freebusy(alice), params=window)
    assert after.body["source"] == "cache", after.body
    assert after.body["busy"] == [{"start": z(at(d, "10:00")), "end": z(at(d, "10:30"))}]
    # And a second if_free booking of the slot sees it from the copy.
    again = await book(stack, alice, slot(d, "10:15", "10:45"), key="k-visible-2")
    assert again.status == 409 and again.body["code"] == "slot_busy"


async def test_concurrent_if_free_bookings_of_one_slot(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(14)
    answers = await asyncio.gather(
        *(book(stack, alice, slot(d), key=f"k-race-{n}") for n in range(5))
    )
    statuses = sorted(a.status for a in answers)
    assert statuses == [201, 409, 409, 409, 409], [a.body for a in answers]
    assert {a.body["code"] for a in answers if a.status == 409} == {"slot_busy"}
    assert len(gateway_events(stack, ALICE)) == 1


async def test_missing_or_malformed_idempotency_key(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(15)
    missing = await book(stack, alice, slot(d), key=None)
    assert missing.status == 400 and missing.body["code"] == "idempotency_key_required"
    spaced = await book(stack, alice, slot(d), key="has space")
    assert spaced.status == 400 and spaced.body["code"] == "invalid_idempotency_key"
    long = await book(stack, alice, slot(d), key="k" * 201)
    assert long.status == 400 and long.body["code"] == "invalid_idempotency_key"
    assert inserts(stack) == []


async def test_invalid_bodies_are_422_and_book_nothing(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(16)
    cases = [
        ({**slot(d), "end": z(at(d, "09:00"))}, "end"),
        ({**slot(d), "summary": ""}, "summary"),
        ({**slot(d), "time_zone": "Mars/Olympus"}, "time_zone"),
        ({**slot(d), "calendar_id": "cal_000000000000000000000000"}, "calendar_id"),
        ({**slot(d), "calendar_id": "alice@example.com"}, "calendar_id"),
        ({**slot(d), "attendees": [{"email": "not-an-address"}]}, "attendees[0].email"),
        ({**slot(d), "send_updates": "externalOnly"}, "send_updates"),
        ({**slot(d), "start": "2030-01-01T10:00:00"}, "start"),
        ({**slot(d), "colour": "red"}, "colour"),
        ({"start": z(at(d, "10:00")), "end": z(at(d, "11:00"))}, "summary"),
        ({**slot(d), "if_free": "yes"}, "if_free"),
    ]
    for n, (body, field) in enumerate(cases):
        answer = await book(stack, alice, body, key=f"k-bad-{n}")
        assert answer.status == 422, (field, answer.body)
        assert answer.body["field"] == field, (field, answer.body)
    assert inserts(stack) == []


async def test_scope_tenant_and_inactive_integration(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(17)
    reader = await key_with(stack, "calendar:read")
    refused = await book(stack, alice, slot(d), key="k-scope", api_key=reader)
    assert refused.status == 403 and refused.body["code"] == "insufficient_scope"
    other = await book(stack, alice, slot(d), key="k-tenant", api_key=stack.other_tenant_key)
    assert other.status == 404 and other.body["code"] == "integration_not_found"
    unknown = await book(stack, "int_" + "0" * 24, slot(d), key="k-unknown")
    assert unknown.status == 404
    await stack.app[INTEGRATIONS_KEY].mark_needs_reauth(alice, reason="invalid_grant", at=utc_now())
    inactive = await book(stack, alice, slot(d), key="k-inactive")
    assert inactive.status == 409 and inactive.body["code"] == "integration_inactive"
    assert inactive.body["integration_status"] == "needs_reauth"
    assert inserts(stack) == []


async def test_no_booking_scope_granted_is_403(stack: Stack) -> None:
    dave = await connect(stack, DAVE)
    answer = await book(stack, dave, slot(day(18)), key="k-dave")
    assert answer.status == 403 and answer.body["code"] == "insufficient_google_scope"
    assert inserts(stack) == []


async def test_google_rate_limiting_is_503_with_retry_after(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    stack.google.inject_fault(status=429, endpoint="events.insert", user=ALICE)
    limited = await book(stack, alice, slot(day(19), if_free=False), key="k-limited")
    assert limited.status == 503 and limited.body["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    # Nothing was booked; the same key works once Google does.
    retry = await book(stack, alice, slot(day(19), if_free=False), key="k-limited")
    assert retry.status == 201 and len(gateway_events(stack, ALICE)) == 1


async def test_events_path_rejects_other_methods(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    answer = await call(stack, "PUT", events_path(alice), json={})
    assert answer.status == 405
