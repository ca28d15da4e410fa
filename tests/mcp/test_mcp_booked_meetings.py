"""list_booked_meetings over MCP (the official client, real HTTP, the emulator): the meetings
the gateway booked with each attendee's response, and times given in the call's (or the
connection's) time zone next to UTC."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from tests.support.availability import ALICE, at, connect, day, event, sync, z
from tests.support.booking import book, slot
from tests.support.mcp_client import mcp_client, text_of
from tests.support.stack import Stack


async def test_did_the_lead_accept_in_local_time(stack: Stack) -> None:
    alice = await connect(stack, ALICE)  # her calendar is in Europe/Berlin
    await sync(stack, alice)
    base = day(8)
    event(stack, ALICE, at(base, "12:00"), at(base, "13:00"))  # her own: never listed
    booked = await book(
        stack,
        alice,
        slot(base, "07:00", "07:30", attendees=[{"email": "lead@example.com"}]),
        key="mcp-list-1",
    )
    assert booked.status == 201, booked.body
    stack.google.calendars.respond(
        stack.google.calendars.ensure_user(ALICE), booked.body["id"], "lead@example.com", "accepted"
    )
    async with mcp_client(stack.base_url, stack.api_key) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "list_booked_meetings" in names
        answer = text_of(
            await client.call_tool(
                "list_booked_meetings",
                {"connection_id": alice, "time_min": z(base), "time_max": z(at(base, "23:59"))},
            )
        )
        tokyo = text_of(
            await client.call_tool(
                "list_booked_meetings",
                {
                    "connection_id": alice,
                    "time_min": z(base),
                    "time_max": z(at(base, "23:59")),
                    "time_zone": "Asia/Tokyo",
                },
            )
        )
    [meeting] = answer["meetings"]
    assert answer["time_zone"] == "Europe/Berlin", "the connection's zone by default"
    assert meeting["id"] == booked.body["id"]
    assert meeting["attendees"] == [{"email": "lead@example.com", "response_status": "accepted"}]
    assert meeting["start"] == z(at(base, "07:00"))
    berlin = at(base, "07:00").astimezone(ZoneInfo("Europe/Berlin"))
    assert meeting["start_local"] == berlin.isoformat(timespec="seconds")
    [same] = tokyo["meetings"]
    assert same["start_local"].endswith("+09:00")
    assert same["start_local"][11:16] == "16:00"
