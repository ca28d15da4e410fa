"""One writer at a time on a SQLite engine, queued in order, instead of SQLite's busy handler.

    install(engine)                       # gateway.db.engine does it for every SQLite engine
    await claim_write(conn)               # before a write that bypasses SQLAlchemy (bulk.py)

SQLite lets one connection write at a time. A second writer waits in the busy handler, which
sleeps between tries (1, 2, 5, ... then 100 ms at a time) and serves nobody in order: with a
few writers at once (a push notification's sync request, the scheduler's claim, a sync's delta,
its release) the unlucky one waited over a second while the file was free most of that time.
That was most of the push-to-visible lag on SQLite.

So every pooled connection of the engine takes this process's writer lock (an asyncio.Lock, FIFO)
before the first statement of a transaction that writes, and gives it back right after that
transaction ends (commit, rollback, or the connection closed or invalidated). A writer then
starts the moment the previous one committed. What counts as the first write is what makes
Python's sqlite3 open its transaction: an INSERT, UPDATE, DELETE or REPLACE (its legacy
transaction control runs a read before that in autocommit, so reads take no lock and run beside
the writer, as WAL allows). Other statements (DDL, PRAGMA) and other programs writing the file
(the CLI beside `serve`) still meet the busy handler, as before.

A transaction that is one statement alone (`gateway.db.sqlite_driver.OneHopConnection
.runs_alone`: a claim, a channel's state, a sync request) takes no turn of its own: the ones that
arrive while the writer is busy form a group, the first of them waits for the turn, and when it
comes runs them all in one transaction and one hop (`WriterQueue.together`). The turn's
handover through the event loop cost each of them more writer time than its own work did. A
group is one turn in the counts below; `grouped` counts the statements that rode along.

A task that holds a write transaction on one connection and writes on a second one would wait
for itself; SQLite would have refused that after its busy timeout, and so does this, with the
same error ("database is locked") after `timeout_s`.

The queue also counts, for `GET /metrics`, how long the writer was held and how long writers
waited for it: SQLite's one writer is the embedded deployment's limit, and the share of time it
is held says how close a process is to it (a first sync of many calendars holds it nearly all
the time; see docs/operations.md for when to move to PostgreSQL).
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import await_only

from gateway.db.sqlite_driver import OneHopConnection, Together

# The statements that make sqlite3 BEGIN (Modules/_sqlite: `is_dml`), after comments and space.
_DML = re.compile(r"(?:\s|--[^\n]*\n|/\*.*?\*/)*(?:INSERT|UPDATE|DELETE|REPLACE)\b", re.I | re.S)


def is_write(statement: str) -> bool:
    """Whether `statement` opens sqlite3's implicit transaction (a DML statement)."""
    return _DML.match(statement) is not None


