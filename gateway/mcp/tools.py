"""The calendar tools: thin adapters from MCP arguments to the same services the REST API uses.

Each tool body takes the `ToolCall` (see gateway.mcp.runtime) and returns plain JSON data.
Descriptions are written for a language model: what the tool is for, units, time formats and
what to do on each error. Every time is RFC 3339 with an offset (e.g. 2026-11-23T09:00:00Z or
2026-11-23T10:00:00+01:00).
"""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import Field

from gateway.availability.queries import (
    BufferMinutes,
    DurationMinutes,
    GranularityMinutes,
    IntegrationIds,
    NoticeMinutes,
    SlotLimit,
    SlotMode,
    StalenessS,
    TimeZoneName,
    WorkingHoursSpec,
    require_unique,
    slot_query,
)
from gateway.availability.service import (
    MAX_INTEGRATIONS,
    MAX_WINDOW,
    FreeBusy,
    parse_window,
)
from gateway.clock import rfc3339, utc_now
from gateway.connections.model import Integration
from gateway.errors import ProblemError
from gateway.google.errors import GoogleError
from gateway.http.appkeys import ENGINE_KEY, INTEGRATIONS_KEY, SETTINGS_KEY
from gateway.http.availability_json import render_freebusy, render_slots
from gateway.http.lookup import (
    DEFAULT_RETRY_AFTER_S,
    availability_service,
    google_problem,
    require_usable,
    staleness,
    tenant_integration,
)
from gateway.http.validation import Rfc3339
from gateway.mcp.context import ToolCall
from gateway.mcp.errors import ToolFailure
from gateway.mcp.local_times import load_zone, with_local
from gateway.mcp.runtime import gateway_tool
from gateway.sync.store import SyncStore

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
    freshness = await SyncStore(call.app[ENGINE_KEY]).freshness(
        [i.id for i in found], utc_now(), push_trust_s=call.app[SETTINGS_KEY].push_trust_s
    )
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
                        "as_of": rfc3339(f.as_of),
                        "push": "active" if f.push_active else "polling",
                    }
                    for f in freshness.get(i.id, [])
                ],
            }
            for i in found
        ]
    }


# -- availability -----------------------------------------------------------------------------

ConnectionIds = Annotated[
    IntegrationIds,
    Field(
        description=(
            "Connection ids (`id` from list_calendar_connections), 1 to "
            f"{MAX_INTEGRATIONS}, each once."
        )
    ),
]
TimeMin = Annotated[
    Rfc3339,
    Field(
        description=(
            "Start of the window, RFC 3339 with an offset, e.g. 2026-11-23T09:00:00+01:00 "
            "or 2026-11-23T08:00:00Z."
        )
    ),
]
TimeMax = Annotated[
    Rfc3339,
    Field(
        description=(
            "End of the window (exclusive), RFC 3339 with an offset; after time_min and at "
            f"most {MAX_WINDOW.days} days later."
        )
    ),
]
MaxStalenessS = Annotated[
    StalenessS | None,
    Field(
        description=(
            "Seconds: how old the gateway's synced copy may be before Google is asked live "
            "(0 = always ask Google; omit for the gateway's default, about 10 minutes). Use 0 "
            "right before booking."
        )
    ),
]

CHECK_AVAILABILITY = f"""When are these people busy? Returns the busy intervals of one or more
calendar connections in a time window, so you can see when a meeting is possible or explain why
not. Use find_meeting_slots instead when you want free slots of a given length.

Arguments: connection_ids (from list_calendar_connections), time_min and time_max (RFC 3339
with an offset, e.g. 2026-11-23T09:00:00+01:00; at most {MAX_WINDOW.days} days apart),
optional max_staleness_s (seconds).

Result: per connection, `busy` ([{{start, end}}], merged, sorted, clipped to the window, in UTC
RFC 3339 with `Z`), `complete` (true: every calendar was read, so time outside `busy` is free),
`as_of` (RFC 3339: when the answer was known to match Google) and `source` (cache or google).
A successful result is always complete.

Errors (isError, JSON {{"error": {{"code", "message", "advice", ...}}}}):
- incomplete_availability: some calendars could not be read (Google failing, no fresh copy).
  `unknown_calendars` says which connection/calendar and why; `known` holds what was read.
  Never treat that time as free: retry after `retry_after_s` seconds or ask the person.
- integration_inactive (with `connection_id`, `integration_status`): ask the user to
  reconnect their calendar (needs_reauth) or stop using it (disconnected).
- rate_limited / google_unavailable: wait `retry_after_s` seconds, then call again.
- integration_not_found: the id is wrong; call list_calendar_connections.
- invalid_field (with `field`): fix that argument."""


