"""Webhook endpoints and deliveries in the database.

Deliveries are claimed like the sync scheduler claims calendars (gateway/sync/store.py
`claim_due`): due rows of enabled endpoints whose lease is free or expired, locked FOR UPDATE
SKIP LOCKED on PostgreSQL so concurrent processes pass each other, and each claim a guarded
UPDATE (the lease must still be free), which is all SQLite needs with its single writer. A
process killed mid-delivery leaves its lease to expire; the next claimer sends the delivery
again with the same `webhook-id` (at least once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import rfc3339
from gateway.db.schema import webhook_deliveries, webhook_endpoints, webhook_events
from gateway.db.values import as_utc
from gateway.webhooks.model import (
    DeliveryState,
    DisabledReason,
    Endpoint,
    EndpointState,
)


def _endpoint(row: RowMapping) -> Endpoint:
    created = as_utc(row["created_at"])
    updated = as_utc(row["updated_at"])
    assert created is not None and updated is not None
    return Endpoint(
        id=row["id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        description=row["description"],
        events=frozenset(str(row["events"]).split()),
        state=EndpointState(row["state"]),
        disabled_reason=row["disabled_reason"],
        failing_since=as_utc(row["failing_since"]),
        previous_until=as_utc(row["previous_until"]),
        created_at=created,
        updated_at=updated,
        secret=bytes(row["secret"]),
        previous_secret=bytes(row["previous_secret"]) if row["previous_secret"] else None,
    )


@dataclass(frozen=True)
class Claimed:
    """A claimed delivery with what sending it needs."""

    id: str
    event_id: str
    event_type: str
    body: str
    event_created_at: datetime
    attempts: int
    endpoint: Endpoint


@dataclass(frozen=True)
class Outcome:
    """What one attempt of a claimed delivery decided (WebhookStore.finish_many saves it)."""

    delivery_id: str
    endpoint_id: str
    state: DeliveryState
    next_attempt_at: datetime | None
    status: int | None
    error: str | None
    latency_ms: int | None
    response: str | None
    endpoint_failed: bool  # the attempt failed: the endpoint's failure streak runs
    disable: DisabledReason | None  # decided: the endpoint is disabled for this reason


@dataclass(frozen=True)
class DeliveryView:
    """A delivery as `GET .../deliveries` shows it."""

    id: str
    event_id: str
    event_type: str
    endpoint_id: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    last_latency_ms: int | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime

    def to_public(self) -> dict[str, object]:
        def ts(value: datetime | None) -> str | None:
            return rfc3339(value, timespec="seconds") if value is not None else None

        return {
            "id": self.id,
            "event_id": self.event_id,
            "type": self.event_type,
            "endpoint_id": self.endpoint_id,
            "state": self.state,
            "attempts": self.attempts,
            "status_code": self.last_status,
            "error": self.last_error,
            "latency_ms": self.last_latency_ms,
            "last_attempt_at": ts(self.last_attempt_at),
            "next_retry_at": ts(self.next_attempt_at)
            if self.state == DeliveryState.PENDING.value
            else None,
            "delivered_at": ts(self.delivered_at),
            "created_at": ts(self.created_at),
        }


class WebhookStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- endpoints --------------------------------------------------------------------------

    async def insert_endpoint(self, endpoint: Endpoint) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(webhook_endpoints).values(
                    id=endpoint.id,
                    tenant_id=endpoint.tenant_id,
                    url=endpoint.url,
                    description=endpoint.description,
                    events=" ".join(sorted(endpoint.events)),
                    secret=endpoint.secret,
                    previous_secret=None,
                    previous_until=None,
                    state=endpoint.state.value,
                    disabled_reason=None,
                    failing_since=None,
                    created_at=endpoint.created_at,
                    updated_at=endpoint.updated_at,
                )
            )

    async def get_endpoint(self, tenant_id: str, endpoint_id: str) -> Endpoint | None:
        async with self.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(webhook_endpoints).where(
                            webhook_endpoints.c.id == endpoint_id,
                            webhook_endpoints.c.tenant_id == tenant_id,
                        )
                    )
                )
                .mappings()
                .first()
            )
        return _endpoint(row) if row is not None else None

    async def list_endpoints(self, tenant_id: str) -> list[Endpoint]:
        async with self.engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(webhook_endpoints)
                        .where(webhook_endpoints.c.tenant_id == tenant_id)
                        .order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
                    )
                )
                .mappings()
                .all()
            )
        return [_endpoint(r) for r in rows]

    async def update_endpoint(self, tenant_id: str, endpoint_id: str, **values: Any) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(webhook_endpoints)
                .where(
                    webhook_endpoints.c.id == endpoint_id,
                    webhook_endpoints.c.tenant_id == tenant_id,
                )
                .values(**values)
            )
        return bool(result.rowcount)

    async def delete_endpoint(self, tenant_id: str, endpoint_id: str) -> bool:
        """Delete the endpoint and its pending deliveries (nobody will receive them)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(webhook_endpoints).where(
                    webhook_endpoints.c.id == endpoint_id,
                    webhook_endpoints.c.tenant_id == tenant_id,
                )
            )
            if result.rowcount:
                await conn.execute(
                    delete(webhook_deliveries).where(
                        webhook_deliveries.c.endpoint_id == endpoint_id
                    )
                )
        return bool(result.rowcount)

    async def purge_integration(self, integration_id: str) -> int:
        """Disconnect (step 4): every event about the integration's calendar (booked meetings
        with their details, availability spans) goes, delivered or not, with its deliveries:
        after a disconnect the gateway keeps nothing synced from the user's calendar, and the
        agent hears `integration.disconnected` instead. The `integration.*` events stay (they
        carry ids, codes and the receipt). Returns how many events were deleted."""
        about_calendar = and_(
            webhook_events.c.integration_id == integration_id,
            webhook_events.c.type.not_like("integration.%"),
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(webhook_deliveries).where(
                    webhook_deliveries.c.event_id.in_(
                        select(webhook_events.c.id).where(about_calendar)
                    )
                )
            )
            result = await conn.execute(delete(webhook_events).where(about_calendar))
        return int(result.rowcount)

    async def purge_older_than(self, cutoff: datetime) -> int:
        """Delete events created before `cutoff` that have no pending delivery, with their
        delivery records (GATEWAY_WEBHOOK_RETENTION_DAYS). Returns how many events went."""
        pending = select(webhook_deliveries.c.event_id).where(
            webhook_deliveries.c.state == "pending"
        )
        old = and_(webhook_events.c.created_at < cutoff, webhook_events.c.id.not_in(pending))
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(webhook_deliveries).where(
                    webhook_deliveries.c.event_id.in_(select(webhook_events.c.id).where(old))
                )
            )
            result = await conn.execute(delete(webhook_events).where(old))
        return int(result.rowcount)

    # -- deliveries -------------------------------------------------------------------------

    async def list_deliveries(
        self, tenant_id: str, endpoint_id: str, limit: int
    ) -> list[DeliveryView]:
        d, e = webhook_deliveries, webhook_events
        query = (
            select(d, e.c.type)
            .join(e, e.c.id == d.c.event_id)
            .where(d.c.tenant_id == tenant_id, d.c.endpoint_id == endpoint_id)
            .order_by(d.c.created_at.desc(), d.c.id.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_view(r) for r in rows]

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> DeliveryView | None:
        d, e = webhook_deliveries, webhook_events
        query = (
            select(d, e.c.type)
            .join(e, e.c.id == d.c.event_id)
            .where(d.c.tenant_id == tenant_id, d.c.id == delivery_id)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _view(row) if row is not None else None

    async def retry_now(self, tenant_id: str, delivery_id: str, now: datetime) -> bool:
        """Make a delivery due at once (a failed one pending again); False if unknown."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == delivery_id,
                    webhook_deliveries.c.tenant_id == tenant_id,
                )
                .values(state=DeliveryState.PENDING.value, next_attempt_at=now)
            )
        return bool(result.rowcount)

    async def claim_due(
        self, owner: str, now: datetime, *, lease_until: datetime, limit: int
    ) -> list[Claimed]:
        """Claim up to `limit` due deliveries of enabled endpoints for `owner`, oldest first."""
        if limit < 1:
            return []
        d = webhook_deliveries
        free = or_(d.c.lease_until.is_(None), d.c.lease_until < now)
        query = (
            select(d.c.id)
            .join(webhook_endpoints, webhook_endpoints.c.id == d.c.endpoint_id)
            .where(
                d.c.state == DeliveryState.PENDING.value,
                d.c.next_attempt_at <= now,
                webhook_endpoints.c.state == EndpointState.ENABLED.value,
                free,
            )
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(limit)
        )
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=d)
        async with self.engine.begin() as conn:
            due = [delivery_id for (delivery_id,) in (await conn.execute(query)).all()]
            if not due:
                return []
            # One guarded UPDATE for the batch; RETURNING says which leases were still free.
            got = set(
                (
                    await conn.execute(
                        update(d)
                        .where(d.c.id.in_(due), free)
                        .values(lease_owner=owner, lease_until=lease_until)
                        .returning(d.c.id)
                    )
                ).scalars()
            )
            claimed = [delivery_id for delivery_id in due if delivery_id in got]
            if not claimed:
                return []
            rows = (
                await conn.execute(
                    select(
                        d.c.id,
                        d.c.event_id,
                        d.c.endpoint_id,
                        d.c.attempts,
                        webhook_events.c.type,
                        webhook_events.c.body,
                        webhook_events.c.created_at,
                    )
                    .join(webhook_events, webhook_events.c.id == d.c.event_id)
                    .where(d.c.id.in_(claimed))
                )
            ).all()
            endpoint_rows = (
                (
                    await conn.execute(
                        select(webhook_endpoints).where(
                            webhook_endpoints.c.id.in_({r.endpoint_id for r in rows})
                        )
                    )
                )
                .mappings()
                .all()
            )
        endpoints = {r["id"]: _endpoint(r) for r in endpoint_rows}
        out: list[Claimed] = []
        for row in rows:
            created = as_utc(row.created_at)
            assert created is not None
            out.append(
                Claimed(
                    id=row.id,
                    event_id=row.event_id,
                    event_type=row.type,
                    body=row.body,
                    event_created_at=created,
                    attempts=int(row.attempts),
                    endpoint=endpoints[row.endpoint_id],
                )
            )
        out.sort(key=lambda c: claimed.index(c.id))
        return out

    async def finish_many(self, owner: str, now: datetime, outcomes: Sequence[Outcome]) -> set[str]:
        """Record a batch of attempts' outcomes and release their leases, with the endpoints'
        failure streaks and disablings, in one transaction (one per batch, not per delivery:
        the worker's database cost per delivery is what bounds a burst).

        `outcomes` are in the order the attempts ended: an endpoint's streak follows its last
        one in the batch (failed: the streak starts unless running; delivered: it ends).
        Returns the ids saved; a delivery whose lease was lost (another process has it now)
        is left to that process."""
        if not outcomes:
            return set()
        d, ep = webhook_deliveries, webhook_endpoints
        async with self.engine.begin() as conn:
            # A write first: it locks the rows (PostgreSQL) or takes the write lock (SQLite),
            # so the leases found held stay held until the commit.
            held = set(
                (
                    await conn.execute(
                        update(d)
                        .where(
                            d.c.id.in_([o.delivery_id for o in outcomes]), d.c.lease_owner == owner
                        )
                        .values(lease_owner=None, lease_until=None)
                        .returning(d.c.id)
                    )
                ).scalars()
            )
            saved = [o for o in outcomes if o.delivery_id in held]
            if not saved:
                return set()
            await conn.execute(
                update(d)
                .where(d.c.id == bindparam("b_id"))
                .values(
                    state=bindparam("b_state"),
                    attempts=d.c.attempts + 1,
                    next_attempt_at=bindparam("b_next"),
                    last_attempt_at=now,
                    last_status=bindparam("b_status"),
                    last_error=bindparam("b_error"),
                    last_latency_ms=bindparam("b_latency"),
                    last_response=bindparam("b_response"),
                    delivered_at=func.coalesce(
                        bindparam("b_delivered", type_=d.c.delivered_at.type), d.c.delivered_at
                    ),
                ),
                [
                    {
                        "b_id": o.delivery_id,
                        "b_state": o.state.value,
                        "b_next": o.next_attempt_at,
                        "b_status": o.status,
                        "b_error": o.error,
                        "b_latency": o.latency_ms,
                        "b_response": o.response,
                        "b_delivered": now if o.state is DeliveryState.DELIVERED else None,
                    }
                    for o in saved
                ],
            )
            last = {o.endpoint_id: o for o in saved}  # each endpoint's last outcome
            failing = [e for e, o in last.items() if o.endpoint_failed]
            clear = [e for e, o in last.items() if not o.endpoint_failed]
            if failing:
                await conn.execute(
                    update(ep)
                    .where(ep.c.id.in_(failing), ep.c.failing_since.is_(None))
                    .values(failing_since=now)
                )
            if clear:
                await conn.execute(
                    update(ep)
                    .where(ep.c.id.in_(clear), ep.c.failing_since.is_not(None))
                    .values(failing_since=None)
                )
            disable = {o.endpoint_id: o.disable for o in saved if o.disable is not None}
            for reason in set(disable.values()):
                await conn.execute(
                    update(ep)
                    .where(ep.c.id.in_([e for e, r in disable.items() if r is reason]))
                    .values(
                        state=EndpointState.DISABLED.value,
                        disabled_reason=reason.value,
                        updated_at=now,
                    )
                )
        return {o.delivery_id for o in saved}


def _view(row: RowMapping) -> DeliveryView:
    created = as_utc(row["created_at"])
    assert created is not None
    return DeliveryView(
        id=row["id"],
        event_id=row["event_id"],
        event_type=row["type"],
        endpoint_id=row["endpoint_id"],
        state=row["state"],
        attempts=int(row["attempts"]),
        last_status=row["last_status"],
        last_error=row["last_error"],
        last_latency_ms=row["last_latency_ms"],
        last_attempt_at=as_utc(row["last_attempt_at"]),
        next_attempt_at=as_utc(row["next_attempt_at"]),
        delivered_at=as_utc(row["delivered_at"]),
        created_at=created,
    )
