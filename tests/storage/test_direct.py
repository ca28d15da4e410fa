"""gateway.db.direct: hot-path statements run by asyncpg itself on PostgreSQL answer exactly as
SQLAlchemy's execution does, inside the caller's transaction, with SQLAlchemy's errors; on
SQLite they are SQLAlchemy's execution. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.after_commit import after_commit
from gateway.db.direct import Direct, execute
from gateway.db.engine import create_engine
from gateway.db.values import EpochSeconds, as_utc
from tests.support.databases import fresh_database_url
from tests.support.services import require_postgres

_META = MetaData()
_ITEMS = Table(
    "direct_items",
    _META,
    Column("id", String, primary_key=True),
    Column("n", Integer, nullable=False),
    Column("at", DateTime(timezone=True)),
    Column("start_at", EpochSeconds(), nullable=False),
    Column("kind", String),
)
_C = _ITEMS.c
_BY_ID = Direct(select(_ITEMS).where(_C.id == bindparam("id")))
_BY_KIND = Direct(select(_C.id, _C.n).where(_C.kind == bindparam("kind")).order_by(_C.id))
_ADD = Direct(update(_ITEMS).where(_C.kind == bindparam("of_kind")).values(n=_C.n + 1))
_ADD_RETURNING = Direct(
    update(_ITEMS)
    .where(_C.id == bindparam("item"))
    .values(n=_C.n + bindparam("by"))
    .returning(_C.id, _C.n, _C.start_at)
)
_INSERT = Direct(insert(_ITEMS))
_STARTING_AFTER = Direct(
    select(func.count()).select_from(_ITEMS).where(_C.start_at > bindparam("after"))
)

_AT = datetime(2026, 12, 7, 9, 30, 15, 250_000, tzinfo=UTC)
_START = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)


@pytest.fixture
async def items(engine: AsyncEngine) -> AsyncEngine:
    async with engine.begin() as conn:
        await conn.run_sync(_META.create_all)
        await conn.execute(
            insert(_ITEMS),
            [
                {"id": "a", "n": 1, "at": _AT, "start_at": _START, "kind": "x"},
                {"id": "b", "n": 2, "at": None, "start_at": _START, "kind": "x"},
                {"id": "c", "n": 3, "at": None, "start_at": _AT, "kind": "y"},
            ],
        )
    return engine


async def _n(engine: AsyncEngine, item_id: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(_C.n).where(_C.id == item_id))).scalar_one())


async def test_a_read_answers_what_sqlalchemy_answers(items: AsyncEngine) -> None:
    async with items.connect() as conn:
        direct = (await execute(conn, _BY_ID, {"id": "a"})).mappings().first()
        plain = (await conn.execute(_BY_ID.statement, {"id": "a"})).mappings().first()
        missing = (await execute(conn, _BY_ID, {"id": "zz"})).first()
        several = (await execute(conn, _BY_KIND, {"kind": "x"})).all()
    assert direct is not None and plain is not None
    assert dict(direct) == dict(plain)
    # Types as SQLAlchemy gives them (SQLite's datetimes are naive UTC: `as_utc`),
    # EpochSeconds read back as an aware datetime.
    assert as_utc(direct["at"]) == _AT and direct["start_at"] == _START
    assert missing is None
    assert [tuple(r) for r in several] == [("a", 1), ("b", 2)]
    assert several[0].id == "a"  # rows by attribute, as SQLAlchemy's


async def test_values_are_bound_through_their_types(items: AsyncEngine) -> None:
    """EpochSeconds binds an aware datetime as epoch seconds on both backends."""
    async with items.connect() as conn:
        later = await execute(conn, _STARTING_AFTER, {"after": _AT})
        assert later.scalar_one() == 2


async def test_rowcount_and_returning(items: AsyncEngine) -> None:
    async with items.begin() as conn:
        changed = await execute(conn, _ADD, {"of_kind": "x"})
        returned = await execute(conn, _ADD_RETURNING, {"item": "c", "by": 10})
        row = returned.first()
    assert changed.rowcount == 2
    assert returned.rowcount == 1
    assert row is not None and (row.id, row.n, row.start_at) == (
        "c",
        13,
        _AT.replace(microsecond=0),
    )
    assert [await _n(items, i) for i in ("a", "b", "c")] == [2, 3, 13]


async def test_a_statement_first_in_a_transaction_rolls_back_with_it(items: AsyncEngine) -> None:
    with pytest.raises(RuntimeError, match="after the update"):
        async with items.begin() as conn:
            await execute(conn, _ADD, {"of_kind": "x"})
            raise RuntimeError("after the update")
    assert await _n(items, "a") == 1


async def test_a_statement_commits_with_its_transaction_and_its_after_commit_runs(
    items: AsyncEngine,
) -> None:
    ran: list[int] = []
    async with items.begin() as conn:
        await execute(conn, _ADD, {"of_kind": "x"})
        after_commit(conn, lambda: ran.append(1))
        # The transaction is open: another connection does not see the change yet.
        if items.dialect.name == "postgresql":
            assert await _n(items, "a") == 1
    assert ran == [1]
    assert await _n(items, "a") == 2


async def test_a_duplicate_key_is_sqlalchemy_s_integrity_error_without_parameters(
    items: AsyncEngine,
) -> None:
    secret = "sealed-token-value"
    values = {"id": "a", "n": 0, "at": None, "start_at": _START, "kind": secret}
    with pytest.raises(IntegrityError) as raised:
        async with items.begin() as conn:
            await execute(conn, _INSERT, values)
    if items.dialect.name == "postgresql":
        assert secret not in str(raised.value)
    # The failed transaction changed nothing, and the pool still works.
    assert await _n(items, "a") == 1


async def test_postgresql_runs_it_without_sqlalchemy_s_execution_and_tells_its_listeners(
    items: AsyncEngine,
) -> None:
    """A tracer or a test counting statements still sees each one, before and after; on
    PostgreSQL with the SQL and values asyncpg got and no execution context (SQLAlchemy's
    execution makes one)."""
    seen: list[tuple[str, str, Any, bool]] = []

    def before(
        _conn: Any, _cursor: Any, statement: str, params: Any, context: Any, *_: Any
    ) -> None:
        seen.append(("before", statement, params, context is None))

    def after(_conn: Any, _cursor: Any, statement: str, params: Any, context: Any, *_: Any) -> None:
        seen.append(("after", statement, params, context is None))

    event.listen(items.sync_engine, "before_cursor_execute", before)
    event.listen(items.sync_engine, "after_cursor_execute", after)
    async with items.connect() as conn:
        await execute(conn, _BY_ID, {"id": "a"})
    mine = [s for s in seen if "direct_items" in s[1]]
    assert [s[0] for s in mine] == ["before", "after"]
    direct = items.dialect.name == "postgresql"
    assert all(s[3] is direct for s in mine)
    if direct:
        assert "$1" in mine[0][1] and mine[0][2] == ("a",)


async def test_a_parameter_the_statement_does_not_take_is_refused(items: AsyncEngine) -> None:
    """On SQLAlchemy's execution a parameter named like a column of an UPDATE becomes one
    more SET clause; a compiled-once statement would ignore it instead: refused, so the
    two backends never differ."""
    async with items.begin() as conn:
        if items.dialect.name == "postgresql":
            with pytest.raises(ValueError, match="takes no parameter 'kind'"):
                await execute(conn, _ADD, {"of_kind": "x", "kind": "z"})
        else:
            await execute(conn, _ADD, {"of_kind": "x", "kind": "z"})
    if items.dialect.name == "postgresql":
        assert await _n(items, "a") == 1  # nothing ran


async def test_an_in_list_is_refused_at_its_first_use(items: AsyncEngine) -> None:
    in_list = Direct(select(_C.id).where(_C.id.in_(bindparam("ids", expanding=True))))
    async with items.connect() as conn:
        if items.dialect.name == "postgresql":
            with pytest.raises(ValueError, match="IN list"):
                await execute(conn, in_list, {"ids": ["a"]})
        else:  # SQLAlchemy's own execution takes it
            assert (await execute(conn, in_list, {"ids": ["a"]})).scalar_one() == "a"


async def test_a_postgresql_connection_lost_under_it_is_invalidated(tmp_path: Path) -> None:
    async with fresh_database_url("postgres", tmp_path) as url:
        engine = await create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_META.create_all)
            async with engine.connect() as conn:
                pid = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
                await conn.commit()
                admin = await asyncpg.connect(require_postgres())
                try:
                    await admin.execute("SELECT pg_terminate_backend($1)", pid)
                finally:
                    await admin.close()
                with pytest.raises(DBAPIError) as raised:
                    await execute(conn, _BY_ID, {"id": "a"})
                assert raised.value.connection_invalidated
            # The pool hands out a new connection, not the dead one.
            async with engine.connect() as conn:
                again = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
                assert again != pid
                assert (await execute(conn, _BY_ID, {"id": "a"})).first() is None
        finally:
            await engine.dispose()