class WriterQueue:
    """The writer lock of one engine in this process, and which connections hold it."""

    def __init__(self, timeout_s: float, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        # Totals since start, for /metrics: seconds the lock was held, seconds writers waited
        # for it, and the write transactions that held it.
        self.held_s = 0.0
        self.waited_s = 0.0
        self.transactions = 0
        # Statements that committed in another statement's turn (`together`).
        self.grouped = 0
        # Called when a writer starts waiting for its turn (tests follow the queue with it).
        self.on_wait: Callable[[], None] | None = None
        # Per event loop, the group of lone statements waiting for the writer (`together`).
        self._forming: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Lone]] = (
            weakref.WeakKeyDictionary()
        )
        # One lock per event loop (an asyncio.Lock belongs to the loop it first waited in; tests
        # may use one engine from several loops, one after the other).
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        # DBAPI connection -> the lock it holds (for the length of its write transaction) and
        # when it got it.
        self._holders: dict[int, tuple[asyncio.Lock, float]] = {}

    def __repr__(self) -> str:
        return f"WriterQueue(holders={len(self._holders)})"

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    def holds(self, dbapi_connection: Any) -> bool:
        return id(dbapi_connection) in self._holders

    async def acquire(self, dbapi_connection: Any) -> None:
        """Take the lock for `dbapi_connection` unless it holds it already."""
        key = id(dbapi_connection)
        if key in self._holders:
            return
        lock = self._lock()
        if lock.locked() and self.on_wait is not None:
            self.on_wait()
        began = self.clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                await lock.acquire()
        except TimeoutError:
            self.waited_s += self.clock() - began
            raise _locked() from None
        got = self.clock()
        self.waited_s += got - began
        self._holders[key] = (lock, got)

    def release(self, dbapi_connection: Any) -> None:
        held = self._holders.pop(id(dbapi_connection), None)
        if held is None:
            return
        lock, got = held
        self.held_s += self.clock() - got
        self.transactions += 1
        if lock.locked():
            lock.release()

    async def together(
        self, driver: OneHopConnection, sql: str, parameters: Any, *, holder: int
    ) -> Together:
        """Run `sql`, a statement that is its transaction's whole, in a turn of the writer
        shared with the others that wait meanwhile (module doc): the first to come leads the
        group, the others join it and get their outcome (or error) from the leader's hop.
        `holder`: the key its connection holds the writer by, if it does (`claim_write` before
        any write): it then runs at once, in the turn it has."""
        if holder in self._holders:
            (outcome,) = await driver.run_together([(sql, parameters)])
            return _answer(outcome)
        loop = asyncio.get_running_loop()
        mine = _Lone(sql, parameters, loop.create_future())
        group = self._forming.get(loop)
        if group is None:
            group = self._forming[loop] = [mine]
        else:
            group.append(mine)
            if self.on_wait is not None:
                self.on_wait()
            began = self.clock()
            try:
                answer = await mine.future
            except asyncio.CancelledError:
                future = mine.future
                if future.done() and not future.cancelled() and future.result() is _LEAD:
                    # The lead came as it was cancelled: it goes on to the next.
                    self._give_up(loop, group, mine, cancelled=True)
                raise
            finally:
                self.waited_s += self.clock() - began
            if answer is not _LEAD:
                together: Together = answer
                return together
        return await self._lead(driver, loop, group, mine)

    async def _lead(
        self,
        driver: OneHopConnection,
        loop: asyncio.AbstractEventLoop,
        group: list[_Lone],
        mine: _Lone,
    ) -> Together:
        """Wait for the writer's turn, then run the group on `driver` in one hop."""
        # The turn's own key, not the connection: a leader cancelled while its hop runs gives
        # its connection back to the pool, and the next leader on it must wait for this turn.
        turn = object()
        try:
            await self.acquire(turn)
        except BaseException as error:
            self._give_up(loop, group, mine, cancelled=isinstance(error, asyncio.CancelledError))
            raise
        if self._forming.get(loop) is group:
            del self._forming[loop]  # those that come from now on wait for the next turn
        # Leaving out those that gave up waiting (cancelled) before the turn came.
        batch = [lone for lone in group if lone is mine or not lone.future.done()]
        self.grouped += len(batch) - 1
        hop = asyncio.ensure_future(driver.run_together([(b.sql, b.parameters) for b in batch]))

        def finish(done: asyncio.Future[list[Together | Exception]]) -> None:
            # Here, not after the await below: the leader may be cancelled while the hop runs,
            # and the turn and the others' answers must not wait for it.
            self.release(turn)
            others = [(i, lone) for i, lone in enumerate(batch) if lone is not mine]
            for i, lone in others:
                if lone.future.done():
                    continue  # it stopped waiting (cancelled) while the hop ran
                if done.cancelled():
                    lone.future.cancel()
                elif (failed := done.exception()) is not None:
                    lone.future.set_exception(failed)  # the whole transaction failed
                elif isinstance(result := done.result()[i], Exception):
                    lone.future.set_exception(result)
                else:
                    lone.future.set_result(result)

        hop.add_done_callback(finish)
        return _answer((await asyncio.shield(hop))[batch.index(mine)])

    def _give_up(
        self, loop: asyncio.AbstractEventLoop, group: list[_Lone], mine: _Lone, *, cancelled: bool
    ) -> None:
        """The group's leader stops waiting for the turn. Cancelled: the next one still
        waiting leads in its place (no group may be left without a leader: every lone write
        after it would join it and wait forever). Else the turn did not come within the busy
        timeout (the one failure `acquire` raises): none for the others either, and each gets
        SQLite's error of its own."""
        group.remove(mine)
        waiting = [lone for lone in group if not lone.future.done()]
        if cancelled and waiting:
            waiting[0].future.set_result(_LEAD)
            return
        if self._forming.get(loop) is group:
            del self._forming[loop]
        if not cancelled:
            for lone in waiting:
                lone.future.set_exception(_locked())


