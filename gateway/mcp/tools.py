"""The calendar tools: thin adapters from MCP arguments to the same services the REST API uses.

Each tool body takes the `ToolCall` (see gateway.mcp.runtime) and returns plain JSON data.
Descriptions are written for a language model: what the tool is for, units, time formats and
what to do on each error. Every time is RFC 3339 with an offset (e.g. 2026-11-23T09:00:00Z or
2026-11-23T10:00:00+01:00).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from gateway.apikeys import utc_now
from gateway.http.appkeys import ENGINE_KEY, INTEGRATIONS_KEY
from gateway.mcp.context import ToolCall
from gateway.mcp.runtime import gateway_tool
from gateway.sync.store import SyncStore


def _ts(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


LIST_CONNECTIONS = """List the Google Calendar connections of one person (or of every person when
user_id is omitted) for this API key's business. Use it first: the other tools take a
connection `id` from here. Each connection says its `status` (only `active` connections can be
used; `needs_reauth` means: ask the person to reconnect their calendar), its `capabilities`
(availability = can read busy time, booking = can book) and, per synced calendar, how fresh the
local copy is (`as_of`, RFC 3339, and `push`: active means changes arrive within seconds)."""


@gateway_tool(scope="connections:read", action="mcp.list_calendar_connections")
async def list_calendar_connections(
    call: ToolCall,
    user_id: Annotated[
        str | None,
        Field(
            description="Your own id for the person (as used when connecting); omit for all.",
            max_length=200,
        ),
    ] = None,
) -> dict[str, Any]:
    found = await call.app[INTEGRATIONS_KEY].list_for_user(call.principal.tenant_id, user_id)
    freshness = await SyncStore(call.app[ENGINE_KEY]).freshness([i.id for i in found], utc_now())
    return {
        "connections": [
            {
                "id": i.id,
                "user_id": i.user_id,
                "status": i.status.value,
                "capabilities": [c.value for c in i.capabilities],
                "calendars": [
                    {
                        "id": f.calendar_id,
                        "state": f.state,
                        "as_of": _ts(f.as_of),
                        "push": "active" if f.push_active else "polling",
                    }
                    for f in freshness.get(i.id, [])
                ],
            }
            for i in found
        ]
    }
