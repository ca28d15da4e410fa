"""What availability questions may ask: the limits of their fields and the slot finder's query
built from them. Shared by the REST routes (gateway.http.availability_routes) and the MCP tools
(gateway.mcp.tools), so both refuse the same input with the same 422 problems."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import Field

from gateway.availability.intervals import Interval
from gateway.availability.service import MAX_INTEGRATIONS
from gateway.availability.slots import SlotQuery, WorkingHours
from gateway.errors import InvalidInput

IntegrationId = Annotated[str, Field(min_length=1, max_length=64)]
IntegrationIds = Annotated[list[IntegrationId], Field(min_length=1, max_length=MAX_INTEGRATIONS)]
StalenessS = Annotated[int, Field(ge=0, le=86_400)]

SlotMode = Literal["all", "any"]
DurationMinutes = Annotated[int, Field(ge=5, le=24 * 60)]
TimeZoneName = Annotated[str, Field(min_length=1, max_length=64)]
WorkingHoursSpec = dict[str, list[list[str]]]
BufferMinutes = Annotated[int, Field(ge=0, le=12 * 60)]
GranularityMinutes = Annotated[int, Field(ge=5, le=24 * 60)]
NoticeMinutes = Annotated[int, Field(ge=0, le=30 * 24 * 60)]
SlotLimit = Annotated[int, Field(ge=1, le=1000)]


def require_unique(ids: Sequence[str], field: str = "integration_ids") -> None:
    """422 naming the first id given twice."""
    seen: set[str] = set()
    for n, value in enumerate(ids):
        if value in seen:
            raise InvalidInput(
                f"{field}[{n}]: given more than once",
                code="invalid_field",
                extra={"field": f"{field}[{n}]"},
            )
        seen.add(value)


def _load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise InvalidInput(
            "time_zone: unknown time zone; use an IANA name such as Europe/Berlin",
            code="invalid_field",
            extra={"field": "time_zone"},
        ) from None


def _working_hours(spec: dict[str, list[list[str]]] | None) -> WorkingHours | None:
    if spec is None:
        return None
    try:
        return WorkingHours.parse(spec)
    except ValueError as exc:
        raise InvalidInput(
            str(exc), code="invalid_field", extra={"field": "working_hours"}
        ) from None


async def slot_query(
    window: Interval,
    *,
    mode: SlotMode,
    duration_minutes: int,
    time_zone: str,
    working_hours: dict[str, list[list[str]]] | None,
    buffer_minutes: int,
    granularity_minutes: int,
    min_notice_minutes: int,
    limit: int,
) -> SlotQuery:
    """The slot finder's query from a request's fields (422 for an unknown zone or bad
    working hours)."""
    # Reading a zone's rules is file I/O the first time: off the event loop.
    tz = await asyncio.to_thread(_load_zone, time_zone)
    return SlotQuery(
        window=window,
        duration=timedelta(minutes=duration_minutes),
        time_zone=tz,
        mode=mode,
        working_hours=_working_hours(working_hours),
        buffer=timedelta(minutes=buffer_minutes),
        granularity=timedelta(minutes=granularity_minutes),
        min_notice=timedelta(minutes=min_notice_minutes),
        limit=limit,
    )
