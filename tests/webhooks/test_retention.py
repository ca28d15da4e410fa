"""The outbox does not grow forever: events older than GATEWAY_WEBHOOK_RETENTION_DAYS with
nothing left to deliver go, with their delivery records; an event still being retried stays,
however old."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import webhook_deliveries, webhook_events
from gateway.webhooks.store import WebhookStore

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


async def _event(engine: AsyncEngine, event_id: str, age: timedelta, state: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(webhook_events).values(
                id=event_id,
                tenant_id="acme",
                integration_id="int_1",
                type="booking.updated",
                body="{}",
                created_at=NOW - age,
            )
        )
        await conn.execute(
            insert(webhook_deliveries).values(
                id=f"whd_{event_id}",
                event_id=event_id,
                endpoint_id="whe_1",
                tenant_id="acme",
                state=state,
                attempts=1,
                created_at=NOW - age,
            )
        )


async def test_old_finished_events_go_and_pending_or_recent_ones_stay(engine: AsyncEngine) -> None:
    await _event(engine, "msg_old_delivered", timedelta(days=8), "delivered")
    await _event(engine, "msg_old_failed", timedelta(days=9), "failed")
    await _event(engine, "msg_old_pending", timedelta(days=8), "pending")
    await _event(engine, "msg_recent", timedelta(days=2), "delivered")

    purged = await WebhookStore(engine).purge_older_than(NOW - timedelta(days=7))

    assert purged == 2
    async with engine.connect() as conn:
        events = set((await conn.execute(select(webhook_events.c.id))).scalars())
        deliveries = set((await conn.execute(select(webhook_deliveries.c.event_id))).scalars())
    assert events == deliveries == {"msg_old_pending", "msg_recent"}
