"""The SQLite engine's driver (gateway.db.sqlite_driver) runs each statement in one hop to the
connection's thread and skips the hop of a commit or rollback with nothing to end, and with
that SQLAlchemy behaves exactly as over aiosqlite: rows, row counts, generated keys, errors,
rollbacks and commits. The hops are counted at aiosqlite's queue, never timed."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.bulk import (
    SQLITE_MAX_VARIABLES,
    BulkRows,
    bulk_rows,
    defer_write,
    insert_rows,
    sqlite_chunks,
    write_bulk,
)
from gateway.db.engine import create_engine
from gateway.db.sqlite_driver import OneHopConnection
from gateway.db.transactions import commit_if_changed

metadata = MetaData()
notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("who", String, nullable=False, unique=True),
)
stamps = Table(
    "stamps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime, nullable=True),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = await create_engine(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    async with eng.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """What each call handed to a connection's thread (by the function's name)."""
    seen: Counter[str] = Counter()
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen[getattr(fn, "__name__", type(fn).__name__)] += 1
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    yield seen


async def test_the_engine_s_connections_are_the_one_hop_driver(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection, OneHopConnection)


async def test_a_read_takes_one_hop_and_a_write_transaction_two(
    engine: AsyncEngine, hops: Counter[str]
) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(notes), [{"who": "a"}, {"who": "b"}])
    hops.clear()
    async with engine.connect() as conn:
        rows = (await conn.execute(select(notes.c.who).order_by(notes.c.who))).scalars().all()
    assert rows == ["a", "b"]
    assert sum(hops.values()) == 1  # aiosqlite's own cursor took five
    hops.clear()
    async with engine.begin() as conn:
        changed = await conn.execute(update(notes).where(notes.c.who == "a").values(who="c"))
    assert changed.rowcount == 1
    assert sum(hops.values()) == 2 and hops["commit"] == 1  # the statement, the commit


async def test_rows_counts_and_generated_keys_are_as_sqlalchemy_expects(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        first = await conn.execute(insert(notes).values(who="x"))
        second = await conn.execute(insert(notes).values(who="y"))
        assert first.inserted_primary_key is not None and second.inserted_primary_key is not None
        assert second.inserted_primary_key[0] == first.inserted_primary_key[0] + 1
        none = await conn.execute(update(notes).where(notes.c.who == "nobody").values(who="z"))
        assert none.rowcount == 0
        both = await conn.execute(update(notes).values(who=func.upper(notes.c.who)))
        assert both.rowcount == 2
        found = (await conn.execute(select(notes).order_by(notes.c.id))).mappings().all()
    assert [r["who"] for r in found] == ["X", "Y"]


async def test_a_failed_transaction_leaves_nothing_and_the_next_one_works(
    engine: AsyncEngine,
) -> None:
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await insert_rows(conn, notes, ("id", "who"), [(1, "p"), (2, "q")])
            await conn.execute(insert(notes).values(who="p"))  # unique: refused
    async with engine.begin() as conn:
        assert (await conn.execute(select(func.count()).select_from(notes))).scalar() == 0
        await insert_rows(conn, notes, ("id", "who"), [(1, "p")])
    async with engine.connect() as conn:
        assert (await conn.execute(select(notes.c.who))).scalars().all() == ["p"]


async def test_a_rollback_undoes_what_the_transaction_wrote(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(insert(notes).values(who="kept"))
        await conn.commit()
        await conn.execute(insert(notes).values(who="undone"))
        await conn.rollback()
        assert (await conn.execute(select(notes.c.who))).scalars().all() == ["kept"]


async def _whos(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(notes.c.who).order_by(notes.c.who))).scalars())


async def test_a_last_statement_that_changes_a_row_commits_in_its_own_hop(
    engine: AsyncEngine, hops: Counter[str]
) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(notes).values(who="a"))
        hops.clear()
        changed = await commit_if_changed(
            conn, update(notes).values(who="b").returning(notes.c.who)
        )
        assert changed.scalars().all() == ["b"]
        assert sum(hops.values()) == 1  # the statement and its COMMIT
        # Committed already: another connection reads it before this block ends.
        assert await _whos(engine) == ["b"]
    assert hops["commit"] == 0  # SQLAlchemy's commit found nothing to do
    # The writer is free again: the next transaction goes through as usual.
    async with engine.begin() as conn:
        await conn.execute(insert(notes).values(who="c"))
    assert await _whos(engine) == ["b", "c"]


async def test_a_last_statement_that_changes_nothing_leaves_the_transaction_to_roll_back(
    engine: AsyncEngine,
) -> None:
    class Gone(Exception):
        pass

    with pytest.raises(Gone):
        async with engine.begin() as conn:
            await conn.execute(insert(notes).values(who="orphan"))
            missing = await commit_if_changed(
                conn, update(notes).where(notes.c.who == "nobody").values(who="x")
            )
            if missing.rowcount == 0:
                raise Gone  # as a build's switch that finds its calendar purged
    assert await _whos(engine) == []


async def test_a_transaction_that_changed_nothing_ends_with_its_last_statement(
    engine: AsyncEngine, hops: Counter[str]
) -> None:
    async with engine.begin() as conn:
        await commit_if_changed(conn, update(notes).values(who="x"))  # no rows at all
    # The statement alone (its transaction's whole) goes through the writer's group path.
    assert hops["_run_together"] == 1 and hops["commit"] == 0
    async with engine.begin() as conn:
        await conn.execute(insert(notes).values(who="after"))
    assert await _whos(engine) == ["after"]


async def test_a_transaction_of_one_last_statement_runs_alone_without_begin_or_commit(
    engine: AsyncEngine,
) -> None:
    """What SQLite is asked to run (its trace): a transaction that is nothing but its last
    statement runs it alone (SQLite's autocommit: no BEGIN, no COMMIT, each three calls that
    hold the writer while the thread waits for the GIL); one with an earlier statement keeps
    both. Either way what changed is committed, and a failing one leaves nothing behind."""
    traced: list[str] = []
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert isinstance(driver, OneHopConnection)
        await driver._execute(driver._conn.set_trace_callback, traced.append)  # type: ignore[no-untyped-call]
        async with conn.begin():
            changed = await commit_if_changed(
                conn, insert(notes).values(who="a").returning(notes.c.who)
            )
            assert changed.scalars().all() == ["a"]
            assert await _whos(engine) == ["a"]  # committed already
        alone = [sql.split()[0] for sql in traced]
        traced.clear()
        with pytest.raises(IntegrityError):
            async with conn.begin():
                await commit_if_changed(conn, insert(notes).values(who="a"))  # unique
        traced.clear()
        async with conn.begin():
            await conn.execute(insert(notes).values(who="b"))
            await commit_if_changed(conn, update(notes).where(notes.c.who == "b").values(who="c"))
        together = [sql.split()[0] for sql in traced]
        await driver._execute(driver._conn.set_trace_callback, None)  # type: ignore[no-untyped-call]
    assert alone == ["INSERT"]
    assert together == ["BEGIN", "INSERT", "UPDATE", "COMMIT"]
    assert await _whos(engine) == ["a", "c"]


async def test_a_statement_after_the_committing_one_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError, match="after the one its transaction committed with"):
        async with engine.begin() as conn:
            await commit_if_changed(conn, insert(notes).values(who="first"))
            await conn.execute(insert(notes).values(who="second"))
    # The first was committed with its statement; the second never ran.
    assert await _whos(engine) == ["first"]
    async with engine.begin() as conn:  # the connection is usable again
        await conn.execute(insert(notes).values(who="third"))
    assert await _whos(engine) == ["first", "third"]


@pytest.mark.parametrize("width", [1, 6, 20, 70, 40_000])
def test_bulk_rows_go_in_few_statements_of_few_sizes(width: int) -> None:
    """Any number of rows is cut into statements within SQLite's variable limit: full ones
    of the largest size and one more for the rest, and all counts together use at most five
    distinct statement sizes (each is kept prepared in every connection's cache)."""
    sizes: set[int] = set()
    for total in range(0, 5000, 7):
        chunks = sqlite_chunks(total, width)
        assert sum(count for count, _ in chunks) == total
        assert all(count <= size for count, size in chunks)
        assert all(size * width <= SQLITE_MAX_VARIABLES or size == 1 for _, size in chunks)
        assert len([1 for count, size in chunks if count < size]) <= 1
        sizes.update(size for _, size in chunks)
    assert len(sizes) <= 6


async def test_a_bulk_insert_is_one_statement_in_one_hop(
    engine: AsyncEngine, hops: Counter[str]
) -> None:
    """1,000 rows go to the connection's thread once, as ONE statement (padded to 1,024 rows
    with NULL rows it leaves out) rather than a statement per row, and exactly they are
    stored."""
    statements: list[str] = []
    async with engine.begin() as conn:
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None
        raw.driver_connection._conn.set_trace_callback(statements.append)
        hops.clear()
        await insert_rows(conn, notes, ("id", "who"), [(i, f"w{i}") for i in range(1000)])
        assert hops == Counter({"_run_batch": 1})
        raw.driver_connection._conn.set_trace_callback(None)
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert [s.count("'w") for s in inserts] == [1000]
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(notes)) == 1000
        assert await conn.scalar(select(func.count()).where(notes.c.who.is_(None))) == 0


