"""Hot-path statements executed by asyncpg itself, inside SQLAlchemy's connection and transaction.

    _BY_ID = Direct(select(calendars).where(calendars.c.id == bindparam("calendar_id")))

    async with engine.connect() as conn:
        row = (await execute(conn, _BY_ID, {"calendar_id": cid})).mappings().first()

SQLAlchemy's execution of a Core statement costs more CPU than the statement's round trip to
PostgreSQL: every call builds the statement's cache key and looks it up in the compiled cache,
processes the parameters into a dict, goes through a greenlet into the asyncpg adapter's cursor
emulation (which matches the status line with a regular expression) and builds the result
around it. Timed on one connection (2026-12-07, the development machine): a read by key took
250 us of CPU through SQLAlchemy, 135 us through asyncpg's `fetch`, and 160 us through
`execute` here (most of the difference is the result object, kept so callers read rows as
they did). A new calendar's first sync runs some twenty such statements: profiled at 10
events a calendar, SQLAlchemy held over half of a gateway's CPU.

What stays SQLAlchemy's: the statement (a `Direct` is built once, at module level, and compiled
once per dialect), the pooled connection, its transaction (begun on the driver here when the
statement is its first, as SQLAlchemy's adapter would; committed or rolled back by the
caller's `engine.begin()` block as usual, with `gateway.db.after_commit`'s callbacks), and the
errors (asyncpg's are raised as SQLAlchemy's `DBAPIError` subclasses, a lost connection is
invalidated). SQLAlchemy's `before_cursor_execute` and `after_cursor_execute`
events still fire when something listens (a tracer, a test counting statements), with the SQL
and values asyncpg is given, and no cursor nor execution context (`context` is None). What is
skipped: SQLAlchemy's echo of statements and its statement cache.

Limits, checked when a statement is first compiled: no IN lists (expanding parameters: use
`any_of` and `none_of`, one array parameter), no values rendered at execution
(`literal_execute`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY, CursorResult, Executable, all_, any_, bindparam
from sqlalchemy.engine import Dialect, IteratorResult
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    """A statement as asyncpg runs it: SQL with `$n` parameters, their names in order with
    each value's bind processor, and (for a statement that returns rows) the result's keys
    and the values' result processors (None where a value is taken as the driver gives it)."""

    compiled: SQLCompiler
    # An INSERT's or UPDATE's columns it has no bindparam of: as a parameter, SQLAlchemy's
    # execution would make one more VALUES or SET clause of it (other extra names it ignores).
    refuses: frozenset[str]
    sql: str
    names: tuple[str, ...]
    binds: tuple[Processor, ...]
    metadata: SimpleResultMetaData | None
    results: tuple[Processor, ...] | None

    def bind(self, statement: Direct, params: Mapping[str, Any] | None) -> list[Any]:
        """The driver's positional values for `params`."""
        if params and self.refuses and not self.refuses.isdisjoint(params):
            # Compiled once, it would ignore the value SQLAlchemy's execution would write.
            unknown = sorted(self.refuses.intersection(params))
            raise ValueError(f"{statement!r} takes no parameter {unknown[0]!r}")
        values = self.compiled.construct_params(dict(params) if params else None)
        return [
            values[name] if bind is None else bind(values[name])
            for name, bind in zip(self.names, self.binds, strict=True)
        ]