@dataclass(eq=False)
class _Lone:
    """A statement that is its transaction's whole, waiting in a group for the writer."""

    sql: str
    parameters: Any
    # Its outcome from the leader's hop; or `_LEAD`: the leader gave up, this one leads now.
    future: asyncio.Future[Any]


_LEAD = object()


def _answer(result: Together | Exception) -> Together:
    """A statement's outcome from `run_together`, or its error raised."""
    if isinstance(result, Exception):
        raise result
    return result


def _locked() -> OperationalError:
    """What SQLite raises when its busy timeout passes, as SQLAlchemy wraps it."""
    return OperationalError("(writer queue)", None, sqlite3.OperationalError("database is locked"))


_QUEUES: weakref.WeakKeyDictionary[Engine, WriterQueue] = weakref.WeakKeyDictionary()


def _dbapi(connection: Any) -> Any:
    # The pool hands the dialect its proxy (a _ConnectionFairy); events get the bare connection.
    return getattr(connection, "dbapi_connection", connection)


def install(engine: AsyncEngine, *, timeout_s: float) -> WriterQueue:
    """Queue the writers of `engine` (a SQLite engine) in this process (see the module doc)."""
    sync = engine.sync_engine
    found = _QUEUES.get(sync)
    if found is not None:
        return found
    queue = _QUEUES[sync] = WriterQueue(timeout_s)
    dialect = sync.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def before_execute(
        conn: Connection,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        executemany: bool,
    ) -> None:
        fairy = conn.connection
        dbapi = _dbapi(fairy)
        if queue.holds(dbapi) or not is_write(statement):
            return
        driver = fairy.driver_connection
        if isinstance(driver, OneHopConnection) and driver.runs_alone(many=executemany):
            return  # it waits for the writer in a group (`WriterQueue.together`)
        # Runs in SQLAlchemy's greenlet on the event loop: await_only waits there.
        await_only(queue.acquire(dbapi))

    def connected(dbapi_connection: Any, record: Any) -> None:
        driver = record.driver_connection
        if isinstance(driver, OneHopConnection):
            driver.together = functools.partial(queue.together, holder=id(dbapi_connection))

    def do_commit(connection: Any) -> None:
        try:
            commit(connection)
        finally:
            queue.release(_dbapi(connection))

    def do_rollback(connection: Any) -> None:
        try:
            rollback(connection)
        finally:
            queue.release(_dbapi(connection))

    def gone(dbapi_connection: Any, *_args: Any) -> None:
        queue.release(dbapi_connection)

    # Instance attributes shadow the dialect's methods for this engine only.
    dialect.do_commit = do_commit  # type: ignore[method-assign, assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign, assignment]
    event.listen(sync, "before_cursor_execute", before_execute)
    event.listen(sync.pool, "connect", connected)
    for name in ("close", "invalidate", "soft_invalidate", "close_detached"):
        event.listen(sync.pool, name, gone)
    return queue


def writer_queue(engine: AsyncEngine) -> WriterQueue | None:
    """The queue `install` gave `engine`, if any."""
    return _QUEUES.get(engine.sync_engine)


async def claim_write(conn: AsyncConnection) -> None:
    """Take the writer lock for `conn` before writing through its raw driver connection (which
    SQLAlchemy's events do not see); nothing for an engine without a queue."""
    queue = _QUEUES.get(conn.engine.sync_engine)
    if queue is not None:
        raw = await conn.get_raw_connection()
        await queue.acquire(raw.dbapi_connection)
