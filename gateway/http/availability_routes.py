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

from typing import Any

from aiohttp import web

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
    AvailabilityService,
    FreeBusy,
    parse_window,
)
from gateway.clock import rfc3339
from gateway.connections.model import Integration
from gateway.errors import GatewayError, NotFound, ProblemError
from gateway.google.errors import GoogleError
from gateway.http.auth import principal, requires_scope
from gateway.http.availability_json import (
    as_problem,
    render_freebusy,
    render_problem,
    render_slots,
)
from gateway.http.json_body import json_response
from gateway.http.lookup import (
    INTEGRATION_ID,
    availability_service,
    google_problem,
    require_usable,
    staleness,
)
from gateway.http.validation import Rfc3339, StrictBody, parse_query, read_json


class FreeBusyQuery(StrictBody):
    time_min: Rfc3339
    time_max: Rfc3339
    max_staleness_s: StalenessS | None = None


class FreeBusyBatch(StrictBody):
    integration_ids: IntegrationIds
    time_min: Rfc3339
    time_max: Rfc3339
    max_staleness_s: StalenessS | None = None


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
                {"integration_id": integration_id, "problem": render_problem(as_problem(outcome))}
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
    """Add the routes (the availability service is built by gateway.bootstrap)."""
    app.router.add_get("/v1/integrations/{integration_id}/freebusy", get_freebusy)
    app.router.add_post("/v1/freebusy", post_freebusy)
    app.router.add_post("/v1/slots", post_slots)
