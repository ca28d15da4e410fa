"""The connection pool keeps what a process uses at once (GATEWAY_DATABASE_POOL_SIZE): a second
burst of concurrent work reuses the first one's connections instead of opening new ones (on
PostgreSQL each is a TCP connection, a start-up and every statement prepared again). On SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, text

from gateway.db.engine import POOL_SIZE, create_engine
from gateway.settings import Settings

# As many at once as a process does in a busy moment: its syncs (8 by default), push
# notifications, the webhook worker and API requests.
AT_ONCE = 12


async def _burst(engine: Any, barrier: asyncio.Barrier) -> None:
    async def one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            # Every connection is checked out at the same moment before any goes back.
            await barrier.wait()

    await asyncio.gather(*(one() for _ in range(AT_ONCE)))


async def test_a_second_burst_reuses_the_first_burst_s_connections(database_url: str) -> None:
    assert Settings(_env_file=None).database_pool_size == POOL_SIZE >= AT_ONCE
    engine = await create_engine(database_url)
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda conn, _record: opened.append(conn))
    try:
        await _burst(engine, asyncio.Barrier(AT_ONCE))
        assert len(opened) == AT_ONCE
        await _burst(engine, asyncio.Barrier(AT_ONCE))
        assert len(opened) == AT_ONCE  # none opened again
    finally:
        await engine.dispose()


async def test_the_pool_size_setting_bounds_the_connections_kept(database_url: str) -> None:
    engine = await create_engine(database_url, pool_size=4)
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda conn, _record: opened.append(conn))
    try:
        await _burst(engine, asyncio.Barrier(AT_ONCE))
        await _burst(engine, asyncio.Barrier(AT_ONCE))
        # Four kept; the other eight of each burst were opened for it and closed after.
        assert len(opened) == AT_ONCE + (AT_ONCE - 4)
    finally:
        await engine.dispose()
