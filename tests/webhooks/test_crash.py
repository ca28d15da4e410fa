"""A gateway process killed (SIGKILL) in the middle of a delivery loses nothing: the delivery
keeps its row, and once the dead process's lease runs out another process sends it again with
the same `webhook-id` (at least once; receivers drop duplicates by that id). The same holds for
a worker stopped after its batch was sent but before the batch's outcomes were saved."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import webhook_deliveries
from gateway.http.appkeys import ENDPOINTS_KEY, WEBHOOK_STORE_KEY
from gateway.webhooks.destinations import DestinationPolicy
from gateway.webhooks.worker import DeliveryWorker
from tests.support.processes import serve_process, until
from tests.support.stack import Stack, loopback_only
from tests.webhooks.delivery_support import create_endpoint
from tests.webhooks.receiver import Receiver, receiver

WEBHOOK_ENV = {
    "GATEWAY_WEBHOOK_WORKER": "true",
    "GATEWAY_WEBHOOK_ALLOW_INSECURE_LOOPBACK": "true",
    "GATEWAY_WEBHOOK_TICK_S": "0.05",
    # The sync scheduler has nothing to do with this test.
    "GATEWAY_SYNC_WORKER": "false",
}


async def delivery_rows(engine: AsyncEngine) -> list[tuple[str, str | None, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                webhook_deliveries.c.state,
                webhook_deliveries.c.lease_owner,
                webhook_deliveries.c.event_id,
            )
        )
        return [(r.state, r.lease_owner, r.event_id) for r in rows]


async def test_sigkill_mid_delivery_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    hooks: Receiver
    async with receiver() as hooks:
        made = await create_endpoint(stack, hooks.url, ["integration.connected"])
        hooks.secrets.append(made["secret"])
        hooks.gate = asyncio.Event()  # the first delivery hangs inside the receiver
        await stack.connect("alice@example.com")
        async with serve_process(stack, tmp_path, "first", **WEBHOOK_ENV) as first:
            await until(lambda: _arrived(hooks), describe=first.log_text)
            await first.kill()
        [(state, owner, event_id)] = await delivery_rows(stack.engine)
        assert state == "pending" and owner is not None, "the dead process's claim remains"
        # Time passes for the dead process's lease (moved into the past, not waited for).
        async with stack.engine.begin() as conn:
            await conn.execute(
                update(webhook_deliveries).values(
                    lease_until=datetime.now(UTC) - timedelta(seconds=1)
                )
            )
        hooks.gate.set()
        async with serve_process(stack, tmp_path, "second", **WEBHOOK_ENV) as second:

            async def delivered() -> bool:
                return [r[0] for r in await delivery_rows(stack.engine)] == ["delivered"]

            await until(delivered, describe=second.log_text)
        assert {r.id for r in hooks.requests} == {event_id}
        assert len(hooks.requests) >= 2, "sent again after the crash"
        assert all(r.verified for r in hooks.requests)


async def _arrived(hooks: Receiver) -> bool:
    return bool(hooks.requests)


def _worker(stack: Stack, owner: str, **kwargs: object) -> DeliveryWorker:
    return DeliveryWorker(
        stack.app[WEBHOOK_STORE_KEY],
        stack.app[ENDPOINTS_KEY],
        DestinationPolicy(allow_insecure_loopback=True),
        loopback_only,
        owner=owner,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_batch_sent_but_not_yet_saved_is_sent_again(stack: Stack) -> None:
    """Outcomes are saved per batch after its last attempt: a worker that dies in between
    (here: its task cancelled at the hook, so nothing after it runs) leaves every delivery of
    the batch leased and pending, and the next worker sends them all again."""
    hooks: Receiver
    async with receiver() as hooks:
        made = await create_endpoint(stack, hooks.url, ["integration.connected"])
        hooks.secrets.append(made["secret"])
        await stack.connect("alice@example.com")
        await stack.connect("alice@example.com", user_id="u-2")  # a second integration
        attempted = asyncio.Event()

        async def die_before_saving() -> None:
            attempted.set()
            await asyncio.Event().wait()  # never returns: the "crash" cancels it

        first = _worker(stack, "first", before_save=die_before_saving)
        second = _worker(stack, "second")
        try:
            run = asyncio.create_task(first.run_once())
            await attempted.wait()
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            sent = {r.id for r in hooks.requests}
            assert len(sent) == 2, "both deliveries went out before the crash"
            rows = await delivery_rows(stack.engine)
            assert sorted((state, owner) for state, owner, _ in rows) == [
                ("pending", "first"),
                ("pending", "first"),
            ], "no outcome was saved; the dead worker's leases remain"
            assert await second.run_once() == 0, "leased deliveries are not taken early"
            async with stack.engine.begin() as conn:  # the lease runs out (not waited for)
                await conn.execute(
                    update(webhook_deliveries).values(
                        lease_until=datetime.now(UTC) - timedelta(seconds=1)
                    )
                )
            assert await second.run_once() == 2
        finally:
            await first.close()
            await second.close()
        rows = await delivery_rows(stack.engine)
        assert [(state, owner) for state, owner, _ in rows] == [("delivered", None)] * 2
        assert {event_id for _, _, event_id in rows} == sent
        assert len(hooks.requests) == 4 and {r.id for r in hooks.requests} == sent
        assert all(r.verified for r in hooks.requests)
