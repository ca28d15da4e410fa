"""SQLite writers of one process take turns in arrival order (gateway.db.sqlite_writer): each
starts when the one before it has committed or rolled back, readers never wait, and a failed
transaction does not keep the others out. The turns are followed through the queue's wait hook,
never through time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.bulk import insert_rows
from gateway.db.engine import create_engine
from gateway.db.sqlite_writer import WriterQueue, claim_write, is_write, writer_queue
from gateway.db.transactions import commit_if_changed

# Only a guard against hanging forever if a turn is never given: never waited for otherwise.
DEADLOCK_GUARD_S = 60

metadata = MetaData()
notes = Table("notes", metadata, Column("id", Integer, primary_key=True), Column("who", String))
# A key checked only at COMMIT (the gateway's schema has none): the one way a statement can fail
# a shared turn's whole transaction without a full disk or an I/O error.
parents = Table("parents", metadata, Column("id", Integer, primary_key=True))
children = Table(
    "children",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("parent_id", Integer, ForeignKey("parents.id", deferrable=True, initially="DEFERRED")),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = await create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    async with eng.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield eng
    finally:
        await eng.dispose()


def queue_of(engine: AsyncEngine) -> WriterQueue:
    queue = writer_queue(engine)
    assert queue is not None
    return queue


class Turns:
    """Follows the writers that start waiting for their turn (the queue's hook)."""

    def __init__(self, queue: WriterQueue) -> None:
        self.waited = 0
        self._changed = asyncio.Event()
        queue.on_wait = self._on_wait

    def _on_wait(self) -> None:
        self.waited += 1
        self._changed.set()

    async def until(self, count: int) -> None:
        """Until `count` writers have queued (each is in the queue once its task yields)."""
        while self.waited < count:
            self._changed.clear()
            await self._changed.wait()


async def hold_writer(engine: AsyncEngine, finish: asyncio.Event) -> asyncio.Task[None]:
    """A writer whose transaction (its note "first") holds the writer until `finish` is set;
    returns once it holds it."""
    holding = asyncio.Event()

    async def first() -> None:
        async with engine.begin() as conn:
            await conn.execute(insert(notes).values(who="first"))
            holding.set()
            await finish.wait()

    holder = asyncio.create_task(first())
    await holding.wait()
    return holder


async def count_notes(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(notes))).scalar_one())


async def test_writers_take_turns_in_arrival_order_while_readers_go_on(
    engine: AsyncEngine,
) -> None:
    turns = Turns(queue_of(engine))
    finish = asyncio.Event()
    seen: list[tuple[str, int]] = []  # (writer, rows it saw committed before its own)

    async def writer(name: str) -> None:
        async with engine.begin() as conn:
            await conn.execute(insert(notes).values(who=name))
            before = await conn.execute(select(func.count()).select_from(notes))
            seen.append((name, int(before.scalar_one()) - 1))

    holder = await hold_writer(engine, finish)
    second = asyncio.create_task(writer("second"))
    await turns.until(1)
    third = asyncio.create_task(writer("third"))
    await turns.until(2)
    # A reader does not queue behind the open write transaction (WAL): it sees the last commit.
    assert await asyncio.wait_for(count_notes(engine), DEADLOCK_GUARD_S) == 0
    assert seen == []
    finish.set()
    await asyncio.wait_for(asyncio.gather(holder, second, third), DEADLOCK_GUARD_S)
    assert seen == [("second", 1), ("third", 2)]


async def test_the_queue_counts_how_long_the_writer_was_held_and_waited_for(
    engine: AsyncEngine,
) -> None:
    """What /metrics reports (gateway_sqlite_writer_*): on an injected clock, a writer that
    holds the lock 3 s while a second one waits gives 3 s held and 3 s waited over two write
    transactions; reads count nothing."""
    queue = queue_of(engine)
    now = [10.0]
    queue.clock = lambda: now[0]
    turns = Turns(queue)
    finish = asyncio.Event()

    async def second() -> None:
        async with engine.begin() as conn:
            await conn.execute(insert(notes).values(who="second"))

    holder = await hold_writer(engine, finish)
    waiting = asyncio.create_task(second())
    await turns.until(1)
    now[0] = 13.0
    finish.set()
    await asyncio.wait_for(asyncio.gather(holder, waiting), DEADLOCK_GUARD_S)
    assert await count_notes(engine) == 2
    assert (queue.held_s, queue.waited_s, queue.transactions) == (3.0, 3.0, 2)


