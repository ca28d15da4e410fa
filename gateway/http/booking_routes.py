"""HTTP routes of booking (issue 6): the agent books, lists, changes and cancels events.

    POST   /v1/integrations/{integration_id}/events             calendar:write  book (idempotent)
    GET    /v1/integrations/{integration_id}/events             calendar:read   what we booked
    PATCH  /v1/integrations/{integration_id}/events/{event_id}  calendar:write  change (If-Match)
    DELETE /v1/integrations/{integration_id}/events/{event_id}  calendar:write  cancel

Handlers parse (strict JSON models here, the booking rules in gateway.booking.request), call
BookingService (gateway.booking.service) and render. A repeated booking (same Idempotency-Key,
same request) answers 201 with the original body and `Idempotent-Replayed: true`. Google
failures become lookup.google_problem (503 + Retry-After when rate limited).
"""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field

from gateway.availability.service import parse_window
from gateway.booking.errors import IdempotencyKeyInvalid
from gateway.booking.request import parse_booking, parse_change
from gateway.booking.service import BookingService
from gateway.booking.store import BookingStore
from gateway.clock import rfc3339
from gateway.connections.model import Integration
from gateway.google.errors import GoogleError
from gateway.http.appkeys import (
    BOOKING_KEY,
    ENGINE_KEY,
)
from gateway.http.auth import principal, requires_scope
from gateway.http.disconnect_routes import disconnect_hooks
from gateway.http.json_body import json_response
from gateway.http.lookup import google_problem, google_service, integration_for
from gateway.http.validation import PrintableText, Rfc3339, StrictBody, parse_query, read_json

Text = Annotated[str, Field(max_length=8192)]
Zone = Annotated[str, Field(min_length=1, max_length=64)]


class Attendee(StrictBody):
    email: Annotated[PrintableText, Field(min_length=3, max_length=320)]


class BookingBody(StrictBody):
    calendar_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    summary: Text
    description: Text | None = None
    location: Text | None = None
    start: Rfc3339
    end: Rfc3339
    time_zone: Zone | None = None
    attendees: Annotated[list[Attendee], Field(max_length=100)] | None = None
    send_updates: Literal["all", "none"] | None = None
    if_free: bool | None = None


class ChangeBody(StrictBody):
    summary: Text | None = None
    description: Text | None = None
    location: Text | None = None
    start: Rfc3339 | None = None
    end: Rfc3339 | None = None
    time_zone: Zone | None = None
    attendees: Annotated[list[Attendee], Field(max_length=100)] | None = None
    send_updates: Literal["all", "none"] | None = None
    # Default false: moves stayed unchecked before this field existed.
    if_free: bool = False


class EventsQuery(StrictBody):
    time_min: Rfc3339
    time_max: Rfc3339


class CancelQuery(StrictBody):
    send_updates: Literal["all", "none"] | None = None


def _service(request: web.Request) -> BookingService:
    return google_service(request.app, BOOKING_KEY)


def _idempotency_key(request: web.Request) -> str:
    values = request.headers.getall("Idempotency-Key", [])
    if not values:
        raise IdempotencyKeyInvalid(
            "the Idempotency-Key header is required: a unique value per booking, reused only "
            "to retry the same booking",
            code="idempotency_key_required",
        )
    if len(values) > 1:
        raise IdempotencyKeyInvalid("give the Idempotency-Key header once")
    return str(values[0])


@requires_scope("calendar:write")
async def post_event(request: web.Request) -> web.Response:
    """Book an event (idempotent per Idempotency-Key)."""
    key = _idempotency_key(request)
    body = await read_json(request, BookingBody)
    booking = parse_booking(
        summary=body.summary,
        start=body.start,
        end=body.end,
        calendar_id=body.calendar_id,
        description=body.description,
        location=body.location,
        time_zone=body.time_zone,
        attendees=[a.email for a in body.attendees] if body.attendees is not None else None,
        send_updates=body.send_updates,
        if_free=body.if_free,
    )
    integration = await integration_for(request)
    try:
        result = await _service(request).book(
            integration, principal(request).tenant_id, key, booking
        )
    except GoogleError as exc:
        raise google_problem(exc) from None
    headers = {"Cache-Control": "no-store"}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(result.event.to_json(), status=201, headers=headers)


@requires_scope("calendar:read")
async def list_events(request: web.Request) -> web.Response:
    """The events this gateway booked in the window, in full."""
    query = parse_query(request.query, EventsQuery)
    window = parse_window(query.time_min, query.time_max)
    integration = await integration_for(request)
    try:
        found = await _service(request).list_events(
            integration, principal(request).tenant_id, window
        )
    except GoogleError as exc:
        raise google_problem(exc) from None
    return json_response(
        {
            "integration_id": integration.id,
            "time_min": rfc3339(window.start),
            "time_max": rfc3339(window.end),
            "events": [d.to_json() for d in found],
        },
        headers={"Cache-Control": "no-store"},
    )


@requires_scope("calendar:write")
async def patch_event(request: web.Request) -> web.Response:
    """Change an event this gateway booked; If-Match (its etag) makes it conditional."""
    body = await read_json(request, ChangeBody)
    change = parse_change(
        summary=body.summary,
        description=body.description,
        location=body.location,
        start=body.start,
        end=body.end,
        time_zone=body.time_zone,
        attendees=[a.email for a in body.attendees] if body.attendees is not None else None,
        send_updates=body.send_updates,
    )
    if_match = request.headers.get("If-Match")
    integration = await integration_for(request)
    try:
        event = await _service(request).update(
            integration,
            principal(request).tenant_id,
            request.match_info["event_id"],
            change,
            if_match=if_match,
            if_free=body.if_free,
        )
    except GoogleError as exc:
        raise google_problem(exc) from None
    return json_response(event.to_json(), headers={"Cache-Control": "no-store"})


@requires_scope("calendar:write")
async def delete_event(request: web.Request) -> web.Response:
    """Cancel an event this gateway booked; 204 again when it is gone already."""
    query = parse_query(request.query, CancelQuery)
    integration = await integration_for(request)
    try:
        await _service(request).cancel(
            integration,
            principal(request).tenant_id,
            request.match_info["event_id"],
            send_updates=query.send_updates or "none",
        )
    except GoogleError as exc:
        raise google_problem(exc) from None
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    """Add the disconnect purge of booking rows and the routes (the booking service is built
    by gateway.bootstrap)."""

    async def purge_bookings(integration: Integration) -> int:
        return await BookingStore(app[ENGINE_KEY]).purge_integration(integration.id)

    disconnect_hooks(app).record_purgers.append(purge_bookings)

    events = "/v1/integrations/{integration_id}/events"
    app.router.add_post(events, post_event)
    app.router.add_get(events, list_events)
    app.router.add_patch(events + "/{event_id}", patch_event)
    app.router.add_delete(events + "/{event_id}", delete_event)
