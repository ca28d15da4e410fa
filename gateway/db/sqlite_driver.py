"""aiosqlite with one thread hop per statement, for SQLAlchemy's `sqlite+aiosqlite` dialect.

aiosqlite runs every call on the connection's own thread and hands the result back to the
event loop: each call is a hop (a queue put that wakes the thread, a self-pipe write that
wakes the loop). SQLAlchemy's adapter makes four calls per statement: create a cursor,
execute, fetch all rows, close the cursor. Around 80 microseconds of CPU each on the machines
here, which was most of what a simple read cost and the largest single item of a sync's CPU
(a calendar's first sync runs some thirty statements).

`OneHopConnection.cursor()` gives a cursor that does all four in one call on the thread: the
sqlite3 cursor is made, executed, drained and closed there, and the rows wait in memory for
SQLAlchemy to fetch them (it fetches every row of a non-streamed result at once anyway; the
gateway never streams from SQLite). A commit or rollback with no transaction open (after a
read, in sqlite3's transaction handling) takes no hop at all. Everything else (the
transactions themselves, the raw bulk path of `gateway.db.bulk`) is aiosqlite's own.

A bulk write (`gateway.db.bulk.write_bulk(..., with_next=True)`) can also wait for the
transaction's next statement and run in its hop (`defer_batch`): a calendar's rows, then the
statement that switches the calendar to them and the COMMIT, in one hop instead of two, each of
which held the writer while the event loop came round to its answer (a third of a full sync's
writer time in the 1,000-calendar bench). An error of the deferred statements is then raised
by that next statement.

A write transaction's COMMIT is a hop of its own, and SQLite's one writer is held until it
comes back: on a busy event loop each hop waits for the loop's turn (milliseconds). The hot
transactions therefore mark their last statement (`gateway.db.transactions.commit_if_changed`):
it commits on the thread, in its own hop, when it changed a row, and SQLAlchemy's COMMIT
after it finds nothing to do. When it changed nothing the transaction stays open, so the
caller may still roll it back (a switch that found no calendar).

When that statement is the whole transaction (nothing open before it, nothing deferred into
its hop: a claim, a channel's state, a sync request), it runs alone in SQLite's autocommit:
its own transaction, without sqlite3's BEGIN and COMMIT. Each of those is three calls into
SQLite (prepare, step, finalize), and before each the thread gives up Python's GIL and must win
it back from the busy event loop afterwards while it holds the one writer: with a busy loop a
one-row UPDATE between BEGIN and COMMIT took 2.5-3.5 ms of writer for 0.3 ms of work (the
1,000-calendar sync bench), and alone a third to half of that (a busy thread beside it, stdlib
sqlite3). What it changed is committed when it finishes, as the COMMIT would have; if it
changed nothing there is nothing to roll back either.

Such a statement takes no writer turn of its own either ("together"): SQLite's one writer is
handed from one write transaction to the next through the event loop, and that handover held
the writer 2-3 ms around each one-row statement's fraction of a millisecond while a first sync
of many calendars kept the loop busy (four such statements per new calendar, a third of the
writer's time). `gateway.db.sqlite_writer` gathers the ones that arrive while the writer is
busy, and when their turn comes the first of them runs them all on its connection's thread, in
one hop and one transaction (`run_together`). Each still commits or fails as it would alone: a
failing statement is undone by SQLite without touching the others, and its caller gets its
error. Only a failure of the shared transaction itself (a full disk, an I/O error, or a key
checked at COMMIT, which the gateway's schema does not have) fails them all, and then nothing
of them is stored: no caller is ever told its statement committed when it did not.

Installed by `gateway.db.engine.create_engine` (`connect_args={"async_creator_fn": connect}`:
the aiosqlite dialect calls it with the arguments it would give `aiosqlite.connect`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

_Description = tuple[tuple[str, None, None, None, None, None, None], ...] | None
_Outcome = tuple[list[Any], _Description, int, int | None]
# A statement run together with others' (`run_together`): its outcome, and whether it changed
# a row.
Together = tuple[_Outcome, bool]
# Runs a statement that is its transaction's whole together with other callers' (set by
# gateway.db.sqlite_writer.install: the writer's turn is what they share).
RunTogether = Callable[["OneHopConnection", str, Any], Awaitable[Together]]


def _run(
    connection: sqlite3.Connection,
    sql: str,
    parameters: Any,
    many: bool,
    commit: bool = False,
    unchanged_at: int | None = None,
    before: Sequence[tuple[str, Any]] = (),
) -> _Outcome:
    """On the connection's thread: the statements `before` (deferred, `defer_batch`), then one
    statement from cursor to closed cursor. With `commit`, then the transaction's COMMIT if
    that statement changed a row, or if nothing in the transaction did (`total_changes` still
    `unchanged_at`: a commit is then the same as a rollback); see `commit_if_changed`."""
    if before:
        _run_batch(connection, before)
    # A transaction of this one statement (module doc: "alone"): SQLite's autocommit makes it
    # its own transaction, without sqlite3's BEGIN and COMMIT around it.
    level = connection.isolation_level
    alone = commit and not many and level is not None and not connection.in_transaction
    if alone:
        connection.isolation_level = None  # nothing is open: this commits nothing
    changes = connection.total_changes
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        outcome = rows, description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()
        if alone:
            connection.isolation_level = level
    if commit and connection.in_transaction:
        total = connection.total_changes
        if total != changes or total == unchanged_at:
            connection.commit()
    return outcome


def _run_together(
    connection: sqlite3.Connection, statements: Sequence[tuple[str, Any]]
) -> list[Together | Exception]:
    """On the connection's thread: statements of several callers, each its transaction's
    whole (module doc: "together"), in ONE transaction; per statement its outcome and whether
    it changed a row, or its error. A failing statement leaves nothing (SQLite undoes a
    failed statement by itself) and the others commit; if SQLite ended the whole transaction
    instead (a full disk, an I/O error) or the COMMIT fails, every statement fails with it."""
    if len(statements) == 1:  # as before: alone, in SQLite's autocommit
        (sql, parameters), changes = statements[0], connection.total_changes
        try:
            outcome = _run(connection, sql, parameters, False, True)
        except Exception as error:
            return [error]
        return [(outcome, connection.total_changes != changes)]
    level = connection.isolation_level
    connection.isolation_level = None  # our own BEGIN and COMMIT, one of each for all
    results: list[Together | Exception] = []
    try:
        connection.execute("BEGIN")
        for sql, parameters in statements:
            changes = connection.total_changes
            try:
                outcome = _run(connection, sql, parameters, False)
            except Exception as error:
                if not connection.in_transaction:
                    raise  # SQLite rolled back what the others wrote too
                results.append(error)
            else:
                results.append((outcome, connection.total_changes != changes))
        connection.execute("COMMIT")
    except Exception:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    finally:
        connection.isolation_level = level
    return results


def _run_batch(connection: sqlite3.Connection, statements: Sequence[tuple[str, Any]]) -> None:
    """On the connection's thread: each (statement, parameters), in order."""
    cursor = connection.cursor()
    try:
        for sql, parameters in statements:
            cursor.execute(sql, parameters)
    finally:
        cursor.close()


