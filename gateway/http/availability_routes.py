"""HTTP routes of availability: free/busy and slots (the agent's read side of issue 6).

    GET  /v1/integrations/{integration_id}/freebusy   calendar:read   one integration
    POST /v1/freebusy                                 calendar:read   several, one result each
    POST /v1/slots                                    calendar:read   meeting slots, all/any

Handlers parse (gateway.http.validation), call AvailabilityService (gateway.availability.service,
which owns cache-or-Google and the honesty rules) and render. Another tenant's integration is
404; an integration that is not active is 409 integration_inactive (per item in the batch);
a Google failure with no honest answer left is lookup.google_problem (503 + Retry-After when
rate limited).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web
from pydantic import Field

from gateway.availability.intervals import Interval
from gateway.availability.service import (
    MAX_INTEGRATIONS,
    AvailabilityService,
    FreeBusy,
    SlotsResult,
    parse_staleness,
    parse_window,
    rfc3339,
)
from gateway.availability.slots import SlotQuery, WorkingHours
from gateway.availability.spans import Span, rfc3339_us
from gateway.connections.model import Integration
from gateway.errors import GatewayError, InvalidInput, NotFound, ProblemError
from gateway.google.calendar import CalendarClient
from gateway.google.errors import GoogleError
from gateway.http.appkeys import HTTP_KEY, INDEX_KEY, LIVE_LIMITS_KEY, SETTINGS_KEY
from gateway.http.auth import principal, requires_scope
from gateway.http.json_body import json_response
from gateway.http.lookup import INTEGRATION_ID, google_problem, require_usable
from gateway.http.problems import PROBLEM_TYPE_BASE
from gateway.http.sync_wiring import SYNC_KEY
from gateway.http.token_wiring import TOKENS_KEY
from gateway.http.validation import Rfc3339, StrictBody, parse_query, read_json
from gateway.livecalls import SharedAnswers

AVAILABILITY_KEY = web.AppKey("availability", AvailabilityService)

IntegrationId = Annotated[str, Field(min_length=1, max_length=64)]
IntegrationIds = Annotated[list[IntegrationId], Field(min_length=1, max_length=MAX_INTEGRATIONS)]
StalenessS = Annotated[int, Field(ge=0, le=86_400)]


class FreeBusyQuery(StrictBody):
    time_min: Rfc3339
    time_max: Rfc3339
    max_staleness_s: StalenessS | None = None


class FreeBusyBatch(StrictBody):
    integration_ids: IntegrationIds
    time_min: Rfc3339
    time_max: Rfc3339
    max_staleness_s: StalenessS | None = None


# The slot finder's limits, named so the MCP tool (gateway.mcp.tools) declares the same ones.
SlotMode = Literal["all", "any"]
DurationMinutes = Annotated[int, Field(ge=5, le=24 * 60)]
TimeZoneName = Annotated[str, Field(min_length=1, max_length=64)]
WorkingHoursSpec = dict[str, list[list[str]]]
BufferMinutes = Annotated[int, Field(ge=0, le=12 * 60)]
GranularityMinutes = Annotated[int, Field(ge=5, le=24 * 60)]
NoticeMinutes = Annotated[int, Field(ge=0, le=30 * 24 * 60)]
SlotLimit = Annotated[int, Field(ge=1, le=1000)]


class SlotsRequest(StrictBody):
    integration_ids: IntegrationIds
    mode: SlotMode
    duration_minutes: DurationMinutes
    time_min: Rfc3339
    time_max: Rfc3339
    time_zone: TimeZoneName
    working_hours: WorkingHoursSpec | None = None
    buffer_minutes: BufferMinutes = 0
    granularity_minutes: GranularityMinutes = 15
    min_notice_minutes: NoticeMinutes = 0
    limit: SlotLimit = 100
    max_staleness_s: StalenessS | None = None


# -- rendering --------------------------------------------------------------------------------


def _spans(spans: Sequence[Span]) -> list[dict[str, str]]:
    return [{"start": rfc3339_us(s), "end": rfc3339_us(e)} for s, e in spans]


@functools.lru_cache(maxsize=1 << 15)
def _span_json(start_us: int, end_us: int) -> bytes:
    return orjson.dumps({"start": rfc3339_us(start_us), "end": rfc3339_us(end_us)})


def _spans_json(spans: Sequence[Span]) -> orjson.Fragment:
    """`_spans` already encoded, for orjson to copy into the body. A calendar's blocks come
    back request after request, so each block's JSON is remembered (a bounded cache of a pure
    function): encoding a week's busy list was a third of a warm request's CPU."""
    return orjson.Fragment(b"[" + b",".join(itertools.starmap(_span_json, spans)) + b"]")


def _ts(value: Any) -> str | None:
    return rfc3339(value) if value is not None else None


def _how_known(answer: FreeBusy) -> dict[str, Any]:
    """Where the answer came from, how fresh and complete it is, per calendar."""
    calendars: dict[str, Any] = {}
    for c in answer.calendars:
        entry: dict[str, Any] = {"state": c.state, "as_of": _ts(c.as_of), "source": c.source}
        if c.error is not None:
            entry["error"] = c.error
        calendars[c.calendar_id] = entry
    return {
        "source": answer.source,
        "as_of": _ts(answer.as_of),
        "complete": answer.complete,
        "calendars": calendars,
    }


def render_freebusy(answer: FreeBusy, *, encoded: bool = False) -> dict[str, Any]:
    """The free/busy object of the API. `encoded`: its busy list as an orjson.Fragment, for
    `json_response` only (the MCP tools need plain values)."""
    known = _how_known(answer)
    return {
        "integration_id": answer.integration_id,
        "time_min": rfc3339(answer.window.start),
        "time_max": rfc3339(answer.window.end),
        "busy": _spans_json(answer.busy_us) if encoded else _spans(answer.busy_us),
        "as_of": known["as_of"],
        "source": known["source"],
        "complete": known["complete"],
        "calendars": known["calendars"],
    }


def _as_problem(exc: GatewayError) -> ProblemError:
    if isinstance(exc, ProblemError):
        return exc
    if isinstance(exc, GoogleError):
        return google_problem(exc)
    return ProblemError("the gateway could not answer for this integration", code=exc.code)


def render_problem(exc: ProblemError) -> dict[str, Any]:
    """The problem+json body (gateway.http.problems) of `exc`, for one item of a batch."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + exc.code,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.message,
        "code": exc.code,
    }
    body.update({k: v for k, v in exc.extra.items() if k not in body})
    return body


