"""A gateway process killed (SIGKILL) in the middle of a delivery loses nothing: the delivery
keeps its row, and once the dead process's lease runs out another process sends it again with
the same `webhook-id` (at least once; receivers drop duplicates by that id)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import webhook_deliveries
from tests.support.processes import serve_process, until
from tests.support.stack import EmulatorSecrets, Stack, start_stack
from tests.webhooks.delivery_support import create_endpoint
from tests.webhooks.receiver import Receiver, receiver

WEBHOOK_ENV = {
    "GATEWAY_WEBHOOK_WORKER": "true",
    "GATEWAY_WEBHOOK_ALLOW_INSECURE_LOOPBACK": "true",
    "GATEWAY_WEBHOOK_TICK_S": "0.05",
    # The sync scheduler has nothing to do with this test.
    "GATEWAY_SYNC_WORKER": "false",
}


@pytest.fixture
async def stack(
    engine: AsyncEngine, database_url: str, tmp_path: Path, emulator_secrets: EmulatorSecrets
) -> AsyncIterator[Stack]:
    async for running in start_stack(
        engine,
        database_url,
        tmp_path,
        emulator_secrets=emulator_secrets,
        webhook_worker=False,
        webhook_allow_insecure_loopback=True,
    ):
        yield running


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