def _connection_view(rendered: dict[str, Any]) -> dict[str, Any]:
    """A REST free/busy object, named in the MCP tools' vocabulary (connection, not
    integration); the window is stated once at the top."""
    return {
        "connection_id": rendered["integration_id"],
        **{k: rendered[k] for k in ("busy", "complete", "as_of", "source", "calendars")},
    }


async def _usable_connections(call: ToolCall, ids: list[str]) -> list[Integration]:
    """The caller's integrations `ids`, in order: integration_not_found (another tenant's
    too) or integration_inactive with the `connection_id` otherwise."""
    require_unique(ids, "connection_ids")
    found: list[Integration] = []
    for connection_id in ids:
        try:
            integration = await tenant_integration(
                call.app, call.principal.tenant_id, connection_id
            )
            call.integrations.append(integration.id)
            found.append(require_usable(integration))
        except ProblemError as exc:
            exc.extra["connection_id"] = connection_id
            raise
    return found


def _retry_after_s(problem: ProblemError) -> int:
    value = problem.extra.get("retry_after_s")
    return value if isinstance(value, int) else DEFAULT_RETRY_AFTER_S


class _Unknown:
    """Collects what could not be read, for one incomplete_availability error."""

    def __init__(self) -> None:
        self.calendars: list[dict[str, Any]] = []
        self.retry_after_s = 0

    def connection_failed(self, connection_id: str, exc: GoogleError) -> None:
        problem = google_problem(exc)
        # calendar_id null: none of the connection's calendars could be read.
        self.calendars.append(
            {"connection_id": connection_id, "calendar_id": None, "reason": problem.code}
        )
        self.retry_after_s = max(self.retry_after_s, _retry_after_s(problem))

    def add(self, answer: FreeBusy) -> None:
        for c in answer.calendars:
            if c.state == "fresh":
                continue
            self.calendars.append(
                {
                    "connection_id": answer.integration_id,
                    "calendar_id": c.calendar_id,
                    "reason": c.error or "unknown",
                    # A stale copy's busy time is in `known`; it may miss newer meetings.
                    "stale_copy_as_of": rfc3339(c.as_of) if c.state == "stale" else None,
                }
            )
            self.retry_after_s = max(self.retry_after_s, DEFAULT_RETRY_AFTER_S)

    def failure(self, message: str, **extra: Any) -> ToolFailure:
        return ToolFailure(
            "incomplete_availability",
            message,
            unknown_calendars=self.calendars,
            retry_after_s=self.retry_after_s,
            **extra,
        )


@gateway_tool(scope="calendar:read", action="mcp.check_availability")
async def check_availability(
    call: ToolCall,
    connection_ids: ConnectionIds,
    time_min: TimeMin,
    time_max: TimeMax,
    max_staleness_s: MaxStalenessS = None,
) -> dict[str, Any]:
    window = parse_window(time_min, time_max)
    max_staleness = staleness(call.app, max_staleness_s)
    integrations = await _usable_connections(call, connection_ids)
    service = availability_service(call.app)
    results = await service.freebusy_each(integrations, window, max_staleness=max_staleness)
    failures = [r for r in results if isinstance(r, GoogleError)]
    if len(failures) == len(results):
        raise failures[0]  # nothing known at all: the Google failure itself (rate_limited, ...)
    unknown = _Unknown()
    known: list[dict[str, Any]] = []
    for integration, result in zip(integrations, results, strict=True):
        if isinstance(result, FreeBusy):
            known.append(_connection_view(render_freebusy(result)))
            unknown.add(result)
        elif isinstance(result, GoogleError):
            unknown.connection_failed(integration.id, result)
        else:
            raise result  # inactive meanwhile: the integration's own error
    if unknown.calendars:
        raise unknown.failure(
            "availability is unknown for some calendars; that time is not known to be free",
            known=known,
        )
    return {
        "time_min": rfc3339(window.start),
        "time_max": rfc3339(window.end),
        "complete": True,
        "connections": known,
    }


