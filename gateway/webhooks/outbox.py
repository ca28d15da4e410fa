"""`record_event`: put an event in the outbox inside the transaction of the change causing it.

The event row and one delivery row per enabled endpoint of the tenant subscribed to its type are
inserted on the caller's connection, so they commit or roll back with the change itself: a
status change is never announced without happening, and never happens unannounced. Delivery is
the worker's business (worker.py). A tenant without subscribed endpoints gets no rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.schema import integrations, webhook_deliveries, webhook_endpoints, webhook_events
from gateway.webhooks.model import (
    DeliveryState,
    EndpointState,
    event_body,
    new_delivery_id,
    new_event_id,
    rfc3339,
)


async def subscribed(conn: AsyncConnection, tenant_id: str, event_types: Sequence[str]) -> bool:
    """Whether an enabled endpoint of the tenant wants any of `event_types` (lets a caller
    skip preparing an event nobody receives)."""
    rows = await conn.execute(
        select(webhook_endpoints.c.events).where(
            webhook_endpoints.c.tenant_id == tenant_id,
            webhook_endpoints.c.state == EndpointState.ENABLED.value,
        )
    )
    wanted = set(event_types)
    return any(wanted & set(str(events).split()) for (events,) in rows)


async def record_event(
    conn: AsyncConnection,
    event_type: str,
    data: Mapping[str, object],
    *,
    now: datetime,
    integration_id: str | None = None,
    tenant_id: str | None = None,
) -> str | None:
    """Record `event_type` with `data` for the tenant (given, or the integration's) on `conn`;
    returns the event id (`webhook-id`), or None when no endpoint wants it."""
    if tenant_id is None:
        if integration_id is None:
            raise ValueError("record_event needs a tenant_id or an integration_id")
        tenant_id = (
            await conn.execute(
                select(integrations.c.tenant_id).where(integrations.c.id == integration_id)
            )
        ).scalar()
        if tenant_id is None:
            return None
    rows = (
        await conn.execute(
            select(webhook_endpoints.c.id, webhook_endpoints.c.events).where(
                webhook_endpoints.c.tenant_id == tenant_id,
                webhook_endpoints.c.state == EndpointState.ENABLED.value,
            )
        )
    ).all()
    targets = [row.id for row in rows if event_type in str(row.events).split()]
    if not targets:
        return None
    event_id = new_event_id()
    await conn.execute(
        insert(webhook_events).values(
            id=event_id,
            tenant_id=tenant_id,
            integration_id=integration_id,
            type=event_type,
            body=event_body(event_type, data, now),
            created_at=now,
        )
    )
    await conn.execute(
        insert(webhook_deliveries),
        [
            {
                "id": new_delivery_id(),
                "event_id": event_id,
                "endpoint_id": endpoint_id,
                "tenant_id": tenant_id,
                "state": DeliveryState.PENDING.value,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for endpoint_id in targets
        ],
    )
    return event_id


async def record_integration_event(
    conn: AsyncConnection,
    event_type: str,
    integration_id: str,
    *,
    now: datetime,
    **extra: object,
) -> str | None:
    """Record an `integration.*` event from the integration's row as this transaction sees it
    (after the change): ids, status, reason code and time; never an email or a token."""
    row = (
        (
            await conn.execute(
                select(
                    integrations.c.tenant_id,
                    integrations.c.user_id,
                    integrations.c.status,
                    integrations.c.reauth_reason,
                ).where(integrations.c.id == integration_id)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    data: dict[str, object] = {
        "integration_id": integration_id,
        "user_id": row["user_id"],
        "status": row["status"],
        "occurred_at": rfc3339(now),
    }
    if row["reauth_reason"] is not None:
        data["reason"] = row["reauth_reason"]
    data.update(extra)
    return await record_event(
        conn,
        event_type,
        data,
        now=now,
        integration_id=integration_id,
        tenant_id=row["tenant_id"],
    )
