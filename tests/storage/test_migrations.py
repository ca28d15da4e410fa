"""Migrations build the same schema on SQLite and PostgreSQL, and serve refuses a stale one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine
from gateway.db.migrate import (
    alembic_config,
    current_revision,
    ensure_migrated,
    head_revision,
    upgrade,
)
from gateway.db.schema import calendars, metadata
from gateway.db.values import as_utc
from gateway.errors import NotMigratedError
from gateway.sync.read_store import ReadStore


async def test_fresh_database_is_refused_until_migrated(database_url: str) -> None:
    eng = await create_engine(database_url)
    try:
        with pytest.raises(NotMigratedError, match="calendar-gateway migrate"):
            await ensure_migrated(eng)
        before, after = await upgrade(eng)
        assert before is None
        assert after == head_revision()
        await ensure_migrated(eng)  # no error now
    finally:
        await eng.dispose()


async def test_migrating_twice_changes_nothing(engine: AsyncEngine) -> None:
    before, after = await upgrade(engine)
    assert before == after == head_revision()


async def test_migrations_match_the_declared_schema(engine: AsyncEngine) -> None:
    """The tables the code uses are exactly what the migrations create (on both backends)."""

    def _diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert set(metadata.tables) <= tables


async def test_current_revision_of_empty_database_is_none(database_url: str) -> None:
    eng = await create_engine(database_url)
    try:
        assert await current_revision(eng) is None
    finally:
        await eng.dispose()


async def test_stored_busy_blocks_keep_their_times_through_the_epoch_seconds_migration(
    database_url: str,
) -> None:
    """0013 turns stored block times into epoch seconds: a fraction widens a block (start
    down, end up), whole seconds stay as they were, and availability reads them back."""
    eng = await create_engine(database_url)
    # busy_blocks as revision 0012 declared it.
    before = sa.table(
        "busy_blocks",
        *(sa.column(name) for name in ("calendar_id", "generation", "event_id", "series_id")),
        sa.column("start_at", sa.DateTime(timezone=True)),
        sa.column("end_at", sa.DateTime(timezone=True)),
    )
    day = datetime(2026, 12, 7, tzinfo=UTC)
    try:
        await upgrade(eng, "0012")
        async with eng.begin() as conn:
            await conn.execute(
                calendars.insert().values(
                    id="cal_m",
                    integration_id="int_m",
                    tenant_id="t",
                    google_calendar_id="g",
                    time_zone="UTC",
                    state="idle",
                    active_generation=1,
                    created_at=day,
                    updated_at=day,
                )
            )
            await conn.execute(
                before.insert(),
                [
                    {
                        "calendar_id": "cal_m",
                        "generation": 1,
                        "event_id": "whole",
                        "series_id": "whole",
                        "start_at": day + timedelta(hours=9),
                        "end_at": day + timedelta(hours=10),
                    },
                    {
                        "calendar_id": "cal_m",
                        "generation": 1,
                        "event_id": "fraction",
                        "series_id": "fraction",
                        "start_at": day + timedelta(hours=15, microseconds=250_000),
                        "end_at": day + timedelta(hours=16, microseconds=1),
                    },
                ],
            )
        await upgrade(eng)
        async with eng.connect() as conn:
            stored = (
                await conn.execute(sa.text("SELECT event_id, start_at, end_at FROM busy_blocks"))
            ).all()
        seconds = int((day + timedelta(hours=9)).timestamp())
        assert sorted(tuple(r) for r in stored) == [
            ("fraction", seconds + 6 * 3600, seconds + 7 * 3600 + 1),
            ("whole", seconds, seconds + 3600),
        ]
        assert await ReadStore(eng).busy_between("cal_m", day, day + timedelta(days=1)) == [
            (day + timedelta(hours=9), day + timedelta(hours=10)),
            (day + timedelta(hours=15), day + timedelta(hours=16, seconds=1)),
        ]

        # And back: 0012's timestamps (of the whole seconds kept), then forward again.
        def downgrade(conn: Connection) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0012")

        async with eng.begin() as conn:
            await conn.run_sync(downgrade)
        async with eng.connect() as conn:
            back = (
                await conn.execute(sa.select(before.c.event_id, before.c.start_at, before.c.end_at))
            ).all()
        assert sorted((e, as_utc(s), as_utc(x)) for e, s, x in back) == [
            ("fraction", day + timedelta(hours=15), day + timedelta(hours=16, seconds=1)),
            ("whole", day + timedelta(hours=9), day + timedelta(hours=10)),
        ]
        await upgrade(eng)
        assert await current_revision(eng) == head_revision()
    finally:
        await eng.dispose()