async def test_a_rolled_back_writer_gives_up_its_turn(engine: AsyncEngine) -> None:
    turns = Turns(queue_of(engine))
    holding, fail = asyncio.Event(), asyncio.Event()

    async def failing() -> None:
        async with engine.begin() as conn:
            await conn.execute(insert(notes).values(who="lost"))
            holding.set()
            await fail.wait()
            raise RuntimeError("the caller's own failure")

    holder = asyncio.create_task(failing())
    await holding.wait()

    async def next_writer() -> None:
        async with engine.begin() as conn:
            await conn.execute(insert(notes).values(who="kept"))

    waiting = asyncio.create_task(next_writer())
    await turns.until(1)
    fail.set()
    with pytest.raises(RuntimeError):
        await holder
    await asyncio.wait_for(waiting, DEADLOCK_GUARD_S)
    async with engine.connect() as conn:
        assert list((await conn.execute(select(notes.c.who))).scalars()) == ["kept"]


async def test_bulk_rows_through_the_raw_driver_wait_their_turn_too(engine: AsyncEngine) -> None:
    turns = Turns(queue_of(engine))
    finish = asyncio.Event()

    async def bulk() -> None:
        async with engine.begin() as conn:
            await insert_rows(conn, notes, ("id", "who"), [(10, "bulk"), (11, "bulk")])

    first = await hold_writer(engine, finish)
    second = asyncio.create_task(bulk())
    await turns.until(1)
    finish.set()
    await asyncio.wait_for(asyncio.gather(first, second), DEADLOCK_GUARD_S)
    assert await count_notes(engine) == 3


async def test_a_writer_that_never_gets_its_turn_fails_as_sqlite_would(
    engine: AsyncEngine,
) -> None:
    queue = queue_of(engine)
    finish = asyncio.Event()

    first = await hold_writer(engine, finish)
    queue.timeout_s = 0  # give up at once instead of after the busy timeout
    with pytest.raises(OperationalError, match="database is locked"):
        async with engine.begin() as conn:
            await conn.execute(insert(notes).values(who="second"))
    finish.set()
    await first
    assert await count_notes(engine) == 1


async def lone_write(engine: AsyncEngine, who: str, *, note_id: int | None = None) -> None:
    """A transaction that is one statement alone (its last, `commit_if_changed`)."""
    values = {"who": who} if note_id is None else {"id": note_id, "who": who}
    async with engine.begin() as conn:
        await commit_if_changed(conn, insert(notes).values(**values))


async def in_line(turns: Turns, *writes: Coroutine[Any, Any, None]) -> list[asyncio.Task[None]]:
    """Start `writes` one after the other, each once the one before waits for the writer
    (joined a group or waits for its turn): they queue in this order."""
    tasks = []
    for write in writes:
        queued = turns.waited + 1
        tasks.append(asyncio.create_task(write))
        await turns.until(queued)
    return tasks


async def whos(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(notes.c.who).order_by(notes.c.id))).scalars())


async def test_lone_statements_that_wait_for_the_writer_commit_together_in_one_turn(
    engine: AsyncEngine,
) -> None:
    """Three one-statement transactions that arrive while the writer is held take ONE turn
    after it (the handover of a turn cost each more writer time than its own work), and each
    is committed when its caller gets its answer."""
    queue = queue_of(engine)
    turns = Turns(queue)
    finish = asyncio.Event()
    holder = await hold_writer(engine, finish)
    before = queue.transactions
    # The first waits for the turn, the other two join it.
    lone = await in_line(turns, *(lone_write(engine, who) for who in ("a", "b", "c")))
    finish.set()
    await asyncio.wait_for(asyncio.gather(holder, *lone), DEADLOCK_GUARD_S)
    assert sorted(await whos(engine)) == ["a", "b", "c", "first"]
    assert (queue.transactions - before, queue.grouped) == (2, 2)  # the holder's, the group's


async def test_a_failing_statement_of_a_group_fails_alone(engine: AsyncEngine) -> None:
    """A statement that fails in a shared turn (a duplicate key) fails for its caller only:
    nothing of it is stored and the others' statements before and after it commit."""
    queue = queue_of(engine)
    turns = Turns(queue)
    finish = asyncio.Event()
    holder = await hold_writer(engine, finish)  # its note takes id 1
    first, duplicate, last = await in_line(
        turns,
        lone_write(engine, "a"),
        lone_write(engine, "dup", note_id=1),
        lone_write(engine, "c"),
    )
    finish.set()
    await asyncio.wait_for(asyncio.gather(holder, first, last), DEADLOCK_GUARD_S)
    with pytest.raises(IntegrityError):
        await duplicate
    assert await whos(engine) == ["first", "a", "c"]
    assert queue.grouped == 2


async def test_a_lone_statement_on_a_connection_that_holds_the_writer_runs_in_its_turn(
    engine: AsyncEngine,
) -> None:
    """A transaction that took the writer for the raw driver (`claim_write`) and then writes
    only its last statement does not wait in a group for the turn it holds already."""
    queue = queue_of(engine)
    queue.timeout_s = 0  # waiting for itself would fail at once instead of after 10 s
    async with engine.begin() as conn:
        await claim_write(conn)
        await commit_if_changed(conn, insert(notes).values(who="claimed"))
    assert await whos(engine) == ["claimed"]
    assert queue.grouped == 0


