"""book_meeting, reschedule_meeting and cancel_meeting over MCP (the official client, real HTTP,
the Google emulator, SQLite and PostgreSQL): what the emulator holds afterwards, one event per
idempotency key however often the agent retries, slot_busy with the conflicts, scopes, tenants,
inactive integrations and audit entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.booking.idempotency import google_event_id
from gateway.clock import utc_now
from gateway.http.appkeys import AUDIT_KEY, INTEGRATIONS_KEY
from tests.support.availability import ALICE, DAVE, at, connect, day, event, key_with, sync, z
from tests.support.booking import gateway_events, inserts
from tests.support.mcp_client import mcp_client, text_of, tool_error
from tests.support.stack import Stack


async def call_tool(stack: Stack, name: str, key: str | None = None, **arguments: Any) -> Any:
    async with mcp_client(stack.base_url, key or stack.api_key) as client:
        return await client.call_tool(name, arguments)


def meeting(connection_id: str, start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {
        "connection_id": connection_id,
        "idempotency_key": "lead-42-intro",
        "summary": "Intro call",
        "start": start,
        "end": end,
        **extra,
    }


async def mcp_audit(stack: Stack, tenant: str = "acme") -> list[tuple[str, str, str | None]]:
    entries = await stack.app[AUDIT_KEY].entries(tenant_id=tenant)
    return [(e.action, e.outcome, e.integration_id) for e in entries if e.action.startswith("mcp.")]


async def test_the_booking_tools_declare_their_contract(stack: Stack) -> None:
    async with mcp_client(stack.base_url, stack.api_key) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
    book = listed["book_meeting"]
    assert "idempotency_key" in book.input_schema["required"]
    assert "if_free" not in book.input_schema["required"]
    assert book.input_schema["properties"]["if_free"]["default"] is True
    assert listed["reschedule_meeting"].input_schema["required"] == [
        "connection_id",
        "event_id",
        "start",
        "end",
    ]
    assert listed["cancel_meeting"].input_schema["required"] == ["connection_id", "event_id"]
    for name in ("book_meeting", "reschedule_meeting", "cancel_meeting"):
        description = listed[name].description or ""
        assert "integration_inactive" in description and "rate_limited" in description, name
        assert name == "cancel_meeting" or "RFC 3339" in description, name
        annotations = listed[name].annotations
        assert annotations is not None and annotations.read_only_hint is False
    assert "slot_busy" in (book.description or "")
    assert "SAME key" in (book.description or "")


async def test_book_reschedule_and_cancel_change_the_calendar(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    await sync(stack, alice)
    booked = await call_tool(
        stack,
        "book_meeting",
        **meeting(
            alice,
            z(at(d, "10:00")),
            z(at(d, "10:30")),
            attendees=["lead@example.org"],
            time_zone="Europe/Berlin",
        ),
    )
    assert not booked.is_error, text_of(booked)
    answer = text_of(booked)
    event_id = answer["event"]["id"]
    assert event_id == google_event_id("acme", alice, "lead-42-intro")
    assert answer["replayed"] is False and answer["connection_id"] == alice
    assert (answer["event"]["start"], answer["event"]["end"]) == (
        z(at(d, "10:00")),
        z(at(d, "10:30")),
    )
    [created] = gateway_events(stack, ALICE)
    assert created["id"] == event_id and created["summary"] == "Intro call"
    assert [a["email"] for a in created["attendees"]] == ["lead@example.org"]

    # The agent's next availability check sees it at once (the local copy is updated).
    check = await call_tool(
        stack,
        "check_availability",
        connection_ids=[alice],
        time_min=z(at(d, "09:00")),
        time_max=z(at(d, "12:00")),
    )
    assert text_of(check)["connections"][0]["busy"] == [
        {"start": z(at(d, "10:00")), "end": z(at(d, "10:30"))}
    ]

    moved = await call_tool(
        stack,
        "reschedule_meeting",
        connection_id=alice,
        event_id=event_id,
        start=z(at(d, "14:00")),
        end=z(at(d, "15:00")),
        etag=answer["event"]["etag"],
    )
    assert not moved.is_error, text_of(moved)
    assert text_of(moved)["event"]["start"] == z(at(d, "14:00"))
    [changed] = gateway_events(stack, ALICE)
    assert datetime.fromisoformat(changed["start"]["dateTime"]) == at(d, "14:00")

    # A second move with the old etag: somebody (we) changed it since.
    stale = tool_error(
        await call_tool(
            stack,
            "reschedule_meeting",
            connection_id=alice,
            event_id=event_id,
            start=z(at(d, "16:00")),
            end=z(at(d, "17:00")),
            etag=answer["event"]["etag"],
        )
    )
    assert stale["code"] == "etag_mismatch"

    cancelled = await call_tool(stack, "cancel_meeting", connection_id=alice, event_id=event_id)
    assert text_of(cancelled) == {"connection_id": alice, "event_id": event_id, "cancelled": True}
    assert gateway_events(stack, ALICE) == []
    again = await call_tool(stack, "cancel_meeting", connection_id=alice, event_id=event_id)
    assert not again.is_error

    assert [(a, o) for a, o, i in await mcp_audit(stack) if i == alice] == [
        ("mcp.book_meeting", "ok"),
        ("mcp.check_availability", "ok"),
        ("mcp.reschedule_meeting", "ok"),
        ("mcp.reschedule_meeting", "etag_mismatch"),
        ("mcp.cancel_meeting", "ok"),
        ("mcp.cancel_meeting", "ok"),
    ]


async def test_a_busy_slot_is_slot_busy_with_the_conflicts(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(8)
    event(stack, ALICE, at(d, "10:15"), at(d, "11:00"))  # unknown to any copy: checked live
    result = await call_tool(
        stack, "book_meeting", **meeting(alice, z(at(d, "10:00")), z(at(d, "10:30")))
    )
    error = tool_error(result)
    assert error["code"] == "slot_busy"
    assert error["conflicts"] == [{"start": z(at(d, "10:15")), "end": z(at(d, "10:30"))}]
    assert "find_meeting_slots" in error["advice"]
    assert gateway_events(stack, ALICE) == [] and inserts(stack) == []
    assert await mcp_audit(stack) == [("mcp.book_meeting", "slot_busy", alice)]


async def test_a_retried_booking_creates_one_event(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(9)
    # The first answer is lost on its way back from Google, as a timeout would lose it.
    stack.google.inject_fault(drop_response=True, endpoint="events.insert")
    args = meeting(alice, z(at(d, "10:00")), z(at(d, "10:30")), idempotency_key="k-retry")
    lost = tool_error(await call_tool(stack, "book_meeting", **args))
    assert lost["code"] == "google_unavailable" and lost["retry_after_s"] >= 1
    assert "same idempotency key" in lost["advice"]

    retried = [text_of(await call_tool(stack, "book_meeting", **args)) for _ in range(2)]
    assert [r["replayed"] for r in retried] == [True, True]
    assert {r["event"]["id"] for r in retried} == {google_event_id("acme", alice, "k-retry")}
    assert len(gateway_events(stack, ALICE)) == 1
    assert inserts(stack) == [0]  # one insert, applied at Google; the retries only looked

    # The same key for another meeting is refused, and books nothing.
    other = {**args, "start": z(at(d, "11:00")), "end": z(at(d, "11:30"))}
    reused = tool_error(await call_tool(stack, "book_meeting", **other))
    assert reused["code"] == "idempotency_key_reused"
    assert len(gateway_events(stack, ALICE)) == 1


async def test_inactive_scope_tenant_and_unknown_event(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(10)
    args = meeting(alice, z(at(d, "10:00")), z(at(d, "10:30")))

    read_only = await key_with(stack, "connections:read", "calendar:read")
    refused = tool_error(await call_tool(stack, "book_meeting", key=read_only, **args))
    assert (refused["code"], refused["scope"]) == ("insufficient_scope", "calendar:write")

    foreign = tool_error(await call_tool(stack, "book_meeting", key=stack.other_tenant_key, **args))
    assert foreign["code"] == "integration_not_found"
    assert gateway_events(stack, ALICE) == []

    booked = text_of(await call_tool(stack, "book_meeting", **args))
    event_id = booked["event"]["id"]
    for tool in ("cancel_meeting", "reschedule_meeting"):
        extra = {"start": z(at(d, "12:00")), "end": z(at(d, "13:00"))} if "re" in tool else {}
        other = tool_error(
            await call_tool(
                stack,
                tool,
                key=stack.other_tenant_key,
                connection_id=alice,
                event_id=event_id,
                **extra,
            )
        )
        assert other["code"] == "integration_not_found", tool
    assert len(gateway_events(stack, ALICE)) == 1

    unknown = tool_error(
        await call_tool(stack, "cancel_meeting", connection_id=alice, event_id="abcdef12345")
    )
    assert unknown["code"] == "event_not_found"

    await stack.app[INTEGRATIONS_KEY].mark_needs_reauth(alice, reason="invalid_grant", at=utc_now())
    inactive = tool_error(
        await call_tool(stack, "book_meeting", **{**args, "idempotency_key": "k-2"})
    )
    assert inactive["code"] == "integration_inactive" and inactive["connection_id"] == alice
    assert "reconnect" in inactive["advice"]
    assert len(gateway_events(stack, ALICE)) == 1

    assert ("mcp.book_meeting", "insufficient_scope", None) in await mcp_audit(stack)
    assert ("mcp.book_meeting", "integration_inactive", alice) in await mcp_audit(stack)
    assert {(a, o, i) for a, o, i in await mcp_audit(stack, "globex")} == {
        ("mcp.book_meeting", "integration_not_found", None),
        ("mcp.cancel_meeting", "integration_not_found", None),
        ("mcp.reschedule_meeting", "integration_not_found", None),
    }


async def test_a_connection_without_booking_permission(stack: Stack) -> None:
    dave = await connect(stack, DAVE)  # granted free/busy only
    d = day(11)
    error = tool_error(
        await call_tool(
            stack, "book_meeting", **meeting(dave, z(at(d, "10:00")), z(at(d, "10:30")))
        )
    )
    assert error["code"] == "insufficient_google_scope"
    assert "reconnect" in error["advice"]