def _prepared(rows: list[tuple[int, str]]) -> BulkRows:
    return bulk_rows("sqlite", notes, ("id", "who"), rows)


async def test_a_bulk_write_with_the_next_statement_is_one_hop_with_its_commit(
    engine: AsyncEngine, hops: Counter[str]
) -> None:
    """A bulk write deferred to the transaction's next statement goes to the connection's
    thread with it: the rows, the last statement and the COMMIT in ONE hop (each hop holds
    SQLite's one writer while the event loop comes round to its answer)."""
    async with engine.begin() as conn:
        hops.clear()
        await write_bulk(conn, [], [_prepared([(1, "p"), (2, "q")])], with_next=True)
        assert hops == Counter()  # nothing ran yet
        result = await commit_if_changed(
            conn, update(notes).where(notes.c.id == 2).values(who="r").returning(notes.c.id)
        )
        assert result.scalars().all() == [2]
    assert hops == Counter({"_run": 1})
    async with engine.connect() as conn:
        assert (await conn.execute(select(notes.c.id, notes.c.who).order_by(notes.c.id))).all() == [
            (1, "p"),
            (2, "r"),
        ]


async def test_a_deferred_write_fails_with_the_next_statement_and_nothing_is_stored(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await insert_rows(conn, notes, ("id", "who"), [(1, "p")])
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await write_bulk(conn, [], [_prepared([(2, "q"), (3, "p")])], with_next=True)
            await conn.execute(update(notes).where(notes.c.id == 1).values(who="z"))
    async with engine.connect() as conn:
        assert (await conn.execute(select(notes.c.id, notes.c.who))).all() == [(1, "p")]


async def test_a_deferred_write_is_committed_without_a_next_statement_and_dropped_by_a_rollback(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await write_bulk(conn, [], [_prepared([(1, "p")])], with_next=True)
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with engine.begin() as conn:
            await write_bulk(conn, [], [_prepared([(2, "q")])], with_next=True)
            raise RuntimeError("changed my mind")
    async with engine.begin() as conn:  # the dropped rows do not follow the next transaction
        await conn.execute(insert(notes).values(id=3, who="s"))
    async with engine.connect() as conn:
        stored = await conn.execute(select(notes.c.id).order_by(notes.c.id))
        assert stored.scalars().all() == [1, 3]


async def test_a_deferred_core_statement_stores_what_sqlalchemy_stores_in_the_next_hop(
    engine: AsyncEngine, hops: Counter[str]
) -> None:
    """`defer_write` compiles a Core statement as SQLAlchemy sends it (a datetime as
    SQLAlchemy's SQLite text) and runs it in the hop of the transaction's next statement;
    an IN list, which only execution expands, is refused before anything is taken."""
    at = datetime(2026, 12, 6, 7, 0, 0, 123, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(insert(stamps).values(id=1, at=at))
        await conn.execute(insert(stamps).values(id=2, at=None))
    hops.clear()
    async with engine.begin() as conn:
        assert await defer_write(conn, update(stamps).where(stamps.c.id == 2).values(at=at))
        assert hops == Counter()  # nothing ran yet
        found = (await conn.execute(select(stamps.c.at).order_by(stamps.c.id))).scalars()
        assert found.all() == [at.replace(tzinfo=None)] * 2
    assert hops == Counter({"_run": 1, "commit": 1})
    async with engine.connect() as conn:
        raw = (await conn.execute(text("SELECT at FROM stamps ORDER BY id"))).scalars().all()
    assert raw == ["2026-12-06 07:00:00.000123"] * 2

    with pytest.raises(ValueError, match="IN list"):
        async with engine.begin() as conn:
            await defer_write(conn, update(stamps).where(stamps.c.id.in_([1, 2])).values(at=None))


async def test_one_deferred_statement_takes_each_call_s_values(engine: AsyncEngine) -> None:
    """A statement built once with bindparams (as the hot paths keep theirs, compiled once)
    stores each call's own values, converted as SQLAlchemy converts them."""
    statement = (
        update(stamps)
        .where(stamps.c.id == bindparam("stamp_id", type_=Integer()))
        .values(at=bindparam("stamp_at", type_=stamps.c.at.type))
    )
    first = datetime(2026, 12, 6, 7, 0, 0, 5, tzinfo=UTC)
    second = datetime(2026, 12, 6, 8, 30, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(insert(stamps), [{"id": 1, "at": None}, {"id": 2, "at": None}])
    for stamp_id, at in ((1, first), (2, second)):
        async with engine.begin() as conn:
            assert await defer_write(conn, statement, {"stamp_id": stamp_id, "stamp_at": at})
    async with engine.connect() as conn:
        raw = (await conn.execute(text("SELECT at FROM stamps ORDER BY id"))).scalars().all()
    assert raw == ["2026-12-06 07:00:00.000005", "2026-12-06 08:30:00.000000"]
