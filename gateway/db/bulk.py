"""Bulk INSERT through the database driver itself, inside the caller's SQLAlchemy transaction.

SQLAlchemy's executemany runs every value of every row through its bind processors in Python
(dicts, type lookups, per-dialect conversion): most of an ingest's cost per event. Rows that
are already plain tuples in the table's column order go to the driver's own bulk path instead:
on SQLite multi-row `INSERT ... VALUES (...), (...), ...` statements (through aiosqlite, one
thread hop per call), on PostgreSQL asyncpg's `copy_records_to_table` (COPY).

Why not sqlite3's `executemany` on SQLite: it releases the GIL around every row's
`sqlite3_step` and must win it back after each. While any other thread of the process computes
(a page being parsed, a series expanded), each of those returns waits for that thread's switch
interval (5 ms): a calendar's 1,448 busy blocks took 4.6 ms alone, and over 5 s beside one
thread in a Python loop. A multi-row statement binds its values with the GIL held (in C) and
inserts all its rows in one `sqlite3_step`; each statement still gives up the GIL a few times,
which beside a busy thread costs some 8 ms a statement, so rows go in as few statements as
possible: row counts are rounded up to a power of four (`sqlite_chunks`; the padding rows are
NULLs that the statement leaves out), one statement for up to 1,024 rows, and sqlite3's
statement cache holds at most five statements per table. 1,448 blocks: 5.8 ms alone, 16 ms
beside the busy loop.

The raw connection is the one SQLAlchemy's transaction runs on
(`AsyncConnection.get_raw_connection()`), so the rows commit or roll back with everything else
the transaction did.

Values are what SQLAlchemy would bind, with one exception handled here: SQLite has no datetime
type, and SQLAlchemy stores `DateTime` columns as `YYYY-MM-DD HH:MM:SS.ffffff` text (the
value's own fields; we only ever write UTC). Range queries compare that text, so datetimes
are written in exactly that form.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, Table, bindparam, delete, insert, text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from gateway.db.direct import Direct, any_of, execute
from gateway.db.sqlite_driver import OneHopConnection
from gateway.db.sqlite_writer import claim_write

Row = Sequence[Any]
T = TypeVar("T")

# More rows than this are converted for SQLite in a worker thread (`prepare_rows`).
THREAD_CONVERT_ROWS = 200
# Values per IN list: well under SQLite's 32k variables and PostgreSQL's 65k.
IN_BATCH = 500


def chunks(items: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    """`items` in slices of at most `size`, for statements with an IN list each."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def sqlite_datetime(value: datetime) -> str:
    """SQLAlchemy's SQLite text form of a datetime (the value's fields, microseconds always)."""
    return value.isoformat(" ", "microseconds")[:26]


# Rows per multi-row INSERT at most (a power of four; fewer if the columns would pass
# SQLite's default limit of 32,766 variables per statement). Larger statements save a step
# each but cost their prepared program's memory in every connection's statement cache.
SQLITE_CHUNK_ROWS = 1024
SQLITE_MAX_VARIABLES = 32_766


def _names_and_row(table: Table, columns: tuple[str, ...]) -> tuple[str, str]:
    """`(col, ...)` and one row's `(?, ...)`. Names come from the schema (`table.c[...]`
    refuses any other)."""
    names = ", ".join(table.c[name].name for name in columns)
    return f"({names})", "(" + ", ".join("?" for _ in columns) + ")"


