"""The connection pool keeps what a process uses at once (GATEWAY_DATABASE_POOL_SIZE): a second
burst of concurrent work reuses the first one's connections instead of opening new ones (on
PostgreSQL each is a TCP connection, a start-up and every statement prepared again). On SQLite
and PostgreSQL. And on PostgreSQL a pooled connection is pinged before use only after sitting
idle (PING_AFTER_IDLE_S): one that died meanwhile is replaced, one used moments ago is not
pinged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import TimeoutError as SATimeoutError

from gateway.db.engine import PING_AFTER_IDLE_S, POSTGRES_POOL, SQLITE_POOL, create_engine
from tests.support.databases import fresh_database_url
from tests.support.services import require_postgres

# As many at once as a process's syncs (8 by default, GATEWAY_SYNC_CONCURRENCY).
AT_ONCE = 8


async def _burst(engine: Any, barrier: asyncio.Barrier) -> None:
    async def one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            # Every connection is checked out at the same moment before any goes back.
            await barrier.wait()

    await asyncio.gather(*(one() for _ in range(AT_ONCE)))


async def test_a_second_burst_reuses_the_first_burst_s_connections(database_url: str) -> None:
    assert min(SQLITE_POOL[0], POSTGRES_POOL[0]) >= AT_ONCE
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
    """SQLite keeps four and opens more for a burst (closed after: they cost the server
    nothing). PostgreSQL opens no more than four: a fifth use waits for one to come back and
    reuses it (a connection opened for one use cost a start-up and every statement prepared
    again, and the ceiling against max_connections is the same)."""
    engine = await create_engine(database_url, pool_size=4)
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda conn, _record: opened.append(conn))
    try:
        if engine.dialect.name == "sqlite":
            await _burst(engine, asyncio.Barrier(AT_ONCE))
            await _burst(engine, asyncio.Barrier(AT_ONCE))
            # Four kept; the other four of each burst were opened for it and closed after.
            assert len(opened) == AT_ONCE + (AT_ONCE - 4)
            return
        held = [await engine.connect() for _ in range(4)]
        pids = [await c.scalar(text("SELECT pg_backend_pid()")) for c in held]

        async def fifth() -> int:
            async with engine.connect() as conn:
                return int(await conn.scalar(text("SELECT pg_backend_pid()")))

        # The wait made explicit: with no time to wait, the fifth use fails at once with
        # what a process whose pool stays busy 30 s reports, instead of opening a connection.
        default_timeout = engine.sync_engine.pool._timeout  # type: ignore[attr-defined]
        engine.sync_engine.pool._timeout = 0  # type: ignore[attr-defined]
        with pytest.raises(SATimeoutError, match="limit of size 4 overflow 0 reached"):
            await fifth()
        engine.sync_engine.pool._timeout = default_timeout  # type: ignore[attr-defined]
        await held[0].close()  # back to the pool: the fifth use gets it
        assert await fifth() == pids[0]
        assert len(opened) == 4
        for conn in held[1:]:
            await conn.close()
    finally:
        await engine.dispose()


class _Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _backend_pid(engine: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_postgresql_connection_killed_while_idle_is_replaced_before_use(
    tmp_path: Path,
) -> None:
    clock = _Clock()
    async with fresh_database_url("postgres", tmp_path) as url:
        engine = await create_engine(url, clock=clock)
        try:
            first = await _backend_pid(engine)
            admin = await asyncpg.connect(require_postgres())
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", first)
            finally:
                await admin.close()
            clock.now += PING_AFTER_IDLE_S + 0.1
            # The ping finds the pooled connection dead; the statement runs on a new one.
            assert await _backend_pid(engine) != first
        finally:
            await engine.dispose()


async def test_a_postgresql_connection_used_moments_ago_is_not_pinged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    async with fresh_database_url("postgres", tmp_path) as url:
        engine = await create_engine(url, clock=clock)
        pings: list[object] = []
        ping = engine.dialect.do_ping

        def counted(dbapi_connection: Any) -> bool:
            pings.append(dbapi_connection)
            return ping(dbapi_connection)

        monkeypatch.setattr(engine.dialect, "do_ping", counted)
        try:
            pid = await _backend_pid(engine)
            clock.now += PING_AFTER_IDLE_S  # still within the window
            assert await _backend_pid(engine) == pid
            assert pings == []  # three round trips saved per checkout
            clock.now += PING_AFTER_IDLE_S + 0.1
            assert await _backend_pid(engine) == pid
            assert len(pings) == 1
        finally:
            await engine.dispose()
