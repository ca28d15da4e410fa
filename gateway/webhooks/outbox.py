"""`record_event`: put an event in the outbox inside the transaction of the change causing it.

The event row and one delivery row per enabled endpoint of the tenant subscribed to its type are
inserted on the caller's connection, so they commit or roll back with the change itself: a
status change is never announced without happening, and never happens unannounced. Delivery is
the worker's business (worker.py). A tenant without subscribed endpoints gets no rows.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.clock import rfc3339
from gateway.connections.events import IntegrationChange
from gateway.db.after_commit import after_commit
from gateway.db.direct import Direct, execute
from gateway.db.schema import integrations, webhook_deliveries, webhook_endpoints, webhook_events
from gateway.db.values import as_utc
from gateway.webhooks.model import (
    AVAILABILITY_CHANGED,
    INTEGRATION_CONNECTED,
    INTEGRATION_DISCONNECTED,
    INTEGRATION_NEEDS_REAUTH,
    INTEGRATION_RECONNECTED,
    DeliveryState,
    EndpointState,
    event_body,
    new_delivery_id,
    new_event_id,
)

# Per engine, what wants to hear that deliveries were committed (the delivery worker's wake).
_WATCHERS: weakref.WeakKeyDictionary[Engine, list[Callable[[], None]]] = weakref.WeakKeyDictionary()


def watch(engine: AsyncEngine, wake: Callable[[], None]) -> Callable[[], None]:
    """Call `wake` after every commit that put deliveries in the outbox on `engine` (in this
    process); returns what stops it. The worker then delivers at once, not at its next tick."""
    watchers = _WATCHERS.setdefault(engine.sync_engine, [])
    watchers.append(wake)
    return lambda: watchers.remove(wake) if wake in watchers else None


def _committed(engine: Engine) -> Callable[[], None]:
    def wake_all() -> None:
        for wake in list(_WATCHERS.get(engine, ())):
            wake()

    return wake_all


# Read in every sync's transaction that changed something (on PostgreSQL by asyncpg itself:
# gateway.db.direct).
_SUBSCRIPTIONS = Direct(
    select(webhook_endpoints.c.events).where(
        webhook_endpoints.c.tenant_id == bindparam("subscriber_tenant"),
        webhook_endpoints.c.state == EndpointState.ENABLED.value,
    )
)


async def subscriptions(conn: AsyncConnection, tenant_id: str) -> frozenset[str]:
    """Every event type an enabled endpoint of the tenant wants."""
    rows = await execute(conn, _SUBSCRIPTIONS, {"subscriber_tenant": tenant_id})
    return frozenset(t for (events,) in rows for t in str(events).split())


async def subscribed(conn: AsyncConnection, tenant_id: str, event_types: Sequence[str]) -> bool:
    """Whether an enabled endpoint of the tenant wants any of `event_types` (lets a caller
    skip preparing an event nobody receives)."""
    return not (await subscriptions(conn, tenant_id)).isdisjoint(event_types)


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
    after_commit(conn, _committed(conn.sync_engine))
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
        "occurred_at": rfc3339(now, timespec="seconds"),
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


# The webhook event type of each change the integration repository announces.
INTEGRATION_EVENT_TYPES = {
    IntegrationChange.CONNECTED: INTEGRATION_CONNECTED,
    IntegrationChange.RECONNECTED: INTEGRATION_RECONNECTED,
    IntegrationChange.NEEDS_REAUTH: INTEGRATION_NEEDS_REAUTH,
    IntegrationChange.DISCONNECTED: INTEGRATION_DISCONNECTED,
}


class IntegrationOutbox:
    """The `IntegrationAnnouncer` the app gives the integration repository
    (`gateway.connections.events`): its changes become `integration.*` events here."""

    def __repr__(self) -> str:
        return "IntegrationOutbox()"

    async def wanted(
        self, conn: AsyncConnection, tenant_id: str, change: IntegrationChange
    ) -> bool:
        return await subscribed(conn, tenant_id, (INTEGRATION_EVENT_TYPES[change],))

    async def announce(
        self,
        conn: AsyncConnection,
        change: IntegrationChange,
        integration_id: str,
        *,
        now: datetime,
        **extra: object,
    ) -> None:
        await record_integration_event(
            conn, INTEGRATION_EVENT_TYPES[change], integration_id, now=now, **extra
        )


async def record_availability_change(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    integration_id: str,
    span: tuple[datetime, datetime],
    now: datetime,
    coalesce_s: float,
) -> str | None:
    """`availability.changed` for the integration, coalesced (see gateway.webhooks.sync_events):
    merged into the last one while none of its deliveries was attempted, else recorded and
    held until `coalesce_s` after the last one."""
    e, d = webhook_events, webhook_deliveries
    last = (
        await conn.execute(
            select(e.c.id, e.c.body, e.c.created_at)
            .where(e.c.integration_id == integration_id, e.c.type == AVAILABILITY_CHANGED)
            .order_by(e.c.created_at.desc())
            .limit(1)
        )
    ).first()
    start, end = span
    if last is not None:
        untouched = not (
            await conn.execute(
                select(d.c.id).where(
                    d.c.event_id == last.id,
                    or_(d.c.attempts > 0, d.c.lease_owner.is_not(None)),
                )
            )
        ).first()
        if untouched:
            body = json.loads(last.body)
            data = body["data"]
            data["changed_start"] = min(data["changed_start"], rfc3339(start, timespec="seconds"))
            data["changed_end"] = max(data["changed_end"], rfc3339(end, timespec="seconds"))
            await conn.execute(update(e).where(e.c.id == last.id).values(body=_dump(body)))
            return str(last.id)
    event_id = await record_event(
        conn,
        AVAILABILITY_CHANGED,
        {
            "integration_id": integration_id,
            "changed_start": rfc3339(start, timespec="seconds"),
            "changed_end": rfc3339(end, timespec="seconds"),
            "occurred_at": rfc3339(now, timespec="seconds"),
        },
        now=now,
        integration_id=integration_id,
        tenant_id=tenant_id,
    )
    if event_id is not None and last is not None:
        last_at = as_utc(last.created_at)
        assert last_at is not None
        hold = last_at + timedelta(seconds=coalesce_s)
        if hold > now:
            await conn.execute(
                update(d).where(d.c.event_id == event_id).values(next_attempt_at=hold)
            )
    return event_id


def _dump(body: object) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=True)
