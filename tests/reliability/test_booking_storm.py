"""A fault storm during booking: Google rate-limits, fails, and applies inserts whose answers
are lost, access tokens expire and the token endpoint fails too, while impatient agents send
every booking twice at once and retry each with its Idempotency-Key until it answers. After
the storm each key has exactly one event at Google, under its derived id, every booking
replays to the same event, and free/busy shows every booked meeting as busy."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.booking.idempotency import google_event_id
from tests.support.availability import ALICE, Response, at, call, connect, day, sync, z
from tests.support.booking import book, gateway_events, inserts, slot
from tests.support.stack import Stack

BOOKINGS = 8
MAX_ATTEMPTS = 40
# What an agent may meet during a storm and should retry with the same key; anything else
# (a 409 slot_busy for its own meeting, a 422, a 500) fails the test.
RETRYABLE = {"google_unavailable", "rate_limited", "availability_unknown"}


def storm(stack: Stack) -> None:
    google = stack.google
    for status, reason, times in (
        (429, "rateLimitExceeded", 3),
        (403, "userRateLimitExceeded", 3),
        (503, None, 3),
        (500, None, 2),
    ):
        google.inject_fault(status=status, reason=reason, times=times, endpoint="events.insert")
    # Applied at Google, answer lost: the agent cannot know the meeting exists.
    google.inject_fault(drop_response=True, times=5, endpoint="events.insert")
    google.inject_fault(status=503, times=2, endpoint="events.get")
    # Every access token expires at once and the first refreshes fail.
    google.advance_clock(3700)
    google.inject_fault(status=503, times=2, endpoint="token")


async def book_until_answered(
    stack: Stack, integration_id: str, body: dict[str, Any], key: str
) -> tuple[Response, list[int]]:
    """Retry like a well-behaved agent: same key, same body, until a final answer."""
    seen: list[int] = []
    for _ in range(MAX_ATTEMPTS):
        answer = await book(stack, integration_id, body, key=key)
        seen.append(answer.status)
        if answer.status == 201:
            return answer, seen
        assert answer.status == 503 and answer.body["code"] in RETRYABLE, (key, answer.body)
        assert "Retry-After" in answer.headers
        await asyncio.sleep(0.02)  # the test's stand-in for Retry-After
    raise AssertionError(f"{key}: no answer after {MAX_ATTEMPTS} attempts: {seen}")


async def test_a_storm_during_booking_books_each_meeting_exactly_once(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    await sync(stack, alice)
    d = day(9)
    meetings = {
        f"storm-{n}": slot(d, f"{9 + n}:00", f"{9 + n}:30", summary=f"Meeting {n}")
        for n in range(BOOKINGS)
    }
    storm(stack)

    # Each booking is sent by two agents at once (a client that timed out and resent).
    results = await asyncio.gather(
        *(
            book_until_answered(stack, alice, body, key)
            for key, body in meetings.items()
            for _ in range(2)
        )
    )
    assert any(s != 201 for _, seen in results for s in seen), "the storm never hit"
    assert stack.google.faults.pending() == [], "some faults were never met"

    booked = {g["id"]: g for g in gateway_events(stack, ALICE)}
    assert len(booked) == BOOKINGS, sorted(booked)
    for key, body in meetings.items():
        event_id = google_event_id("acme", alice, key)
        assert booked[event_id]["summary"] == body["summary"]
    # Both agents of a key got the same event.
    by_key: dict[str, set[str]] = {}
    for (answer, _), key in zip(results, [k for k in meetings for _ in range(2)], strict=True):
        by_key.setdefault(key, set()).add(answer.body["id"])
    assert all(len(ids) == 1 for ids in by_key.values()), by_key
    # Google saw some inserts refused, some applied with the answer lost, none duplicated.
    assert inserts(stack).count(200) + inserts(stack).count(0) == BOOKINGS

    # Calm again: every booking replays to its event, and free/busy shows them all as busy.
    for key, body in meetings.items():
        again = await book(stack, alice, body, key=key)
        assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
        assert again.body["id"] == google_event_id("acme", alice, key)
    answer = await call(
        stack,
        "GET",
        f"/v1/integrations/{alice}/freebusy",
        params={"time_min": z(at(d, "09:00")), "time_max": z(at(d, "17:00"))},
    )
    assert answer.status == 200 and answer.body["complete"] is True, answer.body
    busy = [(b["start"], b["end"]) for b in answer.body["busy"]]
    for body in meetings.values():
        assert any(s <= body["start"] and body["end"] <= e for s, e in busy), (body, busy)
