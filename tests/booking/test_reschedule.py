"""Rescheduling that checks (`if_free`): a move onto busy time is 409 slot_busy with the
conflicts and changes nothing at Google; a move overlapping only the meeting's own current
time goes through; without if_free (the REST default) a move is not checked."""

from __future__ import annotations

from typing import Any

from tests.support.availability import ALICE, at, connect, day, event, sync, z
from tests.support.booking import book, events_path, slot
from tests.support.mcp_client import mcp_client, tool_error
from tests.support.stack import Stack


async def move(
    stack: Stack, integration_id: str, event_id: str, body: dict[str, Any]
) -> tuple[int, Any]:
    async with stack.http.patch(
        stack.url(f"{events_path(integration_id)}/{event_id}"), json=body, headers=stack.auth()
    ) as response:
        return response.status, await response.json(content_type=None)


def at_google(stack: Stack, event_id: str) -> dict[str, Any]:
    return dict(stack.google.calendars.ensure_user(ALICE).events[event_id].body)


async def test_rescheduling_onto_busy_time_is_409_and_changes_nothing(stack: Stack) -> None:
    integration_id = await connect(stack, ALICE)
    base = day(6)
    event(stack, ALICE, at(base, "14:00"), at(base, "15:00"))  # the user's own meeting
    await sync(stack, integration_id)
    booked = await book(stack, integration_id, slot(base, "10:00", "10:30"), key="move-1")
    assert booked.status == 201, booked.body
    event_id = booked.body["id"]
    before = at_google(stack, event_id)

    status, body = await move(
        stack,
        integration_id,
        event_id,
        {"start": z(at(base, "14:30")), "end": z(at(base, "15:00")), "if_free": True},
    )
    assert status == 409, body
    assert body["code"] == "slot_busy"
    assert body["conflicts"] == [{"start": z(at(base, "14:30")), "end": z(at(base, "15:00"))}]
    assert at_google(stack, event_id) == before, "nothing changed at Google"

    # Another meeting inside the booked one's current time still counts.
    event(stack, ALICE, at(base, "10:20"), at(base, "10:25"))
    await sync(stack, integration_id)
    status, body = await move(
        stack,
        integration_id,
        event_id,
        {"start": z(at(base, "10:15")), "end": z(at(base, "10:45")), "if_free": True},
    )
    assert status == 409, body
    assert body["conflicts"] == [{"start": z(at(base, "10:20")), "end": z(at(base, "10:25"))}]

    # Overlapping only its own current time is free: the meeting does not block itself.
    status, body = await move(
        stack,
        integration_id,
        event_id,
        {"start": z(at(base, "10:25")), "end": z(at(base, "10:55")), "if_free": True},
    )
    assert status == 200, body
    assert body["start"] == z(at(base, "10:25"))

    # Without if_free (the REST default, as before) the move is not checked.
    status, body = await move(
        stack,
        integration_id,
        event_id,
        {"start": z(at(base, "14:30")), "end": z(at(base, "15:00"))},
    )
    assert status == 200, body


async def test_mcp_reschedule_checks_by_default(stack: Stack) -> None:
    integration_id = await connect(stack, ALICE)
    base = day(6)
    event(stack, ALICE, at(base, "14:00"), at(base, "15:00"))
    await sync(stack, integration_id)
    booked = await book(stack, integration_id, slot(base, "10:00", "10:30"), key="move-mcp")
    assert booked.status == 201, booked.body
    event_id = booked.body["id"]
    before = at_google(stack, event_id)
    async with mcp_client(stack.base_url, stack.api_key) as client:
        busy = tool_error(
            await client.call_tool(
                "reschedule_meeting",
                {
                    "connection_id": integration_id,
                    "event_id": event_id,
                    "start": z(at(base, "14:00")),
                    "end": z(at(base, "14:30")),
                },
            )
        )
    assert busy["code"] == "slot_busy"
    assert at_google(stack, event_id) == before
