"""check_availability and find_meeting_slots over MCP (the official client, real HTTP, the Google
emulator, SQLite and PostgreSQL): the same answers as the REST twins, errors an agent can act
on, scopes, tenants and one audit entry per call."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from gateway.clock import utc_now
from gateway.http.appkeys import AUDIT_KEY, INTEGRATIONS_KEY
from tests.support.availability import (
    ALICE,
    ERIN,
    FRANK,
    at,
    connect,
    day,
    event,
    freebusy_calls,
    key_with,
    rate_limit,
    sync,
    z,
)
from tests.support.mcp_client import mcp_client, text_of, tool_error
from tests.support.stack import Stack


async def call_tool(stack: Stack, name: str, key: str | None = None, **arguments: Any) -> Any:
    async with mcp_client(stack.base_url, key or stack.api_key) as client:
        return await client.call_tool(name, arguments)


async def audit_of(stack: Stack, tenant: str = "acme") -> list[tuple[str, str, str | None]]:
    entries = await stack.app[AUDIT_KEY].entries(tenant_id=tenant)
    return [(e.action, e.outcome, e.integration_id) for e in entries if e.action.startswith("mcp.")]


async def test_the_tools_declare_schemas_an_agent_can_follow(stack: Stack) -> None:
    async with mcp_client(stack.base_url, stack.api_key) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
    check, slots = listed["check_availability"], listed["find_meeting_slots"]
    assert check.input_schema["required"] == ["connection_ids", "time_min", "time_max"]
    assert set(slots.input_schema["required"]) == {
        "connection_ids",
        "mode",
        "duration_minutes",
        "time_min",
        "time_max",
        "time_zone",
    }
    for tool in (check, slots):
        assert tool.description is not None and "RFC 3339" in tool.description
        for code in ("incomplete_availability", "integration_inactive", "rate_limited"):
            assert code in tool.description, (tool.name, code)
        props = tool.input_schema["properties"]
        assert "RFC 3339" in props["time_min"]["description"]
        assert props["connection_ids"]["maxItems"] == 50
        assert tool.annotations is not None and tool.annotations.read_only_hint
    assert slots.input_schema["properties"]["mode"]["enum"] == ["all", "any"]
    assert slots.input_schema["properties"]["duration_minutes"]["minimum"] == 5


async def test_check_availability_answers_busy_time_with_freshness(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    erin = await connect(stack, ERIN)
    d = day(7)
    event(stack, ALICE, at(d, "08:00"), at(d, "09:30"))
    event(stack, ALICE, at(d, "13:00"), at(d, "14:00"), transparency="transparent")
    event(stack, ERIN, at(d, "11:00"), at(d, "12:00"))
    [calendar_id] = await sync(stack, alice)  # Erin is never synced: asked live

    result = await call_tool(
        stack,
        "check_availability",
        connection_ids=[alice, erin],
        time_min=z(at(d, "09:00")),
        time_max=z(at(d, "17:00")),
    )
    assert not result.is_error, text_of(result)
    answer = text_of(result)
    assert result.structured_content == answer
    assert answer["complete"] is True
    assert (answer["time_min"], answer["time_max"]) == (z(at(d, "09:00")), z(at(d, "17:00")))
    first, second = answer["connections"]
    assert first["connection_id"] == alice and second["connection_id"] == erin
    assert first["busy"] == [{"start": z(at(d, "09:00")), "end": z(at(d, "09:30"))}]
    assert second["busy"] == [{"start": z(at(d, "11:00")), "end": z(at(d, "12:00"))}]
    assert (first["source"], second["source"]) == ("cache", "google")
    assert first["complete"] is True and first["calendars"][calendar_id]["state"] == "fresh"
    assert (
        timedelta(0) <= utc_now() - datetime.fromisoformat(first["as_of"]) < timedelta(minutes=10)
    )
    assert ALICE not in str(answer) and ERIN not in str(answer)

    assert await audit_of(stack) == [
        ("mcp.check_availability", "ok", alice),
        ("mcp.check_availability", "ok", erin),
    ]


async def test_find_meeting_slots_in_both_modes_with_working_hours_and_buffers(
    stack: Stack,
) -> None:
    alice = await connect(stack, ALICE)
    erin = await connect(stack, ERIN)
    d = day(10)
    event(stack, ALICE, at(d, "09:00"), at(d, "10:00"))
    event(stack, ERIN, at(d, "10:00"), at(d, "11:00"))
    await sync(stack, alice)
    weekday = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[d.weekday()]
    common: dict[str, Any] = {
        "connection_ids": [alice, erin],
        "duration_minutes": 60,
        "time_min": z(at(d, "08:00")),
        "time_max": z(at(d, "14:00")),
        "time_zone": "UTC",
        "working_hours": {weekday: [["09:00", "13:00"]]},
        "granularity_minutes": 60,
    }
    group = await call_tool(stack, "find_meeting_slots", **common, mode="all")
    assert not group.is_error, text_of(group)
    # Local times in the call's zone (UTC here) come next to the UTC ones.
    assert text_of(group)["slots"] == [
        {
            "start": z(at(d, "11:00")),
            "end": z(at(d, "12:00")),
            "start_local": at(d, "11:00").isoformat(),
            "end_local": at(d, "12:00").isoformat(),
            "connection_ids": [alice, erin],
        },
        {
            "start": z(at(d, "12:00")),
            "end": z(at(d, "13:00")),
            "start_local": at(d, "12:00").isoformat(),
            "end_local": at(d, "13:00").isoformat(),
            "connection_ids": [alice, erin],
        },
    ]
    assert set(text_of(group)["as_of"]) == {alice, erin}

    robin = await call_tool(stack, "find_meeting_slots", **common, mode="any", limit=3)
    assert [(s["start"], s["connection_ids"]) for s in text_of(robin)["slots"]] == [
        (z(at(d, "09:00")), [erin]),
        (z(at(d, "10:00")), [alice]),
        (z(at(d, "11:00")), [alice, erin]),
    ]

    # 30 minutes kept free around each slot: 11:00 touches Erin's meeting, 12:00 ends at the
    # working day's end, which is fine: only busy time needs the buffer.
    buffered = await call_tool(
        stack,
        "find_meeting_slots",
        **{**common, "granularity_minutes": 30},
        mode="all",
        buffer_minutes=30,
    )
    assert [s["start"] for s in text_of(buffered)["slots"]] == [
        z(at(d, "11:30")),
        z(at(d, "12:00")),
    ]
    outcomes = {(a, o) for a, o, _ in await audit_of(stack)}
    assert outcomes == {("mcp.find_meeting_slots", "ok")}


async def test_an_integration_needing_reauth_says_ask_the_user_to_reconnect(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    erin = await connect(stack, ERIN)
    await stack.app[INTEGRATIONS_KEY].mark_needs_reauth(alice, reason="invalid_grant", at=utc_now())
    d = day(7)
    window = {"time_min": z(at(d, "09:00")), "time_max": z(at(d, "17:00"))}
    for tool, extra in (
        ("check_availability", {}),
        ("find_meeting_slots", {"mode": "all", "duration_minutes": 30, "time_zone": "UTC"}),
    ):
        result = await call_tool(stack, tool, connection_ids=[erin, alice], **window, **extra)
        error = tool_error(result)
        assert error["code"] == "integration_inactive", error
        assert error["connection_id"] == alice
        assert error["integration_status"] == "needs_reauth"
        assert "reconnect" in error["advice"]
    assert freebusy_calls(stack) == 0
    entries = await audit_of(stack)
    assert ("mcp.check_availability", "integration_inactive", alice) in entries
    assert ("mcp.find_meeting_slots", "integration_inactive", alice) in entries


async def test_a_disconnected_integration_is_inactive_too(stack: Stack) -> None:
    erin = await connect(stack, ERIN)
    async with stack.http.delete(
        stack.url(f"/v1/integrations/{erin}"), headers=stack.auth()
    ) as response:
        assert response.status == 200
    d = day(7)
    result = await call_tool(
        stack,
        "check_availability",
        connection_ids=[erin],
        time_min=z(at(d, "09:00")),
        time_max=z(at(d, "10:00")),
    )
    error = tool_error(result)
    assert (error["code"], error["integration_status"]) == ("integration_inactive", "disconnected")


async def test_rate_limited_when_fresh_data_is_needed_and_google_refuses(stack: Stack) -> None:
    frank = await connect(stack, FRANK)  # never synced: only Google can answer
    rate_limit(stack, FRANK)
    d = day(7)
    result = await call_tool(
        stack,
        "check_availability",
        connection_ids=[frank],
        time_min=z(at(d, "09:00")),
        time_max=z(at(d, "17:00")),
        max_staleness_s=0,
    )
    error = tool_error(result)
    assert error["code"] == "rate_limited"
    assert isinstance(error["retry_after_s"], int) and error["retry_after_s"] >= 1
    assert "retry_after_s" in error["advice"]
    assert await audit_of(stack) == [("mcp.check_availability", "rate_limited", frank)]
    # The fault is spent: the same call now answers.
    again = await call_tool(
        stack,
        "check_availability",
        connection_ids=[frank],
        time_min=z(at(d, "09:00")),
        time_max=z(at(d, "17:00")),
        max_staleness_s=0,
    )
    assert not again.is_error and text_of(again)["complete"] is True


async def test_incomplete_availability_names_the_unknown_calendars(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    frank = await connect(stack, FRANK)
    d = day(7)
    event(stack, ALICE, at(d, "09:00"), at(d, "10:00"))
    [calendar_id] = await sync(stack, alice)
    event(stack, ALICE, at(d, "12:00"), at(d, "13:00"))  # unknown to the copy
    rate_limit(stack, ALICE)
    rate_limit(stack, FRANK)
    result = await call_tool(
        stack,
        "check_availability",
        connection_ids=[alice, frank],
        time_min=z(at(d, "09:00")),
        time_max=z(at(d, "17:00")),
        max_staleness_s=0,
    )
    error = tool_error(result)
    assert error["code"] == "incomplete_availability", error
    by_connection = {u["connection_id"]: u for u in error["unknown_calendars"]}
    assert by_connection[alice]["calendar_id"] == calendar_id
    assert by_connection[alice]["reason"] == "rate_limited"
    assert by_connection[alice]["stale_copy_as_of"] is not None
    assert by_connection[frank] == {
        "connection_id": frank,
        "calendar_id": None,
        "reason": "rate_limited",
    }
    assert error["retry_after_s"] >= 1
    assert "not" in error["advice"] and "free" in error["advice"]
    # What is known (the stale copy) is still handed over, flagged incomplete.
    [known] = error["known"]
    assert known["connection_id"] == alice and known["complete"] is False
    assert known["busy"] == [{"start": z(at(d, "09:00")), "end": z(at(d, "10:00"))}]
    entries = await audit_of(stack)
    assert ("mcp.check_availability", "incomplete_availability", frank) in entries


async def test_slots_with_an_unknown_person_are_an_error_with_the_safe_slots(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    frank = await connect(stack, FRANK)
    d = day(7)
    await sync(stack, alice)
    rate_limit(stack, FRANK, times=2)
    common: dict[str, Any] = {
        "connection_ids": [alice, frank],
        "duration_minutes": 60,
        "time_min": z(at(d, "09:00")),
        "time_max": z(at(d, "12:00")),
        "time_zone": "UTC",
        "granularity_minutes": 60,
    }
    robin = tool_error(await call_tool(stack, "find_meeting_slots", **common, mode="any"))
    assert robin["code"] == "incomplete_availability"
    assert [u["connection_id"] for u in robin["unknown_calendars"]] == [frank]
    assert [(s["start"], s["connection_ids"]) for s in robin["safe_slots"]] == [
        (z(at(d, h)), [alice]) for h in ("09:00", "10:00", "11:00")
    ]
    group = tool_error(await call_tool(stack, "find_meeting_slots", **common, mode="all"))
    assert group["code"] == "incomplete_availability" and group["safe_slots"] == []


async def test_another_tenants_connection_is_not_found(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    await sync(stack, alice)
    d = day(7)
    window = {"time_min": z(at(d, "09:00")), "time_max": z(at(d, "17:00"))}
    for tool, extra in (
        ("check_availability", {}),
        ("find_meeting_slots", {"mode": "any", "duration_minutes": 30, "time_zone": "UTC"}),
    ):
        result = await call_tool(
            stack, tool, key=stack.other_tenant_key, connection_ids=[alice], **window, **extra
        )
        error = tool_error(result)
        assert error["code"] == "integration_not_found"
        assert error["connection_id"] == alice
        assert "busy" not in str(text_of(result))
    # Audited under the caller's tenant, without the other tenant's integration id.
    assert {(a, o, i) for a, o, i in await audit_of(stack, "globex")} == {
        ("mcp.check_availability", "integration_not_found", None),
        ("mcp.find_meeting_slots", "integration_not_found", None),
    }
    assert await audit_of(stack, "acme") == []


async def test_a_key_without_calendar_read_is_refused(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    narrow = await key_with(stack, "connections:read", "calendar:write")
    d = day(7)
    result = await call_tool(
        stack,
        "check_availability",
        key=narrow,
        connection_ids=[alice],
        time_min=z(at(d, "09:00")),
        time_max=z(at(d, "10:00")),
    )
    error = tool_error(result)
    assert (error["code"], error["scope"]) == ("insufficient_scope", "calendar:read")
    assert freebusy_calls(stack) == 0
    assert await audit_of(stack) == [("mcp.check_availability", "insufficient_scope", None)]


async def test_bad_arguments_name_the_field_and_never_echo_the_value(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    ok: dict[str, Any] = {
        "connection_ids": [alice],
        "mode": "all",
        "duration_minutes": 30,
        "time_min": z(at(d, "09:00")),
        "time_max": z(at(d, "17:00")),
        "time_zone": "UTC",
    }
    bad = [
        ({"time_min": "2026-12-01T09:00:00-secretish"}, "time_min"),
        ({"time_min": "2026-12-01T09:00:00"}, "time_min"),  # no offset
        ({"time_max": z(d + timedelta(days=63))}, "time_max"),
        ({"time_max": z(at(d, "08:00"))}, "time_max"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"working_hours": {"mon": [["17:00", "09:00"]]}}, "working_hours"),
        ({"duration_minutes": 2}, "duration_minutes"),
        ({"mode": "some"}, "mode"),
        ({"connection_ids": [alice, alice]}, "connection_ids[1]"),
        ({"max_staleness_s": 86_401}, "max_staleness_s"),
    ]
    for change, field in bad:
        result = await call_tool(stack, "find_meeting_slots", **{**ok, **change})
        error = tool_error(result)
        assert error["code"] == "invalid_field", (change, error)
        assert error["field"] == field, (change, error)
        assert "secretish" not in str(text_of(result))
        assert "Traceback" not in str(text_of(result))
    assert freebusy_calls(stack) == 0