@functools.cache
def sqlite_insert(table: Table, columns: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """The one-row INSERT and the positions of the DateTime columns (built once)."""
    names, row = _names_and_row(table, columns)
    sql = f"INSERT INTO {table.name} {names} VALUES {row}"  # noqa: S608 - names from the schema
    datetimes = tuple(
        i for i, name in enumerate(columns) if isinstance(table.c[name].type, DateTime)
    )
    return sql, datetimes


@functools.cache
def _sqlite_insert_many(table: Table, columns: tuple[str, ...], size: int) -> str:
    """An INSERT of up to `size` rows: `size` rows of values, of which the rows whose first
    value is NULL (padding: the first column must be NOT NULL) are left out."""
    if table.c[columns[0]].nullable:
        raise ValueError(f"{table.name}.{columns[0]} may be NULL: it cannot mark padding")
    names, row = _names_and_row(table, columns)
    padded = f"(VALUES {', '.join([row] * size)}) WHERE column1 IS NOT NULL"
    return f"INSERT INTO {table.name} {names} SELECT * FROM {padded}"  # noqa: S608 - schema names


def sqlite_chunks(total: int, width: int) -> list[tuple[int, int]]:
    """How `total` rows of `width` columns go in: (rows, statement size) per statement,
    full chunks of the largest size and the rest in the smallest power of four that holds
    it (at most five sizes per table in sqlite3's statement cache)."""
    top = SQLITE_CHUNK_ROWS
    while top > 1 and top * width > SQLITE_MAX_VARIABLES:
        top //= 4
    out = [(top, top)] * (total // top)
    rest = total % top
    if rest:
        size = 1
        while size < rest:
            size *= 4
        out.append((rest, size))
    return out


def sqlite_rows(rows: Sequence[Row], datetimes: tuple[int, ...]) -> list[Row]:
    """`rows` with the values at `datetimes` in SQLite's text form."""
    if not datetimes:
        return list(rows)
    out: list[Row] = []
    for row in rows:
        values = list(row)
        for i in datetimes:
            value = values[i]
            if value is not None:
                values[i] = sqlite_datetime(value)
        out.append(values)
    return out


def sqlite_statements(
    table: Table, columns: tuple[str, ...], rows: Sequence[Row]
) -> list[tuple[str, list[Any]]]:
    """Multi-row INSERTs of `rows` (SQLite's values: `sqlite_rows`), each with its flat list
    of parameters (padded with NULLs to the statement's size)."""
    out: list[tuple[str, list[Any]]] = []
    at = 0
    for count, size in sqlite_chunks(len(rows), len(columns)):
        values = [v for r in rows[at : at + count] for v in r]
        values += [None] * ((size - count) * len(columns))
        at += count
        out.append((_sqlite_insert_many(table, columns, size), values))
    return out


@dataclass(frozen=True)
class BulkRows:
    """Rows ready for the driver's bulk path of one backend (`bulk_rows`): converted before a
    transaction begins, so none of that work happens while SQLite's one writer is held."""

    table: Table
    columns: tuple[str, ...]
    rows: Sequence[Row]
    dialect: str
    # SQLite: the statements that insert them (`sqlite_statements`).
    statements: Sequence[tuple[str, list[Any]]] = ()

    def __repr__(self) -> str:  # the rows are users' calendar data: not for logs
        return f"BulkRows({self.table.name}, {len(self.rows)} rows, {self.dialect})"


def bulk_rows(
    dialect: str, table: Table, columns: tuple[str, ...], rows: Sequence[Row]
) -> BulkRows:
    """`rows` (tuples in the order of `columns`) prepared for `dialect`'s bulk path."""
    if dialect == "sqlite":
        rows = sqlite_rows(rows, sqlite_insert(table, columns)[1])
        return BulkRows(table, columns, rows, dialect, sqlite_statements(table, columns, rows))
    return BulkRows(table, columns, rows, dialect)


async def prepare_rows(
    dialect: str, table: Table, columns: tuple[str, ...], rows: Sequence[Row]
) -> BulkRows:
    """`bulk_rows`, in a worker thread for many rows (SQLite's conversion takes milliseconds
    for a calendar's worth, which would hold up the event loop)."""
    if dialect == "sqlite" and len(rows) > THREAD_CONVERT_ROWS:
        return await asyncio.to_thread(bulk_rows, dialect, table, columns, rows)
    return bulk_rows(dialect, table, columns, rows)


@dataclass(frozen=True)
class DeleteIn:
    """`DELETE FROM table WHERE <each of equal> AND column IN (values) AND <each of unequal>`
    (`column != value`), for `write_bulk`. The values are plain strings and integers (no
    conversion is applied to them)."""

    table: Table
    equal: tuple[tuple[str, str | int], ...]
    column: str
    values: Sequence[str | int]
    unequal: tuple[tuple[str, str | int], ...] = ()


@functools.cache
def _postgres_delete(
    table: Table, equal: tuple[str, ...], column: str, unequal: tuple[str, ...]
) -> Direct:
    """`DeleteIn`'s statement on PostgreSQL, one per shape: the values as an array
    (`= ANY`), not an IN list, so asyncpg runs it itself (gateway.db.direct)."""
    cols = table.c
    return Direct(
        delete(table).where(
            *(cols[c] == bindparam(f"delete_eq_{c}", type_=cols[c].type) for c in equal),
            any_of(cols[column], "delete_values"),
            *(cols[c] != bindparam(f"delete_ne_{c}", type_=cols[c].type) for c in unequal),
        )
    )


async def _delete_in(conn: AsyncConnection, d: DeleteIn) -> None:
    """`d` in `conn`'s transaction, off SQLite: on PostgreSQL all its values in one array (one
    statement, run by asyncpg itself), elsewhere in IN lists of at most IN_BATCH."""
    if conn.dialect.name == "postgresql":
        shape = tuple(c for c, _ in d.equal), d.column, tuple(c for c, _ in d.unequal)
        params = {
            **{f"delete_eq_{c}": v for c, v in d.equal},
            **{f"delete_ne_{c}": v for c, v in d.unequal},
            "delete_values": list(d.values),
        }
        await execute(conn, _postgres_delete(d.table, *shape), params)
        return
    cols = d.table.c
    for chunk in chunks(d.values):
        await conn.execute(
            delete(d.table).where(
                *(cols[c] == v for c, v in d.equal),
                cols[d.column].in_(chunk),
                *(cols[c] != v for c, v in d.unequal),
            )
        )


async def write_bulk(
    conn: AsyncConnection,
    deletes: Sequence[DeleteIn],
    inserts: Sequence[BulkRows],
    *,
    with_next: bool = False,
) -> None:
    """The deletes, then the inserts, within `conn`'s transaction. On SQLite all of them go
    to the connection's thread in one hop (each hop is time the one writer is held while
    the event loop gets round to the next statement); with `with_next`, in the hop of the
    transaction's next statement, before it (`gateway.db.sqlite_driver`: that statement raises
    their errors; the commit runs them if none comes). Elsewhere one statement after another."""
    deletes = [d for d in deletes if d.values]
    if conn.dialect.name != "sqlite":
        for d in deletes:
            await _delete_in(conn, d)
        await insert_bulk(conn, *inserts)
        return
    batches: list[tuple[str, Any]] = []
    for d in deletes:
        # Names from the schema (`table.c[...]` refuses any other), values bound.
        where = "".join(f"{d.table.c[c].name} = ? AND " for c, _ in d.equal)
        column = d.table.c[d.column].name
        unless = "".join(f" AND {d.table.c[c].name} != ?" for c, _ in d.unequal)
        for chunk in chunks(d.values):
            marks = ", ".join("?" for _ in chunk)
            sql = f"DELETE FROM {d.table.name} WHERE {where}{column} IN ({marks}){unless}"  # noqa: S608 - names from the schema
            batches.append((sql, [*(v for _, v in d.equal), *chunk, *(v for _, v in d.unequal)]))
    batches += [statement for b in inserts for statement in b.statements]
    await _sqlite_batch(conn, batches, with_next=with_next)


async def _sqlite_batch(
    conn: AsyncConnection, statements: Sequence[tuple[str, Any]], *, with_next: bool = False
) -> None:
    """`statements` on `conn`'s raw SQLite connection, in its transaction, in one hop to its
    thread (gateway.db.sqlite_driver), or in the next statement's with `with_next`: the
    writer is held from now on."""
    if not statements:
        return
    await claim_write(conn)  # SQLAlchemy's events do not see the raw driver
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    if with_next and isinstance(driver, OneHopConnection):
        driver.defer_batch(statements)
    else:
        await driver.execute_batch(statements)


@functools.lru_cache(maxsize=64)
def _sqlite_compiled(statement: ClauseElement, dialect: Dialect) -> SQLCompiler:
    """`statement` compiled for SQLite's positional parameters, once per statement object
    (the callers build their statements once, with bindparams for what varies per call)."""
    compiled = statement.compile(dialect=dialect)
    if not isinstance(compiled, SQLCompiler) or not compiled.positional:
        raise ValueError(f"{dialect.name} does not take positional parameters")
    if compiled.post_compile_params:
        # An IN list's parameters are expanded at execution, not here.
        raise ValueError("a statement with an IN list: write it as OR for sqlite_statement")
    return compiled


def sqlite_statement(
    conn: AsyncConnection, statement: ClauseElement, parameters: Mapping[str, Any] | None = None
) -> tuple[str, tuple[Any, ...]]:
    """A Core statement and the values of its bindparams (`parameters`; values bound in the
    statement itself need none), as SQLAlchemy would send them to SQLite's driver: its SQL and
    its positional parameters, each through its type's bind processor (a DateTime becomes
    SQLAlchemy's SQLite text). For `defer_write`."""
    dialect = conn.dialect
    compiled = _sqlite_compiled(statement, dialect)
    values = compiled.construct_params(dict(parameters) if parameters else None)
    out: list[Any] = []
    for name in compiled.positiontup or ():
        processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        value = values[name]
        out.append(processor(value) if processor is not None else value)
    return compiled.string, tuple(out)


async def defer_write(
    conn: AsyncConnection, statement: ClauseElement, parameters: Mapping[str, Any] | None = None
) -> bool:
    """On SQLite: take the writer and leave `statement` (with `parameters` for its
    bindparams) for the hop of the transaction's next statement, which then runs both
    (gateway.db.sqlite_driver's `defer_batch`): the writer is held across one return to the
    event loop instead of two. False, and nothing done, on any other driver: the caller
    executes it itself."""
    if conn.dialect.name != "sqlite":
        return False
    driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, OneHopConnection):
        return False
    sql, values = sqlite_statement(conn, statement, parameters)
    await claim_write(conn)  # SQLAlchemy's events do not see the raw driver
    driver.defer_batch([(sql, values)])
    return True


async def insert_bulk(conn: AsyncConnection, *bulks: BulkRows, with_next: bool = False) -> None:
    """INSERT prepared rows (of one table or several, in order) within `conn`'s transaction,
    with the driver's bulk path (module doc); `with_next` as for `write_bulk`."""
    bulks = tuple(b for b in bulks if b.rows)
    if not bulks:
        return
    dialect = conn.dialect.name
    for bulk in bulks:
        if dialect != bulk.dialect:
            raise ValueError(f"rows prepared for {bulk.dialect}, inserted on {dialect}")
    if dialect == "sqlite":
        statements = [statement for b in bulks for statement in b.statements]
        await _sqlite_batch(conn, statements, with_next=with_next)
    elif dialect == "postgresql":
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        if not driver.is_in_transaction():
            # SQLAlchemy's asyncpg adapter opens the transaction with its first statement:
            # without one, COPY would run (and commit) on its own.
            await conn.execute(text("SELECT 1"))
        for b in bulks:
            await driver.copy_records_to_table(
                b.table.name, records=b.rows, columns=list(b.columns)
            )
    else:  # any other backend: SQLAlchemy's executemany
        for b in bulks:
            await conn.execute(
                insert(b.table), [dict(zip(b.columns, row, strict=True)) for row in b.rows]
            )


async def insert_rows(
    conn: AsyncConnection, table: Table, columns: tuple[str, ...], rows: Sequence[Row]
) -> None:
    """INSERT `rows` (tuples in the order of `columns`) into `table` within `conn`'s
    transaction, with the driver's bulk path (module doc)."""
    await insert_bulk(conn, bulk_rows(conn.dialect.name, table, columns, rows))