def any_of(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """`column IN (values)` for a `Direct` statement on PostgreSQL: `column = ANY($n)`, the
    values given as ONE parameter `name` (a list) of an array of the column's type, as many as
    there are in one statement."""
    return column == any_(bindparam(name, type_=ARRAY(column.type)))


def none_of(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """`column NOT IN (values)` as `any_of` puts it: `column <> ALL($n)` (true for an empty
    list)."""
    return column != all_(bindparam(name, type_=ARRAY(column.type)))


class DirectResult(IteratorResult[*tuple[Any, ...]]):
    """What `execute` returns on PostgreSQL: SQLAlchemy's own result over the rows asyncpg
    fetched (`.first()`, `.all()`, `.mappings()`, `.scalars()`, rows by name or position),
    with `rowcount` as a cursor's (rows changed, or rows returned)."""

    def __init__(self, metadata: SimpleResultMetaData, rows: list[Any], rowcount: int) -> None:
        super().__init__(metadata, iter(rows))
        self.rowcount = rowcount


Executed = CursorResult[*tuple[Any, ...]] | DirectResult
"""What `execute` returns: SQLAlchemy's cursor result on SQLite, a `DirectResult` on
PostgreSQL."""

_NO_ROWS = SimpleResultMetaData([])


class Direct:
    """A Core statement run by the driver itself on PostgreSQL (module doc). Build it once."""

    __slots__ = ("_by_dialect", "statement")

    def __init__(self, statement: Executable) -> None:
        if not isinstance(statement, ClauseElement):
            raise TypeError("a Direct statement is a Core statement")
        self.statement = statement
        self._by_dialect: dict[tuple[str, str], _Compiled] = {}

    def __repr__(self) -> str:
        return f"Direct({type(self.statement).__name__})"

    def compiled_for(self, dialect: Dialect) -> _Compiled:
        key = (dialect.name, dialect.driver)
        found = self._by_dialect.get(key)
        if found is None:
            found = self._by_dialect[key] = _compile(self.statement, dialect)
        return found


def _compile(statement: Executable, dialect: Dialect) -> _Compiled:
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=dialect)
    if not isinstance(compiled, SQLCompiler) or not compiled.positional:
        raise ValueError(f"{dialect.name} does not take positional parameters")
    if compiled.post_compile_params or compiled.literal_execute_params:
        raise ValueError("a Direct statement takes no IN list nor literal_execute value")
    names = tuple(compiled.positiontup or ())
    binds = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    metadata: SimpleResultMetaData | None = None
    results: tuple[Processor, ...] | None = None
    if compiled.returning or statement.is_select:
        columns = compiled._result_columns  # (key, name, objects, type) in the rendered order
        metadata = SimpleResultMetaData([c[0] for c in columns])
        processors = tuple(
            c[3].dialect_impl(dialect).result_processor(dialect, None) for c in columns
        )
        results = processors if any(p is not None for p in processors) else None
    table = getattr(statement, "table", None) if (compiled.isinsert or compiled.isupdate) else None
    written = frozenset(table.c.keys()) if table is not None else frozenset()
    refuses = written - frozenset(compiled.binds)
    return _Compiled(compiled, refuses, compiled.string, names, binds, metadata, results)


async def execute(
    conn: AsyncConnection, statement: Direct | Executable, params: Mapping[str, Any] | None = None
) -> Executed:
    """Run `statement` with `params` (values of its bindparams) in `conn`'s transaction: a
    `Direct` one on PostgreSQL by asyncpg itself (module doc); anything else, and everything
    elsewhere, with `conn.execute`."""
    dialect = conn.dialect
    if not isinstance(statement, Direct):
        return await conn.execute(statement, params)
    if dialect.driver != "asyncpg":
        return await conn.execute(statement.statement, params)
    c = statement.compiled_for(dialect)
    args = c.bind(statement, params)
    sync = conn.sync_connection
    # SQLAlchemy's cursor events, when anything listens (tracing, tests counting statements):
    # with the SQL and values asyncpg is given, and no cursor or execution context.
    events = sync is not None and (sync._has_events or sync.engine._has_events)
    if events:
        assert sync is not None
        sync.dispatch.before_cursor_execute(sync, None, c.sql, tuple(args), None, False)
    raw = await conn.get_raw_connection()
    # SQLAlchemy's asyncpg adapter (private API, pinned by tests/storage/test_direct.py): its lock
    # against concurrent use, and its transaction, begun lazily by the first statement.
    adapter: Any = raw.dbapi_connection
    driver = raw.driver_connection
    assert driver is not None
    async with adapter._execute_mutex:
        try:
            if adapter._transaction is None:
                await adapter._start_transaction()  # nothing in AUTOCOMMIT
            if c.metadata is not None:
                records = await driver.fetch(c.sql, *args)
                rowcount = len(records)
            else:
                status = await driver.execute(c.sql, *args)
                count = status.rpartition(" ")[2]
                rowcount = int(count) if count.isdigit() else -1
        except Exception as error:
            await _raise_as_sqlalchemy(conn, adapter, c.sql, error)
            raise  # not reached: for the type checker
    if events:
        assert sync is not None
        sync.dispatch.after_cursor_execute(sync, None, c.sql, tuple(args), None, False)
    if c.metadata is None:
        return DirectResult(_NO_ROWS, [], rowcount)
    if c.results is None:
        rows = [tuple(r) for r in records]
    else:
        processors = c.results
        rows = [
            tuple(v if p is None else p(v) for v, p in zip(r, processors, strict=True))
            for r in records
        ]
    return DirectResult(c.metadata, rows, rowcount)


async def _raise_as_sqlalchemy(
    conn: AsyncConnection, adapter: Any, sql: str, error: Exception
) -> None:
    """Raise `error` as SQLAlchemy would have: the adapter's DB-API form wrapped in the
    matching `DBAPIError` subclass (IntegrityError, OperationalError, ...), parameters hidden
    (they may be sealed tokens); a lost connection is invalidated first, so the pool does not
    hand it out again. Anything not from the driver is raised as it is."""
    dialect = conn.dialect
    dbapi_error_class = dialect.loaded_dbapi.Error
    try:
        adapter._handle_exception(error)  # raises the DB-API form of a driver error
    except dbapi_error_class as dbapi_error:
        lost = dialect.is_disconnect(dbapi_error, adapter, None)
        if lost:
            await conn.invalidate()
        raise DBAPIError.instance(
            sql,
            None,
            dbapi_error,
            dbapi_error_class,
            hide_parameters=True,
            connection_invalidated=lost,
            dialect=dialect,
        ) from error
