"""The MCP server at /mcp, driven by the official MCP client over real HTTP."""

from __future__ import annotations

import pytest

from gateway.apikeys import ApiKeyStore
from gateway.http.appkeys import AUDIT_KEY
from tests.support.mcp_client import mcp_client, text_of, tool_error
from tests.support.stack import ALICE, Stack

EXPECTED_TOOLS = {
    "list_calendar_connections",
    "check_availability",
    "find_meeting_slots",
    "book_meeting",
    "reschedule_meeting",
    "cancel_meeting",
    "list_booked_meetings",
}


async def test_tools_are_listed_with_schemas_and_descriptions(stack: Stack) -> None:
    async with mcp_client(stack.base_url, stack.api_key) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
    assert set(listed) == EXPECTED_TOOLS
    for tool in listed.values():
        assert tool.description and len(tool.description) > 80, tool.name
        assert tool.input_schema["type"] == "object"
        # The internal ToolCall parameter never leaks into what the agent must send.
        assert "call" not in tool.input_schema.get("properties", {})
    connections = listed["list_calendar_connections"]
    user_id = connections.input_schema["properties"]["user_id"]
    assert "person" in user_id["description"]
    assert {"type": "string", "maxLength": 200} in user_id["anyOf"]
    assert "user_id" not in connections.input_schema.get("required", [])
    assert connections.annotations is not None and connections.annotations.read_only_hint


async def test_list_connections_shows_only_this_tenants(stack: Stack) -> None:
    connected = await stack.connect(ALICE, user_id="rep-7")
    async with mcp_client(stack.base_url, stack.api_key) as client:
        result = await client.call_tool("list_calendar_connections", {"user_id": "rep-7"})
        everyone = await client.call_tool("list_calendar_connections", {})
    assert not result.is_error
    [connection] = text_of(result)["connections"]
    assert connection["id"] == connected["integration_id"]
    assert connection["status"] == "active"
    assert connection["capabilities"] == ["availability", "booking"]
    assert result.structured_content == text_of(result)
    assert [c["id"] for c in text_of(everyone)["connections"]] == [connection["id"]]

    async with mcp_client(stack.base_url, stack.other_tenant_key) as client:
        other = await client.call_tool("list_calendar_connections", {})
    assert text_of(other) == {"connections": []}


async def test_a_key_without_the_scope_gets_a_tool_error_and_an_audit_entry(stack: Stack) -> None:
    await stack.connect(ALICE, user_id="rep-7")
    narrow = (await ApiKeyStore(stack.engine).create("acme", ["calendar:read"])).value
    async with mcp_client(stack.base_url, narrow) as client:
        result = await client.call_tool("list_calendar_connections", {})
    error = tool_error(result)
    assert error["code"] == "insufficient_scope"
    assert error["scope"] == "connections:read"
    assert "operator" in error["advice"]
    async with stack.http.get(stack.url("/v1/integrations"), headers=stack.auth()) as response:
        integration_id = (await response.json())["integrations"][0]["id"]
    entries = await stack.app[AUDIT_KEY].entries(tenant_id="acme")
    assert any(
        e.action == "mcp.list_calendar_connections" and e.outcome == "insufficient_scope"
        for e in entries
    ), [(e.action, e.outcome) for e in entries]
    assert integration_id


@pytest.mark.parametrize("key", [None, "cgw_000000000000000000000000_" + "A" * 43, "nonsense"])
async def test_without_a_valid_api_key_mcp_answers_401_problem(
    stack: Stack, key: str | None
) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with stack.http.post(
        stack.url("/mcp"),
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={**headers, "Accept": "application/json, text/event-stream"},
    ) as response:
        assert response.status == 401
        assert response.content_type == "application/problem+json"
        assert (await response.json())["code"] == "unauthenticated"


_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
_ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [("Host", "evil.example", 421), ("Origin", "https://evil.example", 403)],
)
async def test_a_foreign_host_or_origin_is_refused(
    stack: Stack, header: str, value: str, status: int
) -> None:
    """DNS-rebinding protection: a page served from another origin cannot drive /mcp."""
    async with stack.http.post(
        stack.url("/mcp"), json=_INIT, headers={**stack.auth(), **_ACCEPT, header: value}
    ) as response:
        assert response.status == status
    async with stack.http.post(
        stack.url("/mcp"), json=_INIT, headers={**stack.auth(), **_ACCEPT}
    ) as response:
        assert response.status == 200
        assert (await response.json())["result"]["serverInfo"]["name"] == "calendar-gateway"
