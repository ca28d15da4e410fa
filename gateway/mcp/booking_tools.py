"""The booking tools: book, move and cancel meetings through BookingService (gateway.booking),
the same service as POST/PATCH/DELETE /v1/integrations/{id}/events, with the same scope
(calendar:write). Descriptions are written for a language model; every time is RFC 3339 with an
offset.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import Field

from gateway.availability.service import parse_window
from gateway.booking.request import parse_booking, parse_change
from gateway.booking.service import BookedEvent, BookingService
from gateway.connections.model import Integration
from gateway.errors import ProblemError
from gateway.http.appkeys import BOOKING_KEY, SYNC_KEY
from gateway.http.lookup import google_service, require_usable, tenant_integration
from gateway.http.validation import PrintableText, Rfc3339
from gateway.mcp.context import ToolCall
from gateway.mcp.local_times import load_zone, with_local
from gateway.mcp.runtime import gateway_tool

ConnectionId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="The connection to book on (`id` from list_calendar_connections).",
    ),
]
EventId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        description="The meeting's `id`, as book_meeting returned it.",
    ),
]
Start = Annotated[
    Rfc3339,
    Field(description="Start, RFC 3339 with an offset, e.g. 2026-11-23T10:00:00+01:00."),
]
End = Annotated[
    Rfc3339,
    Field(description="End (after start), RFC 3339 with an offset."),
]
TimeZone = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=64,
        description=(
            "IANA time zone the event is shown in, e.g. Europe/Berlin (optional; the instant "
            "is given by start/end either way)."
        ),
    ),
]
SendUpdates = Annotated[
    Literal["all", "none"],
    Field(description="all: Google emails the attendees about it; none: no email (default)."),
]

_ERRORS_COMMON = """- integration_inactive: ask the user to reconnect their calendar.
- rate_limited / google_unavailable: wait `retry_after_s` seconds, then retry the SAME call
  (for book_meeting with the SAME idempotency_key: it is never booked twice).
- insufficient_google_scope: the user granted availability only; ask them to reconnect and
  allow booking.
- integration_not_found: call list_calendar_connections for valid ids.
- invalid_field (with `field`): fix that argument."""

BOOK_MEETING = f"""Book a meeting in a person's Google Calendar (the connection), e.g. a slot
from find_meeting_slots the lead accepted. Safe to retry: send a unique `idempotency_key` per
meeting (e.g. a UUID you generate once) and, after a timeout or error, retry with the SAME key
and the same arguments: the meeting is created at most once (`replayed: true` says it already
was). A new meeting needs a new key.

By default (`if_free` true) the slot is checked against the calendar right before booking and
nothing is booked when it is busy. Times are RFC 3339 with an offset, e.g.
2026-11-23T10:00:00+01:00; the answer is in UTC (`Z`).

Times come in UTC (`start`, `end`) and in `time_zone` (the one given, else the connection's:
`start_local`, `end_local`, with the offset): show people the local ones.

Result: `event` (`id` for reschedule_meeting and cancel_meeting, `start`, `end`, `etag`,
`status`, `html_link`), `connection_id`, `replayed`.

Errors (isError, JSON {{"error": {{"code", "message", "advice", ...}}}}):
- slot_busy (with `conflicts`: the busy intervals): nothing was booked; pick another slot
  (find_meeting_slots) and offer it.
- availability_unknown (with `retry_after_s`): the calendar could not be read, so nothing was
  booked; retry later with the same key.
- idempotency_key_reused: this key was used for a different meeting; use a new key.
{_ERRORS_COMMON}"""

RESCHEDULE_MEETING = f"""Move a meeting booked with book_meeting to a new time (both start and
end, RFC 3339 with an offset, e.g. 2026-11-24T15:00:00+01:00). Only meetings this gateway
booked can be moved. By default (`if_free` true) the new time is checked against the calendar
right before moving, ignoring the meeting itself; `if_free` false moves without looking.
Optional `etag` (from the booking or the last change) moves it only if nobody changed it since.

Result: `event` with its new `start`, `end` and `etag`.

Errors (isError, JSON {{"error": {{"code", "message", "advice", ...}}}}):
- slot_busy (with `conflicts`: the busy intervals): nothing was moved; pick another time
  (find_meeting_slots) and offer it.
- availability_unknown (with `retry_after_s`): the calendar could not be read, so nothing was
  moved; retry later.
- event_not_found: no meeting booked by this gateway has that id on this connection.
- etag_mismatch: the meeting changed since; retry without `etag` to move it anyway.
{_ERRORS_COMMON}"""

CANCEL_MEETING = f"""Cancel (delete) a meeting booked with book_meeting. Only meetings this
gateway booked can be cancelled; cancelling one again is no error. With send_updates all,
Google emails the attendees the cancellation.

Result: `cancelled: true` and the `event_id`.