async def test_a_group_whose_commit_fails_stores_nothing_and_tells_every_caller(
    engine: AsyncEngine,
) -> None:
    """When the shared transaction itself fails (here its COMMIT, on a key checked only then),
    no caller is told its statement committed: each gets the error, nothing of the group is
    stored, and the writer is free for the next write."""
    turns = Turns(queue_of(engine))
    finish = asyncio.Event()
    holder = await hold_writer(engine, finish)

    async def orphan() -> None:
        async with engine.begin() as conn:
            await commit_if_changed(conn, insert(children).values(parent_id=99))

    first, second = await in_line(turns, lone_write(engine, "a"), orphan())
    finish.set()
    await asyncio.wait_for(holder, DEADLOCK_GUARD_S)
    for task in (first, second):
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            await asyncio.wait_for(task, DEADLOCK_GUARD_S)
    await lone_write(engine, "after")
    assert await whos(engine) == ["first", "after"]
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(children))).scalar() == 0


async def test_a_group_goes_on_when_its_first_caller_gives_up(engine: AsyncEngine) -> None:
    """The statement that waits for the group's turn is cancelled: the next in the group
    waits in its place, and a caller that gave up before the turn leaves nothing stored."""
    turns = Turns(queue_of(engine))
    finish = asyncio.Event()
    holder = await hold_writer(engine, finish)
    leader, second, third = await in_line(
        turns, *(lone_write(engine, who) for who in ("leader", "second", "third"))
    )
    leader.cancel()
    third.cancel()
    finish.set()
    await asyncio.wait_for(asyncio.gather(holder, second), DEADLOCK_GUARD_S)
    for gone in (leader, third):
        with pytest.raises(asyncio.CancelledError):
            await gone
    assert await whos(engine) == ["first", "second"]


async def test_a_group_goes_on_when_the_lead_is_handed_to_a_caller_being_cancelled(
    engine: AsyncEngine,
) -> None:
    """The leader is cancelled and hands the lead to the next caller, which is cancelled too
    before it could take it: the lead goes on to the third, whose write commits, and the lone
    writes after it are not left waiting in a group without a leader."""
    turns = Turns(queue_of(engine))
    finish = asyncio.Event()
    holder = await hold_writer(engine, finish)
    leader, second, third = await in_line(
        turns, *(lone_write(engine, who) for who in ("leader", "second", "third"))
    )
    leader.cancel()
    # The ready queue is FIFO: the leader's cancellation runs (it hands the lead to the second
    # caller, whose wake-up is queued) before this task resumes, and the second caller's
    # cancellation then lands before that wake-up runs.
    await asyncio.sleep(0)
    second.cancel()
    finish.set()
    await asyncio.wait_for(asyncio.gather(holder, third), DEADLOCK_GUARD_S)
    for gone in (leader, second):
        with pytest.raises(asyncio.CancelledError):
            await gone
    await asyncio.wait_for(lone_write(engine, "after"), DEADLOCK_GUARD_S)
    assert await whos(engine) == ["first", "third", "after"]


async def test_a_group_that_gets_no_turn_fails_as_sqlite_would(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No turn within the busy timeout for the group's first caller: every caller in the group
    gets SQLite's "database is locked", and the next write works."""
    queue = queue_of(engine)
    turns = Turns(queue)
    finish, timed_out = asyncio.Event(), asyncio.Event()
    holder = await hold_writer(engine, finish)
    original = queue.acquire

    async def no_turn(dbapi_connection: object) -> None:
        await timed_out.wait()  # the busy timeout, made explicit
        queue.timeout_s = 0
        await original(dbapi_connection)

    monkeypatch.setattr(queue, "acquire", no_turn)
    lone = [asyncio.create_task(lone_write(engine, who)) for who in ("a", "b")]
    await turns.until(1)  # the second joined the first (whose patched wait calls no hook)
    timed_out.set()
    for task in lone:
        with pytest.raises(OperationalError, match="database is locked"):
            await asyncio.wait_for(task, DEADLOCK_GUARD_S)
    monkeypatch.undo()
    finish.set()
    await holder
    await lone_write(engine, "after")
    assert await whos(engine) == ["first", "after"]


@pytest.mark.parametrize(
    ("statement", "writes"),
    [
        ("INSERT INTO t VALUES (1)", True),
        ("  update t set a = 1", True),
        ("-- why\nDELETE FROM t", True),
        ("/* bulk */ REPLACE INTO t VALUES (1)", True),
        ("SELECT * FROM t", False),
        ("PRAGMA data_version", False),
        ("CREATE TABLE t (a)", False),
    ],
)
def test_a_write_is_what_opens_sqlite3s_transaction(statement: str, writes: bool) -> None:
    assert is_write(statement) is writes