# -- parsing shared with the MCP tools (gateway.mcp.tools) ------------------------------------


def availability_service(app: web.Application) -> AvailabilityService:
    """The app's AvailabilityService, or 503 google_not_configured."""
    service = app.get(AVAILABILITY_KEY)
    if service is None:
        raise ProblemError(
            "no Google OAuth client is configured on this gateway",
            code="google_not_configured",
            status=503,
            title="Service Unavailable",
        )
    return service


def staleness(app: web.Application, max_staleness_s: int | None) -> timedelta:
    """The caller's `max_staleness_s`, else the configured default (422 out of range)."""
    default = timedelta(seconds=app[SETTINGS_KEY].freebusy_max_staleness_s)
    return parse_staleness(max_staleness_s, default)


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


def render_slots(result: SlotsResult) -> dict[str, Any]:
    """Slots, completeness and per integration how its availability was known."""
    availability: dict[str, Any] = {}
    for integration_id, outcome in result.availability.items():
        if isinstance(outcome, FreeBusy):
            availability[integration_id] = _how_known(outcome)
        else:
            availability[integration_id] = {
                "complete": False,
                "problem": render_problem(google_problem(outcome)),
            }
    answer = result.answer
    return {
        "slots": [
            {"start": rfc3339(s.start), "end": rfc3339(s.end), "integration_ids": list(s.people)}
            for s in answer.slots
        ],
        "complete": answer.complete,
        "incomplete_integration_ids": list(answer.incomplete_people),
        "integrations": availability,
    }


# -- handlers ---------------------------------------------------------------------------------


@requires_scope("calendar:read")
async def get_freebusy(request: web.Request) -> web.Response:
    """Busy time of one integration, with how fresh it is."""
    query = parse_query(request.query, FreeBusyQuery)
    window = parse_window(query.time_min, query.time_max)
    max_staleness = staleness(request.app, query.max_staleness_s)
    service = availability_service(request.app)
    integration = require_usable(
        await _integration(request, service, request.match_info["integration_id"])
    )
    try:
        answer = await service.freebusy(integration, window, max_staleness=max_staleness)
    except GoogleError as exc:
        raise google_problem(exc) from None
    return json_response(
        render_freebusy(answer, encoded=True), headers={"Cache-Control": "no-store"}
    )


