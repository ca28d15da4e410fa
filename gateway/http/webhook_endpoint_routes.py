"""HTTP routes of outbound webhooks (issue 15): a tenant's endpoints and their deliveries,
and the background delivery worker.

    POST   /v1/webhook-endpoints                         webhooks:write  201 + `secret` (once)
    GET    /v1/webhook-endpoints                         webhooks:read
    GET    /v1/webhook-endpoints/{endpoint_id}           webhooks:read
    PATCH  /v1/webhook-endpoints/{endpoint_id}           webhooks:write  url, events, enabled...
    DELETE /v1/webhook-endpoints/{endpoint_id}           webhooks:write  204
    POST   /v1/webhook-endpoints/{endpoint_id}/rotate-secret
                                                         webhooks:write  new `secret`; the old
                                                                         one signs too for 24 h
    GET    /v1/webhook-endpoints/{endpoint_id}/deliveries
                                                         webhooks:read   recent attempts
    POST   /v1/webhook-deliveries/{delivery_id}/retry    webhooks:write  202: due again now

Another tenant's endpoint or delivery is a 404, as an unknown one is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field

from gateway.clock import utc_now
from gateway.connections.model import Integration
from gateway.http.appkeys import (
    ENDPOINTS_KEY,
    ENGINE_KEY,
    SERVICES_KEY,
    WEBHOOK_STORE_KEY,
    WEBHOOK_WORKER_KEY,
)
from gateway.http.auth import principal, requires_scope
from gateway.http.disconnect_routes import disconnect_hooks
from gateway.http.validation import PrintableText, StrictBody, parse_query, read_json
from gateway.periodic import periodic
from gateway.webhooks import outbox
from gateway.webhooks.errors import DeliveryNotFound
from gateway.webhooks.model import EVENT_TYPES
from gateway.webhooks.store import WebhookStore

log = logging.getLogger(__name__)

EventType = Literal[
    "integration.connected",
    "integration.reconnected",
    "integration.needs_reauth",
    "integration.disconnected",
    "booking.updated",
    "booking.cancelled",
    "availability.changed",
]
Url = Annotated[str, Field(min_length=8, max_length=2000)]
Events = Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))]
Description = Annotated[PrintableText, Field(max_length=200)]


class CreateEndpoint(StrictBody):
    url: Url
    events: Events
    description: Description | None = None


class UpdateEndpoint(StrictBody):
    url: Url | None = None
    events: Events | None = None
    description: Description | None = None
    enabled: bool | None = None


class DeliveriesQuery(StrictBody):
    limit: Annotated[int, Field(ge=1, le=100)] = 50


@requires_scope("webhooks:write")
async def create_endpoint(request: web.Request) -> web.Response:
    body = await read_json(request, CreateEndpoint)
    created = await request.app[ENDPOINTS_KEY].create(
        principal(request).tenant_id, body.url, body.events, body.description
    )
    answer = {**created.endpoint.to_public(), "secret": created.secret}
    return web.json_response(
        answer, status=201, headers={"Location": f"/v1/webhook-endpoints/{created.endpoint.id}"}
    )


@requires_scope("webhooks:read")
async def list_endpoints(request: web.Request) -> web.Response:
    endpoints = await request.app[WEBHOOK_STORE_KEY].list_endpoints(principal(request).tenant_id)
    return web.json_response({"endpoints": [e.to_public() for e in endpoints]})


@requires_scope("webhooks:read")
async def get_endpoint(request: web.Request) -> web.Response:
    endpoint = await request.app[ENDPOINTS_KEY].get(
        principal(request).tenant_id, request.match_info["endpoint_id"]
    )
    return web.json_response(endpoint.to_public())


@requires_scope("webhooks:write")
async def update_endpoint(request: web.Request) -> web.Response:
    body = await read_json(request, UpdateEndpoint)
    endpoint = await request.app[ENDPOINTS_KEY].update(
        principal(request).tenant_id,
        request.match_info["endpoint_id"],
        url=body.url,
        events=body.events,
        description=body.description,
        enabled=body.enabled,
    )
    return web.json_response(endpoint.to_public())


@requires_scope("webhooks:write")
async def delete_endpoint(request: web.Request) -> web.Response:
    await request.app[ENDPOINTS_KEY].delete(
        principal(request).tenant_id, request.match_info["endpoint_id"]
    )
    return web.Response(status=204)


@requires_scope("webhooks:write")
async def rotate_secret(request: web.Request) -> web.Response:
    created = await request.app[ENDPOINTS_KEY].rotate(
        principal(request).tenant_id, request.match_info["endpoint_id"]
    )
    return web.json_response({**created.endpoint.to_public(), "secret": created.secret})


@requires_scope("webhooks:read")
async def list_deliveries(request: web.Request) -> web.Response:
    query = parse_query(request.query, DeliveriesQuery)
    tenant_id = principal(request).tenant_id
    endpoint = await request.app[ENDPOINTS_KEY].get(tenant_id, request.match_info["endpoint_id"])
    deliveries = await request.app[WEBHOOK_STORE_KEY].list_deliveries(
        tenant_id, endpoint.id, query.limit
    )
    return web.json_response({"deliveries": [d.to_public() for d in deliveries]})


@requires_scope("webhooks:write")
async def retry_delivery(request: web.Request) -> web.Response:
    tenant_id = principal(request).tenant_id
    store = request.app[WEBHOOK_STORE_KEY]
    delivery_id = request.match_info["delivery_id"]
    if not await store.retry_now(tenant_id, delivery_id, request.app[ENDPOINTS_KEY].now()):
        raise DeliveryNotFound("no such webhook delivery")
    worker = request.app.get(WEBHOOK_WORKER_KEY)
    if worker is not None:
        worker.wake()
    view = await store.get_delivery(tenant_id, delivery_id)
    assert view is not None
    return web.json_response(view.to_public(), status=202)


def setup(app: web.Application) -> None:
    """Add the routes, the running of the delivery worker (GATEWAY_WEBHOOK_WORKER; it and the
    endpoint service are built by gateway.bootstrap), the hourly purge of old events, and the
    disconnect purge of the events about the user's calendar."""

    async def purge_calendar_events(integration: Integration) -> int:
        return await WebhookStore(app[ENGINE_KEY]).purge_integration(integration.id)

    disconnect_hooks(app).record_purgers.append(purge_calendar_events)

    async def webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
        services = app[SERVICES_KEY]
        store, worker = services.webhook_store, services.webhook_worker
        retention = timedelta(days=services.settings.webhook_retention_days)

        async def purge_old() -> None:
            purged = await store.purge_older_than(utc_now() - retention)
            if purged:
                log.info("purged %d webhook events older than %s", purged, retention)

        task: asyncio.Task[None] | None = None
        unwatch: Callable[[], None] | None = None
        if worker is not None:
            app[WEBHOOK_WORKER_KEY] = worker
            # Deliveries this process commits are sent at once, not at the worker's next tick.
            unwatch = outbox.watch(services.engine, worker.wake)
            task = asyncio.create_task(worker.run_forever())
        try:
            async with periodic(purge_old, what="webhook event purge", interval_s=3600):
                yield
        finally:
            if unwatch is not None:
                unwatch()
            if task is not None and worker is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await worker.close()

    app.cleanup_ctx.append(webhooks_ctx)
    r = app.router
    r.add_post("/v1/webhook-endpoints", create_endpoint)
    r.add_get("/v1/webhook-endpoints", list_endpoints)
    r.add_get("/v1/webhook-endpoints/{endpoint_id}", get_endpoint)
    r.add_patch("/v1/webhook-endpoints/{endpoint_id}", update_endpoint)
    r.add_delete("/v1/webhook-endpoints/{endpoint_id}", delete_endpoint)
    r.add_post("/v1/webhook-endpoints/{endpoint_id}/rotate-secret", rotate_secret)
    r.add_get("/v1/webhook-endpoints/{endpoint_id}/deliveries", list_deliveries)
    r.add_post("/v1/webhook-deliveries/{delivery_id}/retry", retry_delivery)
