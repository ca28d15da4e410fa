"""The MCP server object: the gateway's tools, declared once for every transport."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from gateway.mcp import booking_tools, tools

INSTRUCTIONS = """Calendar Gateway: read when people at a business are busy, find meeting slots
and book, move or cancel meetings in their Google Calendar. Start with
list_calendar_connections. Times are RFC 3339 with an offset. Never treat unknown availability
as free: when a tool says `complete: false` or returns incomplete_availability, do not offer
that time. Bookings take an idempotency key: retry a failed or timed-out booking with the SAME
key and it will never be booked twice."""


def build_mcp_server(version: str = "") -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(
        "calendar-gateway", instructions=INSTRUCTIONS, version=version, log_level="WARNING"
    )
    server.add_tool(
        tools.list_calendar_connections,
        name="list_calendar_connections",
        title="List calendar connections",
        description=tools.LIST_CONNECTIONS,
        annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    )
    read_only = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
    server.add_tool(
        tools.check_availability,
        name="check_availability",
        title="Check availability (busy times)",
        description=tools.CHECK_AVAILABILITY,
        annotations=read_only,
    )
    server.add_tool(
        tools.find_meeting_slots,
        name="find_meeting_slots",
        title="Find meeting slots",
        description=tools.FIND_MEETING_SLOTS,
        annotations=read_only,
    )
    server.add_tool(
        booking_tools.list_booked_meetings,
        name="list_booked_meetings",
        title="List booked meetings (with attendees' responses)",
        description=booking_tools.LIST_BOOKED_MEETINGS,
        annotations=read_only,
    )
    server.add_tool(
        booking_tools.book_meeting,
        name="book_meeting",
        title="Book a meeting",
        description=booking_tools.BOOK_MEETING,
        # Not destructive (it only adds), idempotent per key.
        annotations=ToolAnnotations(
            readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=True
        ),
    )
    server.add_tool(
        booking_tools.reschedule_meeting,
        name="reschedule_meeting",
        title="Reschedule a meeting",
        description=booking_tools.RESCHEDULE_MEETING,
        annotations=ToolAnnotations(
            readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=True
        ),
    )
    server.add_tool(
        booking_tools.cancel_meeting,
        name="cancel_meeting",
        title="Cancel a meeting",
        description=booking_tools.CANCEL_MEETING,
        annotations=ToolAnnotations(
            readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=True
        ),
    )
    return server