async def _integration(
    request: web.Request, service: AvailabilityService, integration_id: str
) -> Integration:
    """The caller's integration, or 404 (also for another tenant's), through the service's
    index: a warm request reads no database for it."""
    tenant_id = principal(request).tenant_id
    found = service.held_integration(tenant_id, integration_id)
    if found is None and INTEGRATION_ID.match(integration_id):
        found = await service.integration(tenant_id, integration_id)
    if found is None:
        raise NotFound("no such integration", code="integration_not_found")
    return found


async def _lookup(
    request: web.Request, service: AvailabilityService, integration_id: str
) -> Integration | ProblemError:
    try:
        return require_usable(await _integration(request, service, integration_id))
    except ProblemError as exc:
        return exc


@requires_scope("calendar:read")
async def post_freebusy(request: web.Request) -> web.Response:
    """Busy time of several integrations, answered concurrently; one entry per id, in order:
    the free/busy object, or {"integration_id", "problem"} for that id alone."""
    body = await read_json(request, FreeBusyBatch)
    require_unique(body.integration_ids)
    window = parse_window(body.time_min, body.time_max)
    max_staleness = staleness(request.app, body.max_staleness_s)
    service = availability_service(request.app)
    found = [await _lookup(request, service, i) for i in body.integration_ids]
    usable = [i for i in found if isinstance(i, Integration)]
    answers = iter(await service.freebusy_each(usable, window, max_staleness=max_staleness))
    results: list[dict[str, Any]] = []
    for integration_id, looked_up in zip(body.integration_ids, found, strict=True):
        outcome: FreeBusy | GatewayError = (
            next(answers) if isinstance(looked_up, Integration) else looked_up
        )
        if isinstance(outcome, FreeBusy):
            results.append(render_freebusy(outcome, encoded=True))
        else:
            results.append(
                {"integration_id": integration_id, "problem": render_problem(_as_problem(outcome))}
            )
    return json_response(
        {"time_min": rfc3339(window.start), "time_max": rfc3339(window.end), "results": results},
        headers={"Cache-Control": "no-store"},
    )


@requires_scope("calendar:read")
async def post_slots(request: web.Request) -> web.Response:
    """Meeting slots for several integrations: everyone free (`all`) or anyone (`any`)."""
    body = await read_json(request, SlotsRequest)
    require_unique(body.integration_ids)
    window = parse_window(body.time_min, body.time_max)
    max_staleness = staleness(request.app, body.max_staleness_s)
    query = await slot_query(
        window,
        **body.model_dump(
            include={
                "mode",
                "duration_minutes",
                "time_zone",
                "working_hours",
                "buffer_minutes",
                "granularity_minutes",
                "min_notice_minutes",
                "limit",
            }
        ),
    )
    # The whole call is about these people together: any unknown or inactive one fails it.
    service = availability_service(request.app)
    integrations = [
        require_usable(await _integration(request, service, i)) for i in body.integration_ids
    ]
    try:
        result = await service.slots(integrations, query, max_staleness=max_staleness)
    except GoogleError as exc:
        raise google_problem(exc) from None
    rendered = render_slots(result)
    return json_response(
        {
            "slots": rendered["slots"],
            "complete": rendered["complete"],
            "incomplete_integration_ids": rendered["incomplete_integration_ids"],
            "mode": body.mode,
            "time_zone": body.time_zone,
            "time_min": rfc3339(window.start),
            "time_max": rfc3339(window.end),
            "integrations": rendered["integrations"],
        },
        headers={"Cache-Control": "no-store"},
    )


# -- wiring -----------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """Add the availability service (after sync_wiring: it reads the engine) and routes."""

    async def availability_ctx(app: web.Application) -> AsyncIterator[None]:
        sync, tokens = app.get(SYNC_KEY), app.get(TOKENS_KEY)
        if sync is not None and tokens is not None:
            settings = app[SETTINGS_KEY]
            client = await CalendarClient.create(
                app[HTTP_KEY],
                settings.google_calendar_api_url,
                before_send=app[LIVE_LIMITS_KEY].admit,
            )
            app[AVAILABILITY_KEY] = AvailabilityService(
                sync=sync,
                client=client,
                tokens=tokens,
                concurrency=settings.freebusy_concurrency,
                shared=SharedAnswers(ttl=timedelta(seconds=settings.live_answer_reuse_s)),
                index=app.get(INDEX_KEY),
                push_trust_s=settings.push_trust_s,
            )
        yield

    app.cleanup_ctx.append(availability_ctx)
    app.router.add_get("/v1/integrations/{integration_id}/freebusy", get_freebusy)
    app.router.add_post("/v1/freebusy", post_freebusy)
    app.router.add_post("/v1/slots", post_slots)
