"""booking.updated and booking.cancelled, end to end: the gateway books a meeting, then at
Google (the emulator's control API) the lead accepts, the organizer moves it, and it is
cancelled; each reaches a verifying receiver after the sync that sees it. The user's own
events announce nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from gateway.db.schema import webhook_deliveries, webhook_events
from tests.support.availability import ALICE, at, connect, day, event, sync, z
from tests.support.booking import book, slot
from tests.support.stack import Stack
from tests.webhooks.delivery_support import Clock, Workers, create_endpoint
from tests.webhooks.receiver import Receiver, receiver

LEAD = "lead@example.com"


async def at_google(stack: Stack, method: str, path: str, body: Any = None) -> None:
    url = f"{stack.google_url}/_emulator/calendar/calendars/{ALICE}/events/{path}"
    async with stack.http.request(method, url, json=body) as response:
        assert response.status == 200, await response.text()


async def deliver_all(stack: Stack, workers: Workers) -> None:
    run = workers.start(stack)
    while await run.run_once():
        pass


async def test_lead_accepts_organizer_moves_then_cancels(stack: Stack, workers: Workers) -> None:
    hooks: Receiver
    async with receiver() as hooks:
        integration_id = await connect(stack, ALICE)
        await sync(stack, integration_id)
        made = await create_endpoint(stack, hooks.url, ["booking.updated", "booking.cancelled"])
        hooks.secrets.append(made["secret"])
        base = day(5)
        booked = await book(
            stack,
            integration_id,
            slot(base, attendees=[{"email": LEAD}]),
            key="webhook-booking-1",
        )
        assert booked.status == 201, booked.body
        event_id = booked.body["id"]
        event(stack, ALICE, at(base, "15:00"), at(base, "16:00"))  # the user's own
        await sync(stack, integration_id)
        await deliver_all(stack, workers)
        assert hooks.requests == [], "booking it, or the user's own events, announce nothing"

        await at_google(
            stack, "POST", f"{event_id}/response", {"email": LEAD, "responseStatus": "accepted"}
        )
        await sync(stack, integration_id)
        await deliver_all(stack, workers)
        [accepted] = hooks.requests
        assert accepted.verified
        data = accepted.payload["data"]
        assert accepted.payload["type"] == "booking.updated"
        assert (data["integration_id"], data["event_id"], data["changes"]) == (
            integration_id,
            event_id,
            ["attendees"],
        )
        assert data["after"]["attendees"] == [{"email": LEAD, "response_status": "accepted"}]
        # Google says needsAction; the emulator leaves an unanswered invitation without one.
        [before] = data["before"]["attendees"]
        assert before["response_status"] in (None, "needsAction")

        new_start, new_end = at(base, "11:00"), at(base, "11:30")
        await at_google(
            stack,
            "PATCH",
            event_id,
            {"start": {"dateTime": z(new_start)}, "end": {"dateTime": z(new_end)}},
        )
        await sync(stack, integration_id)
        await deliver_all(stack, workers)
        moved = hooks.requests[-1].payload
        assert moved["type"] == "booking.updated"
        assert moved["data"]["changes"] == ["time"]
        assert moved["data"]["before"]["start"] == z(at(base, "10:00"))
        assert moved["data"]["after"]["start"] == z(new_start)

        await at_google(stack, "DELETE", event_id)
        await sync(stack, integration_id)
        await deliver_all(stack, workers)
        cancelled = hooks.requests[-1].payload
        assert cancelled["type"] == "booking.cancelled"
        assert cancelled["data"]["event_id"] == event_id
        assert cancelled["data"]["before"]["start"] == z(new_start)
        assert len(hooks.unique()) == 3


async def test_availability_changed_is_opt_in_and_coalesced(stack: Stack, workers: Workers) -> None:
    hooks: Receiver
    async with receiver() as hooks, receiver() as bookings_only:
        integration_id = await connect(stack, ALICE)
        await sync(stack, integration_id)
        made = await create_endpoint(stack, hooks.url, ["availability.changed"])
        await create_endpoint(stack, bookings_only.url, ["booking.updated"])
        hooks.secrets.append(made["secret"])
        base = day(4)
        event(stack, ALICE, at(base, "09:00"), at(base, "10:00"))
        await sync(stack, integration_id)
        event(stack, ALICE, at(base, "16:00"), at(base, "17:00"))
        await sync(stack, integration_id)
        await deliver_all(stack, workers)
        [first] = hooks.requests
        assert first.verified
        data = first.payload["data"]
        assert first.payload["type"] == "availability.changed"
        # Two syncs before it went out: one announcement spanning both changes.
        assert (data["integration_id"], data["changed_start"], data["changed_end"]) == (
            integration_id,
            z(at(base, "09:00")),
            z(at(base, "17:00")),
        )
        assert "summary" not in first.body.decode()
        assert bookings_only.requests == [], "opt-in: only endpoints that asked get it"

        # Another change within the coalescing window waits for the window's end.
        event(stack, ALICE, at(base, "18:00"), at(base, "19:00"))
        await sync(stack, integration_id)
        clock = Clock()
        run = workers.start(stack, clock)
        assert await run.run_once() == 0
        clock.advance(seconds=stack.settings.webhook_availability_coalesce_s)
        assert await run.run_once() == 1
        assert hooks.requests[-1].payload["data"]["changed_start"] == z(at(base, "18:00"))


async def test_a_disconnect_deletes_the_events_about_the_users_calendar(stack: Stack) -> None:
    """Booked meetings' details and availability spans in the outbox are synced data like any
    other: a disconnect deletes them, delivered or not; the integration.* events stay."""
    async with receiver() as hooks:
        integration_id = await connect(stack, ALICE)
        await sync(stack, integration_id)
        await create_endpoint(
            stack,
            hooks.url,
            ["booking.updated", "availability.changed", "integration.disconnected"],
        )
        booked = await book(
            stack, integration_id, slot(day(6), summary="Pricing for ACME"), key="purge-1"
        )
        await at_google(stack, "PATCH", booked.body["id"], {"summary": "Pricing for ACME (moved)"})
        await sync(stack, integration_id)  # booking.updated, not delivered yet

        async def outbox() -> list[tuple[str, str]]:
            async with stack.engine.connect() as conn:
                rows = await conn.execute(
                    select(webhook_events.c.type, webhook_events.c.body).where(
                        webhook_events.c.integration_id == integration_id
                    )
                )
                return [(str(t), str(b)) for t, b in rows]

        assert "booking.updated" in [t for t, _ in await outbox()]
        gone = await stack.http.delete(
            stack.url(f"/v1/integrations/{integration_id}"), headers=stack.auth()
        )
        assert gone.status == 200
        left = await outbox()
        assert [t for t, _ in left] == ["integration.disconnected"]
        assert "Pricing" not in str(left)
        async with stack.engine.connect() as conn:
            orphans = await conn.execute(
                select(webhook_deliveries.c.id).where(
                    webhook_deliveries.c.event_id.not_in(select(webhook_events.c.id))
                )
            )
            assert orphans.all() == []


async def test_a_rebuild_after_a_410_announces_what_happened_to_booked_meetings(
    stack: Stack,
    workers: Workers,
) -> None:
    hooks: Receiver
    async with receiver() as hooks:
        integration_id = await connect(stack, ALICE)
        await sync(stack, integration_id)
        made = await create_endpoint(stack, hooks.url, ["booking.updated", "booking.cancelled"])
        hooks.secrets.append(made["secret"])
        base = day(5)
        moved = await book(stack, integration_id, slot(base), key="rebuild-moved")
        dropped = await book(
            stack, integration_id, slot(base, "14:00", "14:30"), key="rebuild-gone"
        )
        await sync(stack, integration_id)

        # Google expires the sync token; meanwhile one meeting moves and the other is deleted.
        stack.google.calendars.invalidate_sync_tokens(ALICE)
        new_start, new_end = at(base, "11:00"), at(base, "11:30")
        await at_google(
            stack,
            "PATCH",
            moved.body["id"],
            {"start": {"dateTime": z(new_start)}, "end": {"dateTime": z(new_end)}},
        )
        await at_google(stack, "DELETE", dropped.body["id"])
        await sync(stack, integration_id)  # the 410, then a full rebuild
        await deliver_all(stack, workers)

        announced = {r.payload["data"]["event_id"]: r.payload for r in hooks.unique().values()}
        assert all(r.verified for r in hooks.requests)
        assert announced[moved.body["id"]]["type"] == "booking.updated"
        assert announced[moved.body["id"]]["data"]["after"]["start"] == z(new_start)
        assert announced[dropped.body["id"]]["type"] == "booking.cancelled"
        assert len(announced) == 2
