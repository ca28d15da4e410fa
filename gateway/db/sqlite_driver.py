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

Installed by `gateway.db.engine.create_engine` (`connect_args={"async_creator_fn": connect}`:
the aiosqlite dialect calls it with the arguments it would give `aiosqlite.connect`).
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Sequence
from typing import Any

import aiosqlite

_Description = tuple[tuple[str, None, None, None, None, None, None], ...] | None
_Outcome = tuple[list[Any], _Description, int, int | None]


def _run(connection: sqlite3.Connection, sql: str, parameters: Any, many: bool) -> _Outcome:
    """On the connection's thread: one statement from cursor to closed cursor."""
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
        return rows, description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


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
        outcome: _Outcome = await self._connection._execute(  # type: ignore[no-untyped-call]
            _run, self._connection._conn, sql, parameters, many
        )
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

    def cursor(self) -> OneHopCursor:  # type: ignore[override]
        return OneHopCursor(self)

    async def execute_batch(self, statements: Sequence[tuple[str, Any]]) -> None:
        """Several statements (SQL, parameters) in one hop (gateway.db.bulk's writes)."""
        await self._execute(_run_batch, self._conn, statements)  # type: ignore[no-untyped-call]

    # sqlite3's commit and rollback do nothing outside a transaction (they look at the same
    # flag first); looking here saves the hop. SQLAlchemy rolls back every connection it gets
    # back from a read, and nothing else runs on this connection's thread meanwhile: its
    # statements are awaited one after the other.
    async def commit(self) -> None:
        if self._conn.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
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
