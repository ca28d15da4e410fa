"""PostgreSQL tells every listening process of a calendar's or an integration's new version by
itself (migration 0015's triggers): at the commit of the write that bumped it, never for a
rolled-back one, with the payload gateway.db.notify parses. Another process's index depends on
it: without the notification it keeps answering from its old copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import insert, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine
from gateway.db.notify import CHANNEL, Change, bump_calendars, bump_integration, parse
from gateway.db.schema import calendars, integrations
from tests.support.databases import fresh_database_url
from tests.support.rows import calendar_values, integration_values


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, str]]:
    async with fresh_database_url("postgres", tmp_path, migrated=True) as url:
        engine = await create_engine(url)
        try:
            yield engine, make_url(url).set(drivername="postgresql").render_as_string(False)
        finally:
            await engine.dispose()


class Listener:
    """A LISTEN connection of its own, as another gateway process has."""

    def __init__(self) -> None:
        self.changes: asyncio.Queue[Change | None] = asyncio.Queue()

    def received(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.changes.put_nowait(parse(payload))

    async def next(self) -> Change | None:
        return await asyncio.wait_for(self.changes.get(), 10)


async def test_a_version_bump_is_notified_at_commit_and_never_after_a_rollback(
    postgres: tuple[AsyncEngine, str],
) -> None:
    engine, dsn = postgres
    async with engine.begin() as conn:
        await conn.execute(insert(integrations).values(integration_values("int_1")))
        await conn.execute(insert(calendars).values(calendar_values("cal_1", "int_1")))
    listener = Listener()
    other = await asyncpg.connect(dsn)
    try:
        await other.add_listener(CHANNEL, listener.received)

        # Rolled back: nothing reaches the other process.
        async with engine.connect() as conn, conn.begin() as tx:
            await bump_calendars(conn, ["cal_1"])
            await tx.rollback()
        # Committed: the calendar's and the integration's new versions, as the writer's own
        # transaction published them to its process; a plain UPDATE of the version (a writer
        # that forgot to publish) is notified all the same, and one that leaves it is not.
        async with engine.begin() as conn:
            await bump_calendars(conn, ["cal_1"])
            await bump_integration(conn, "int_1")
        async with engine.begin() as conn:
            await conn.execute(update(calendars).values(state="synced"))
            await conn.execute(update(calendars).values(version=calendars.c.version + 1))
        # A fence afterwards: everything sent before it has arrived when it does.
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"NOTIFY {CHANNEL}, 'f end'")

        got = [await listener.next() for _ in range(4)]
    finally:
        await other.close()
    # The rolled-back bump took version 1 with it; the committed ones are 1, then 2.
    assert got == [
        Change("calendar", "cal_1", "int_1", 1),
        Change("integration", "int_1", None, 1),
        Change("calendar", "cal_1", "int_1", 2),
        Change("fence", "end"),
    ]
