"""Migrations build the same schema on SQLite and PostgreSQL, and serve refuses a stale one."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine
from gateway.db.migrate import current_revision, ensure_migrated, head_revision, upgrade
from gateway.db.schema import metadata
from gateway.errors import NotMigratedError


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