class OneHopCursor:
    """The cursor SQLAlchemy's adapter uses (see the module doc): `execute` is the only hop."""

    arraysize = 1

    def __init__(self, connection: OneHopConnection) -> None:
        self._connection = connection
        self._rows: deque[Any] = deque()
        self.description: _Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> OneHopCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _run(self, sql: str, parameters: Any, *, many: bool) -> OneHopCursor:
        connection = self._connection
        if connection.committed_early:
            # SQLAlchemy still holds the transaction open, but its COMMIT went already: this
            # statement would run outside it. A bug in the caller, never to be let through.
            raise RuntimeError("a statement after the one its transaction committed with")
        together = connection.together if connection.runs_alone(many=many) else None
        commit, connection.commit_with_next = connection.commit_with_next, False
        raw = connection._conn
        if not raw.in_transaction:
            # Nothing runs on this connection's thread meanwhile (statements are awaited one
            # after the other): reading here is safe.
            connection.unchanged_at = raw.total_changes
        if together is not None:
            # Alone, with whatever other callers' statements wait for the writer with it.
            (rows, self.description, self.rowcount, self.lastrowid), changed = await together(
                connection, sql, parameters
            )
            connection.committed_early = True
            connection.committed_changes = changed
            self._rows = deque(rows)
            return self
        before = connection.take_deferred()
        outcome: _Outcome = await connection._execute(  # type: ignore[no-untyped-call]
            _run, raw, sql, parameters, many, commit, connection.unchanged_at, before
        )
        if commit and not raw.in_transaction:
            connection.committed_early = True
            connection.committed_changes = raw.total_changes != connection.unchanged_at
        rows, self.description, self.rowcount, self.lastrowid = outcome
        self._rows = deque(rows)
        return self

    async def execute(self, sql: str, parameters: Any = None) -> OneHopCursor:
        return await self._run(sql, parameters, many=False)

    async def executemany(self, sql: str, parameters: Any) -> OneHopCursor:
        return await self._run(sql, parameters, many=True)

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        count = min(self.arraysize if size is None else size, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> Sequence[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def close(self) -> None:
        self._rows.clear()


class OneHopConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors run a statement in one hop (module doc)."""

    # Set by `commit_if_changed` (gateway.db.transactions): the next statement commits the
    # transaction in its own hop if it changes a row; `committed_early` says it did, until
    # SQLAlchemy's own commit (or rollback) comes, which then has nothing left to do.
    commit_with_next = False
    committed_early = False
    committed_changes = False
    # sqlite3's `total_changes` when the current transaction began.
    unchanged_at: int | None = None
    # Statements waiting for the next one's hop (`defer_batch`).
    _deferred: tuple[tuple[str, Any], ...] = ()
    # Where a statement that is its transaction's whole goes (module doc: "together"); None:
    # alone on this connection.
    together: RunTogether | None = None

    def runs_alone(self, *, many: bool = False) -> bool:
        """Whether the next statement is its transaction's whole (module doc: "alone"): its
        transaction's last (`commit_if_changed`), nothing open or deferred before it, one set
        of values. It then takes no writer turn of its own (gateway.db.sqlite_writer)."""
        return (
            self.commit_with_next
            and not many
            and not self._deferred
            and not self.committed_early
            and self._conn.isolation_level is not None
            and not self._conn.in_transaction
        )

    async def run_together(
        self, statements: Sequence[tuple[str, Any]]
    ) -> list[Together | Exception]:
        """Statements of several callers, each its transaction's whole, in one transaction
        and one hop on this connection's thread (`_run_together`)."""
        results: list[Together | Exception] = await self._execute(  # type: ignore[no-untyped-call]
            _run_together, self._conn, statements
        )
        return results

    def cursor(self) -> OneHopCursor:  # type: ignore[override]
        return OneHopCursor(self)

    async def execute_batch(self, statements: Sequence[tuple[str, Any]]) -> None:
        """Several statements (SQL, parameters) in one hop (gateway.db.bulk's writes), after
        any deferred ones."""
        statements = (*self.take_deferred(), *statements)
        if not statements:
            return
        if not self._conn.in_transaction:
            self.unchanged_at = self._conn.total_changes
        await self._execute(_run_batch, self._conn, statements)  # type: ignore[no-untyped-call]

    def defer_batch(self, statements: Sequence[tuple[str, Any]]) -> None:
        """Run `statements` in the hop of this connection's next statement, before it (module
        doc); the transaction's commit runs them if no statement comes, its rollback drops
        them. The caller holds the writer already (`gateway.db.sqlite_writer.claim_write`)."""
        if self.committed_early:
            raise RuntimeError("a statement after the one its transaction committed with")
        self._deferred = (*self._deferred, *statements)

    def take_deferred(self) -> tuple[tuple[str, Any], ...]:
        """The deferred statements, now to run (none are left behind)."""
        deferred, self._deferred = self._deferred, ()
        return deferred

    # sqlite3's commit and rollback do nothing outside a transaction (they look at the same
    # flag first); looking here saves the hop. SQLAlchemy rolls back every connection it gets
    # back from a read, and nothing else runs on this connection's thread meanwhile: its
    # statements are awaited one after the other.
    async def commit(self) -> None:
        self.commit_with_next = self.committed_early = False
        if self._deferred:
            await self.execute_batch(())
        if self._conn.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
        self.commit_with_next = False
        self._deferred = ()
        if self.committed_early and self.committed_changes:
            # Something failed after the transaction's last statement had committed it (a
            # cancellation while its answer came back, as with a COMMIT of its own).
            log.warning("rollback after the transaction had committed with its last statement")
        self.committed_early = False
        if self._conn.in_transaction:
            await super().rollback()


def connect(database: str, *, iter_chunk_size: int = 64, **kwargs: Any) -> OneHopConnection:
    """What `aiosqlite.connect` does, with `OneHopConnection`."""

    def connector() -> sqlite3.Connection:
        opened: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return opened

    connection = OneHopConnection(connector, iter_chunk_size)
    # As SQLAlchemy does for aiosqlite's own: a forgotten connection must not keep the
    # process alive.
    connection._thread.daemon = True
    return connection
