"""Work run after a commit, never after a rollback (gateway.db.after_commit), and the delivery
worker's wake that rides on it: deliveries committed by this process are sent at once instead
of at the worker's next tick. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.after_commit import after_commit
from gateway.db.schema import webhook_deliveries, webhook_endpoints
from gateway.webhooks import outbox
from gateway.webhooks.model import INTEGRATION_NEEDS_REAUTH

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)


async def test_callbacks_run_once_after_the_commit_and_never_after_a_rollback(
    engine: AsyncEngine,
) -> None:
    ran: list[str] = []
    async with engine.begin() as conn:
        after_commit(conn, lambda: ran.append("committed"))
        assert ran == []  # not before the COMMIT
    assert ran == ["committed"]

    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            after_commit(conn, lambda: ran.append("rolled back"))
            raise RuntimeError("the change failed")
    # The next transaction on the pooled connection does not run the dropped callback.
    async with engine.begin() as conn:
        after_commit(conn, lambda: ran.append("next"))
    assert ran == ["committed", "next"]


async def test_a_committed_delivery_wakes_the_worker_and_a_rolled_back_one_does_not(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(webhook_endpoints).values(
                id="whe_wake",
                tenant_id="acme",
                url="https://hooks.example.com/in",
                events=INTEGRATION_NEEDS_REAUTH,
                secret=b"sealed",
                state="enabled",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    woken: list[int] = []
    stop = outbox.watch(engine, lambda: woken.append(len(woken)))
    try:
        with pytest.raises(RuntimeError):
            async with engine.begin() as conn:
                await outbox.record_event(
                    conn, INTEGRATION_NEEDS_REAUTH, {"reason": "x"}, now=NOW, tenant_id="acme"
                )
                raise RuntimeError("the status change failed")
        assert woken == []
        async with engine.begin() as conn:
            assert await outbox.record_event(
                conn, INTEGRATION_NEEDS_REAUTH, {"reason": "x"}, now=NOW, tenant_id="acme"
            )
            assert woken == []  # the worker would find nothing yet
        assert woken == [0]
        async with engine.connect() as conn:
            pending = (await conn.execute(select(webhook_deliveries.c.id))).all()
        assert len(pending) == 1  # what the woken worker finds
        # Nobody subscribed: no rows, no wake.
        async with engine.begin() as conn:
            await outbox.record_event(
                conn, INTEGRATION_NEEDS_REAUTH, {"reason": "x"}, now=NOW, tenant_id="other"
            )
        assert woken == [0]
    finally:
        stop()
