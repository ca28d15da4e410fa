"""A meeting the gateway booked belongs to the integration that booked it, and to no other.

The same Google account connected under two tenants (or connected again after a disconnect)
sees the same calendar at Google. Only the integration that booked a meeting may list it in
full or keep its details in the synced copy; for every other integration it is a user event
like any other: busy time, nothing more (GATEWAY_STORE_EVENT_DETAILS=false, the default)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from gateway.db.schema import calendar_events, calendars
from tests.support.availability import ALICE, at, call, connect, day, sync, z
from tests.support.booking import book, events_path, slot
from tests.support.stack import Stack

DETAILS = {"description": "Pricing for ACME", "location": "Room 7"}


async def connect_as(stack: Stack, key: str, email: str, user_id: str) -> str:
    """The browser journey of `stack.connect`, started with another tenant's API key."""
    session = await stack.start_connect(user_id, login_hint=email, key=key)
    back = await stack.browser_get(await stack.browser_get(session["connect_url"]))
    assert "status=connected" in back, back
    return parse_qs(urlsplit(back).query)["integration_id"][0]


async def stored(stack: Stack, integration_id: str, event_id: str) -> dict[str, Any]:
    """The synced copy's row of `event_id` on the integration's calendars."""
    async with stack.engine.connect() as conn:
        query = (
            select(calendar_events.c.details, calendar_events.c.created_by_gateway)
            .join(calendars, calendars.c.id == calendar_events.c.calendar_id)
            .where(
                calendars.c.integration_id == integration_id,
                calendar_events.c.event_id == event_id,
            )
        )
        rows = (await conn.execute(query)).mappings().all()
    assert rows, "the event is not in the synced copy"
    return dict(rows[-1])


def listed_window(d: Any) -> dict[str, str]:
    return {"time_min": z(at(d, "00:00")), "time_max": z(at(d, "23:59"))}


async def test_another_tenants_integration_of_the_same_account_sees_only_busy_time(
    stack: Stack,
) -> None:
    mine = await connect(stack, ALICE)
    theirs = await connect_as(stack, stack.other_tenant_key, ALICE, "u-alice-at-globex")
    assert mine != theirs
    d = day(7)
    booked = await book(
        stack, mine, slot(d, attendees=[{"email": "lead@example.org"}], **DETAILS), key="k-a"
    )
    assert booked.status == 201, booked.body
    event_id = booked.body["id"]

    listed = await call(
        stack, "GET", events_path(theirs), params=listed_window(d), key=stack.other_tenant_key
    )
    assert listed.status == 200, listed.body
    assert listed.body["events"] == []
    assert "Pricing" not in str(listed.body) and "lead@example.org" not in str(listed.body)
    own = await call(stack, "GET", events_path(mine), params=listed_window(d))
    assert [e["id"] for e in own.body["events"]] == [event_id]

    await sync(stack, theirs)
    theirs_row = await stored(stack, theirs, event_id)
    assert theirs_row["details"] is None and not theirs_row["created_by_gateway"]
    await sync(stack, mine)
    mine_row = await stored(stack, mine, event_id)
    assert mine_row["created_by_gateway"]
    assert "Pricing" in str(mine_row["details"])

    # The other tenant still sees the meeting as busy time: it is on the user's calendar.
    window = {"time_min": z(at(d, "09:00")), "time_max": z(at(d, "11:00"))}
    busy = await call(
        stack,
        "GET",
        f"/v1/integrations/{theirs}/freebusy",
        params=window,
        key=stack.other_tenant_key,
    )
    assert busy.body["busy"] == [{"start": z(at(d, "10:00")), "end": z(at(d, "10:30"))}]


async def test_a_new_connection_after_a_disconnect_does_not_take_old_bookings_back(
    stack: Stack,
) -> None:
    first = await connect(stack, ALICE)
    d = day(8)
    booked = await book(stack, first, slot(d, **DETAILS), key="k-old")
    event_id = booked.body["id"]
    gone = await call(stack, "DELETE", f"/v1/integrations/{first}")
    assert gone.status == 200, gone.body

    again = await connect(stack, ALICE)
    assert again != first
    listed = await call(stack, "GET", events_path(again), params=listed_window(d))
    assert listed.status == 200 and listed.body["events"] == []
    await sync(stack, again)
    row = await stored(stack, again, event_id)
    assert row["details"] is None and not row["created_by_gateway"]