Errors (isError, JSON {{"error": {{"code", "message", "advice", ...}}}}):
- event_not_found: no meeting booked by this gateway has that id on this connection.
{_ERRORS_COMMON}"""


def _service(app: web.Application) -> BookingService:
    return google_service(app, BOOKING_KEY)


async def _connection(call: ToolCall, connection_id: str) -> Integration:
    """The caller's active integration: integration_not_found (another tenant's too) or
    integration_inactive, naming `connection_id` (the service checks both again, and whether
    the user granted booking)."""
    try:
        integration = await tenant_integration(call.app, call.principal.tenant_id, connection_id)
        call.integrations.append(integration.id)
        return require_usable(integration)
    except ProblemError as exc:
        exc.extra["connection_id"] = connection_id
        raise


async def _zone(call: ToolCall, integration: Integration, named: str | None) -> ZoneInfo:
    """The zone local times are given in: the one the call named, else the connection's
    (its synced primary calendar's), else UTC."""
    if named is not None and (zone := await load_zone(named)) is not None:
        return zone
    sync = call.app.get(SYNC_KEY)
    calendars = await sync.store.calendars_of(integration.id) if sync is not None else []
    for calendar in calendars:
        if (zone := await load_zone(calendar.time_zone)) is not None:
            return zone
    return ZoneInfo("UTC")


def _event(connection_id: str, event: BookedEvent, zone: ZoneInfo, **extra: Any) -> dict[str, Any]:
    return {
        "connection_id": connection_id,
        "event": with_local(event.to_json(), zone),
        "time_zone": zone.key,
        **extra,
    }


@gateway_tool(scope="calendar:write", action="mcp.book_meeting")
async def book_meeting(
    call: ToolCall,
    connection_id: ConnectionId,
    idempotency_key: Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            pattern=r"^[\x21-\x7e]+$",
            description=(
                "REQUIRED, unique per meeting (e.g. a UUID), 1-200 printable ASCII characters "
                "without spaces. Retry a failed or timed-out call with the same key."
            ),
        ),
    ],
    summary: Annotated[
        PrintableText, Field(min_length=1, max_length=1024, description="The meeting's title.")
    ],
    start: Start,
    end: End,
    time_zone: TimeZone = None,
    description: Annotated[
        str | None, Field(max_length=8192, description="Agenda or notes (optional).")
    ] = None,
    location: Annotated[
        str | None, Field(max_length=1024, description="Place or video link (optional).")
    ] = None,
    attendees: Annotated[
        list[Annotated[str, Field(min_length=3, max_length=320)]] | None,
        Field(max_length=100, description="Guests' email addresses (optional)."),
    ] = None,
    send_updates: SendUpdates = "none",
    if_free: Annotated[
        bool,
        Field(
            description=(
                "true (default): book only if the slot is free right now. false books even "
                "over other meetings: only when the user asked for exactly that."
            )
        ),
    ] = True,
    calendar_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=64,
            description="A calendar of the connection (cal_...); omit for the primary.",
        ),
    ] = None,
) -> dict[str, Any]:
    request = parse_booking(
        summary=summary,
        start=start,
        end=end,
        calendar_id=calendar_id,
        description=description,
        location=location,
        time_zone=time_zone,
        attendees=attendees,
        send_updates=send_updates,
        if_free=if_free,
    )
    integration = await _connection(call, connection_id)
    result = await _service(call.app).book(
        integration, call.principal.tenant_id, idempotency_key, request
    )
    zone = await _zone(call, integration, time_zone)
    return _event(integration.id, result.event, zone, replayed=result.replayed)


@gateway_tool(scope="calendar:write", action="mcp.reschedule_meeting")
async def reschedule_meeting(
    call: ToolCall,
    connection_id: ConnectionId,
    event_id: EventId,
    start: Start,
    end: End,
    time_zone: TimeZone = None,
    etag: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            description="Move only if the meeting still has this etag (optional).",
        ),
    ] = None,
    send_updates: SendUpdates = "none",
    if_free: Annotated[
        bool,
        Field(
            description="Check that the new time is free first (default true); false moves "
            "without looking."
        ),
    ] = True,
) -> dict[str, Any]:
    change = parse_change(start=start, end=end, time_zone=time_zone, send_updates=send_updates)
    integration = await _connection(call, connection_id)
    event = await _service(call.app).update(
        integration, call.principal.tenant_id, event_id, change, if_match=etag, if_free=if_free
    )
    return _event(integration.id, event, await _zone(call, integration, time_zone))


@gateway_tool(scope="calendar:write", action="mcp.cancel_meeting")
async def cancel_meeting(
    call: ToolCall,
    connection_id: ConnectionId,
    event_id: EventId,
    send_updates: SendUpdates = "none",
) -> dict[str, Any]:
    integration = await _connection(call, connection_id)
    await _service(call.app).cancel(
        integration, call.principal.tenant_id, event_id, send_updates=send_updates
    )
    return {"connection_id": integration.id, "event_id": event_id, "cancelled": True}


LIST_BOOKED_MEETINGS = f"""List the meetings this gateway booked on one connection between
time_min and time_max (RFC 3339 with an offset), as Google has them now, with each attendee's
`response_status` (accepted, declined, tentative, needsAction): ask this to learn whether the
lead accepted. Only meetings booked through this gateway are listed, never the user's own.

Result: `meetings` (each with `id`, `start`, `end`, `start_local`, `end_local`, `summary`,
`attendees`, `etag`, ...), `time_zone` (the one given, else the connection's).

Errors (isError, JSON {{"error": {{"code", "message", "advice", ...}}}}):
{_ERRORS_COMMON}"""


@gateway_tool(scope="calendar:read", action="mcp.list_booked_meetings")
async def list_booked_meetings(
    call: ToolCall,
    connection_id: ConnectionId,
    time_min: Annotated[Rfc3339, Field(description="Window start, RFC 3339 with an offset.")],
    time_max: Annotated[Rfc3339, Field(description="Window end, RFC 3339 with an offset.")],
    time_zone: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=64,
            description="IANA zone for start_local/end_local (default: the connection's).",
        ),
    ] = None,
) -> dict[str, Any]:
    window = parse_window(time_min, time_max)
    integration = await _connection(call, connection_id)
    details = await _service(call.app).list_events(integration, call.principal.tenant_id, window)
    zone = await _zone(call, integration, time_zone)
    return {
        "connection_id": integration.id,
        "time_zone": zone.key,
        "meetings": [with_local(d.to_json(), zone) for d in details],
    }