FIND_MEETING_SLOTS = f"""Find free meeting slots of a given length for one or more people
(calendar connections), ready to offer to a lead and then book with book_meeting.

Modes: `all` = everyone must be free (a meeting with all of them); `any` = at least one is free
(round robin: each slot lists which connection_ids are free, pick one of them to book on).

Arguments: connection_ids, mode, duration_minutes (5-1440), time_min and time_max (the search
window, RFC 3339 with an offset such as 2026-11-23T00:00:00+01:00; at most {MAX_WINDOW.days}
days apart), time_zone (IANA name such as Europe/Berlin: working hours and the slot grid are
local to it, also across daylight saving changes), optional working_hours
({{"mon": [["09:00", "12:00"], ["13:00", "17:00"]], ...}}, local times; a day left out is not
worked; omit for round the clock), buffer_minutes (free time kept before and after each slot),
granularity_minutes (slots start every N minutes from local midnight; default 15),
min_notice_minutes (no slot starting sooner than this from now), limit (most slots returned,
default 20, earliest first), max_staleness_s (seconds; 0 = ask Google live).

Result: `slots` [{{start, end, connection_ids}}] in UTC RFC 3339 (`Z`), earliest first; all of
it is known to be free. An empty list means there is no such slot in the window.

Errors (isError, JSON {{"error": {{"code", "message", "advice", ...}}}}):
- incomplete_availability: some people's calendars could not be read, so slots with them are
  unknown (`unknown_calendars` says whose and why). `safe_slots` lists slots that are known
  free anyway (it may miss some); otherwise retry after `retry_after_s` seconds.
- integration_inactive (with `connection_id`): ask the user to reconnect their calendar.
- rate_limited / google_unavailable: wait `retry_after_s` seconds, then call again.
- integration_not_found: call list_calendar_connections for valid ids.
- invalid_field (with `field`): fix that argument (e.g. an unknown time zone)."""


def _slot_view(rendered: dict[str, Any], zone: ZoneInfo) -> list[dict[str, Any]]:
    return [
        with_local(
            {"start": s["start"], "end": s["end"], "connection_ids": s["integration_ids"]}, zone
        )
        for s in rendered["slots"]
    ]


@gateway_tool(scope="calendar:read", action="mcp.find_meeting_slots")
async def find_meeting_slots(
    call: ToolCall,
    connection_ids: ConnectionIds,
    mode: Annotated[
        SlotMode,
        Field(description="all: everyone free (group meeting); any: anyone free (round robin)."),
    ],
    duration_minutes: Annotated[DurationMinutes, Field(description="Meeting length in minutes.")],
    time_min: TimeMin,
    time_max: TimeMax,
    time_zone: Annotated[
        TimeZoneName,
        Field(description="IANA time zone of working hours and the slot grid, e.g. Europe/Berlin."),
    ],
    working_hours: Annotated[
        WorkingHoursSpec | None,
        Field(
            description=(
                'Local working periods per weekday (mon..sun), e.g. {"mon": [["09:00", '
                '"17:00"]]}; a missing day is not worked; omit for no restriction.'
            )
        ),
    ] = None,
    buffer_minutes: Annotated[
        BufferMinutes, Field(description="Minutes kept free before and after each slot.")
    ] = 0,
    granularity_minutes: Annotated[
        GranularityMinutes,
        Field(description="Slots start every this many minutes from local midnight."),
    ] = 15,
    min_notice_minutes: Annotated[
        NoticeMinutes, Field(description="No slot starts sooner than this many minutes from now.")
    ] = 0,
    limit: Annotated[SlotLimit, Field(description="At most this many slots, earliest first.")] = 20,
    max_staleness_s: MaxStalenessS = None,
) -> dict[str, Any]:
    window = parse_window(time_min, time_max)
    max_staleness = staleness(call.app, max_staleness_s)
    query = await slot_query(
        window,
        mode=mode,
        duration_minutes=duration_minutes,
        time_zone=time_zone,
        working_hours=working_hours,
        buffer_minutes=buffer_minutes,
        granularity_minutes=granularity_minutes,
        min_notice_minutes=min_notice_minutes,
        limit=limit,
    )
    integrations = await _usable_connections(call, connection_ids)
    service = availability_service(call.app)
    result = await service.slots(integrations, query, max_staleness=max_staleness)
    rendered = render_slots(result)
    zone = await load_zone(time_zone)
    slots = _slot_view(rendered, zone or ZoneInfo("UTC"))
    if not result.answer.complete:
        unknown = _Unknown()
        for integration_id, outcome in result.availability.items():
            if isinstance(outcome, FreeBusy):
                unknown.add(outcome)
            else:
                unknown.connection_failed(integration_id, outcome)
        raise unknown.failure(
            "availability is unknown for some people; slots with them are not known to be free",
            safe_slots=slots,
        )
    return {
        "slots": slots,
        "mode": mode,
        "time_zone": time_zone,
        "time_min": rfc3339(window.start),
        "time_max": rfc3339(window.end),
        "as_of": {
            integration_id: rendered["integrations"][integration_id]["as_of"]
            for integration_id in result.availability
        },
    }
