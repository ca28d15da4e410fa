"""The in-process caches in a running gateway (real HTTP, the emulator, SQLite and PostgreSQL):
a warm free/busy reads no database, this process's own writes are seen at once, a status
change stops answers at once, and a lost LISTEN connection makes the gateway read the database
until it is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.apikeys import SCOPES, ApiKeyStore
from gateway.clock import utc_now
from gateway.db.notify import feed_for
from gateway.db.schema import busy_blocks, calendars
from gateway.http.appkeys import COHERENCE_KEY, INDEX_KEY, INTEGRATIONS_KEY
from gateway.sync.lease_store import LeaseStore
from gateway.sync.model import BusyBlock
from gateway.sync.store import SyncStore
from tests.support.availability import ALICE, at, call, connect, day, event, sync, z
from tests.support.processes import until
from tests.support.services import require_postgres
from tests.support.stack import Stack


def path(integration_id: str) -> str:
    return f"/v1/integrations/{integration_id}/freebusy"


def window(d: Any) -> dict[str, str]:
    return {"time_min": z(at(d, "09:00")), "time_max": z(at(d, "17:00"))}


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement the gateway's engine runs inside the block."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    sa_event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa_event.remove(engine.sync_engine, "before_cursor_execute", count)


async def test_a_warm_freebusy_reads_no_database(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    event(stack, ALICE, at(d, "10:00"), at(d, "11:00"))
    await sync(stack, alice)
    cold = await call(stack, "GET", path(alice), params=window(d))
    assert cold.status == 200 and cold.body["source"] == "cache", cold.body
    batch_body = {"integration_ids": [alice], **window(d)}
    await call(stack, "POST", "/v1/freebusy", json=batch_body)

    with statements(stack.engine) as seen:
        warm = await call(stack, "GET", path(alice), params=window(d))
        batch = await call(stack, "POST", "/v1/freebusy", json=batch_body)
    assert seen == []
    assert warm.body == cold.body
    assert batch.body["results"] == [cold.body]
    assert warm.body["busy"] == [{"start": z(at(d, "10:00")), "end": z(at(d, "11:00"))}]


async def test_a_write_noticed_by_the_sqlite_watcher_keeps_the_index_warm(stack: Stack) -> None:
    # SQLite's data_version watcher cannot tell this process's commits from the CLI's, so it
    # fires ~0.25 s after every sync; the CLI writes only keys and the vault, so the index stays.
    alice = await connect(stack, ALICE)
    d = day(7)
    await sync(stack, alice)
    await call(stack, "GET", path(alice), params=window(d))  # held
    # SQLite's watcher itself is parked after its next look, so it cannot call in between (on
    # a loaded machine it noticed the sync's commits late, inside the windows below).
    parked, resume = asyncio.Event(), asyncio.Event()

    async def held() -> None:
        parked.set()
        await resume.wait()

    if stack.engine.dialect.name == "sqlite":
        stack.app[COHERENCE_KEY].poll_wait = held
        await parked.wait()
    with statements(stack.engine) as checked:
        await feed_for(stack.engine).external_write()  # what the watcher calls, at a known point
    with statements(stack.engine) as seen:
        warm = await call(stack, "GET", path(alice), params=window(d))
    assert warm.status == 200
    # The API key held was checked once, by the watcher's call (the CLI may have revoked it),
    # not by the request; the availability was not read at all.
    assert len(checked) == 1 and "FROM api_keys" in checked[0], checked
    assert seen == []
    resume.set()


async def test_this_process_sees_its_own_sync_at_once(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    await sync(stack, alice)
    before = await call(stack, "GET", path(alice), params=window(d))
    assert before.body["busy"] == []
    event(stack, ALICE, at(d, "13:00"), at(d, "14:00"))
    await sync(stack, alice)  # an incremental sync in this process
    after = await call(stack, "GET", path(alice), params=window(d))
    assert after.body["busy"] == [{"start": z(at(d, "13:00")), "end": z(at(d, "14:00"))}]


async def test_a_sync_request_rereads_the_calendar_row_but_not_its_blocks(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    event(stack, ALICE, at(d, "10:00"), at(d, "11:00"))
    [calendar_id] = await sync(stack, alice)
    held = await call(stack, "GET", path(alice), params=window(d))
    index = stack.app[INDEX_KEY]

    def entry() -> Any:
        found = index.calendar(calendar_id)
        assert found is not None
        return found

    first = entry()
    # A push notification's request changes the calendar's freshness, not its blocks.
    await LeaseStore(stack.engine).request_sync(calendar_id, utc_now())
    with statements(stack.engine) as seen:
        again = await call(stack, "GET", path(alice), params=window(d))
    assert [s for s in seen if "FROM calendars" in s], seen  # the new freshness was read
    # The blocks are read only under a CASE that skips a calendar at the blocks_version held.
    assert all("CASE WHEN" in s for s in seen if "busy_blocks" in s), seen
    requested = entry()
    assert requested.version > first.version and requested.sync_requested_at is not None
    # ... and the blocks were not: the entry shares the arrays it held (the statement's
    # blocks column was NULL for a calendar still at the blocks_version held).
    assert requested.starts is first.starts and requested.ends is first.ends
    assert (
        again.body["busy"]
        == held.body["busy"]
        == [{"start": z(at(d, "10:00")), "end": z(at(d, "11:00"))}]
    )
    # So does a sync that found nothing new (a channel's first message, a quiet poll).
    await sync(stack, alice)
    with statements(stack.engine) as seen:
        quiet = await call(stack, "GET", path(alice), params=window(d))
    assert [s for s in seen if "FROM calendars" in s], seen
    assert entry().version > requested.version and entry().starts is first.starts
    assert quiet.body["busy"] == held.body["busy"]
    # A change of the blocks themselves reads them again.
    event(stack, ALICE, at(d, "13:00"), at(d, "14:00"))
    await sync(stack, alice)
    with statements(stack.engine) as seen:
        changed = await call(stack, "GET", path(alice), params=window(d))
    assert [s for s in seen if "busy_blocks" in s]
    assert entry().starts is not first.starts and len(entry().starts) == len(first.starts) + 1
    assert changed.body["busy"] == [
        {"start": z(at(d, "10:00")), "end": z(at(d, "11:00"))},
        {"start": z(at(d, "13:00")), "end": z(at(d, "14:00"))},
    ]


async def test_a_block_with_sub_second_edges_is_held_as_the_whole_seconds_it_touches(
    stack: Stack,
) -> None:
    # Blocks are stored as epoch seconds (`EpochSeconds`): a fraction widens the block when it
    # is written, never shortens it, and the index keeps what is stored.
    alice = await connect(stack, ALICE)
    d = day(7)
    [calendar_id] = await sync(stack, alice)
    store = SyncStore(stack.engine)
    calendar = await store.get(calendar_id)
    assert calendar is not None and calendar.active_generation is not None
    assert calendar.horizon is not None
    fractional = BusyBlock(
        at(d, "15:00") + timedelta(microseconds=250_000),
        at(d, "16:00") + timedelta(microseconds=1),
        "fractional",
        "fractional",
    )
    assert await store.replace_blocks(
        calendar_id, calendar.active_generation, [fractional], calendar.horizon, utc_now()
    )
    answer = await call(stack, "GET", path(alice), params=window(d))
    assert answer.body["busy"] == [
        {"start": z(at(d, "15:00")), "end": z(at(d, "16:00") + timedelta(seconds=1))}
    ]
    assert stack.app[INDEX_KEY].calendar(calendar_id) is not None  # answered from the index
    # The database path answers the same.
    assert await store.busy_between(calendar_id, at(d, "00:00"), at(d, "23:59")) == [
        (at(d, "15:00"), at(d, "16:00") + timedelta(seconds=1))
    ]


async def test_needs_reauth_stops_cached_answers_at_once(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    await sync(stack, alice)
    assert (await call(stack, "GET", path(alice), params=window(d))).status == 200
    repo = stack.app[INTEGRATIONS_KEY]
    assert await repo.mark_needs_reauth(alice, reason="invalid_grant", at=d)
    refused = await call(stack, "GET", path(alice), params=window(d))
    assert refused.status == 409, refused.body
    assert refused.body["code"] == "integration_inactive"


async def test_a_revoked_key_is_refused_at_once_in_this_process(stack: Stack) -> None:
    keys = ApiKeyStore(stack.engine)
    made = await keys.create("acme", SCOPES, name="short-lived")
    assert (await call(stack, "GET", "/v1/integrations", key=made.value)).status == 200
    await keys.revoke(made.key.key_id)  # another store on the same engine: another writer
    assert (await call(stack, "GET", "/v1/integrations", key=made.value)).status == 401


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_lost_listen_connection_bypasses_the_index_until_it_is_back(
    stack: Stack,
) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    [calendar_id] = await sync(stack, alice)
    index, coherence = stack.app[INDEX_KEY], stack.app[COHERENCE_KEY]
    assert (await call(stack, "GET", path(alice), params=window(d))).body["busy"] == []
    assert index.calendar(calendar_id) is not None

    # LISTENing again waits until the test says so.
    back = asyncio.Event()

    async def held(_attempt: int) -> None:
        await back.wait()

    coherence.retry_wait = held
    admin = await asyncpg.connect(require_postgres())
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", coherence.listener_pid)
    finally:
        await admin.close()
    await until(_is(lambda: coherence.state == "down"), timeout_s=30)
    assert index.calendar(calendar_id) is None

    # Meanwhile a write this process is never told of (its NOTIFY found nobody listening).
    async with stack.engine.begin() as conn:
        generation = (
            await conn.execute(
                update(calendars)
                .where(calendars.c.id == calendar_id)
                .values(version=calendars.c.version + 1)
                .returning(calendars.c.active_generation)
            )
        ).scalar_one()
        await conn.execute(
            busy_blocks.insert().values(
                calendar_id=calendar_id,
                generation=generation,
                event_id="elsewhere",
                start_at=at(d, "15:00"),
                end_at=at(d, "16:00"),
                series_id="elsewhere",
            )
        )
    seen = [{"start": z(at(d, "15:00")), "end": z(at(d, "16:00"))}]
    assert (await call(stack, "GET", path(alice), params=window(d))).body["busy"] == seen
    assert index.calendar(calendar_id) is None  # read from the database, not held

    back.set()
    await until(_is(lambda: coherence.state == "live"), timeout_s=30)
    assert (await call(stack, "GET", path(alice), params=window(d))).body["busy"] == seen
    assert index.calendar(calendar_id) is not None  # held again


def _is(predicate: Any) -> Any:
    async def check() -> bool:
        return bool(predicate())

    return check


async def test_a_burst_after_a_change_reads_the_calendars_once(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    await sync(stack, alice)
    await call(stack, "GET", path(alice), params=window(d))  # held
    event(stack, ALICE, at(d, "13:00"), at(d, "14:00"))
    await sync(stack, alice)  # drops the calendar from the index
    with statements(stack.engine) as seen:
        answers = await asyncio.gather(
            *(call(stack, "GET", path(alice), params=window(d)) for _ in range(20))
        )
    assert {len(a.body["busy"]) for a in answers} == {1}
    block_reads = [s for s in seen if "FROM busy_blocks" in s]
    assert len(block_reads) == 1, block_reads
