"""Property: two gateway processes on one PostgreSQL, each with its own engine, sync engine,
availability index and LISTEN connection (two `create_app()` instances, each serving real
HTTP), driven through random interleavings of full syncs, incremental syncs, 410 rebuilds,
bookings, sync requests, disconnects and reads. After every step, once a fence NOTIFY sent
after it has reached both listeners, every read each process answers from its index equals
an answer from a plain database read, and the index holds exactly the database's version.

Without the NOTIFY of each write, the process that did not write keeps answering from the
copy it had: this property fails (checked by hand, see the lead's report).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
from collections.abc import Awaitable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.availability.intervals import Interval
from gateway.availability.service import AvailabilityService
from gateway.connections.repository import IntegrationRepository
from gateway.db.engine import create_engine
from gateway.db.listener import CacheCoherence
from gateway.db.migrate import upgrade
from gateway.db.notify import CHANNEL
from gateway.db.schema import calendars, integrations
from gateway.google.calendar import CalendarClient
from gateway.http.appkeys import (
    AVAILABILITY_KEY,
    COHERENCE_KEY,
    HTTP_KEY,
    INDEX_KEY,
    SYNC_KEY,
    TOKENS_KEY,
)
from gateway.webhooks.outbox import IntegrationOutbox
from tests.support.availability import at, day, z
from tests.support.databases import fresh_database_url
from tests.support.processes import until
from tests.support.stack import EmulatorSecrets, Stack, start_stack

T = TypeVar("T")
_users = itertools.count(1)
_fences = itertools.count(1)
_bookings = itertools.count(1)
D = day(5)
WINDOW = Interval(D, D + timedelta(days=3))


class LoopThread:
    """An event loop in a thread: the environment lives across Hypothesis examples, which
    are plain (synchronous) calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@dataclass
class Process:
    app: web.Application
    base_url: str

    @property
    def availability(self) -> AvailabilityService:
        return self.app[AVAILABILITY_KEY]

    @property
    def coherence(self) -> CacheCoherence:
        return self.app[COHERENCE_KEY]


@dataclass
class Pair:
    stack: Stack
    processes: list[Process]
    truth: AsyncEngine  # a third engine: the database as it is, no cache
    closers: list[Any] = field(default_factory=list)

    async def fence(self) -> None:
        """Wait until both listeners received everything committed so far."""
        token = f"t{next(_fences)}"
        async with self.truth.begin() as conn:
            await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": f"f {token}"})

        async def arrived() -> bool:
            return all(token in p.coherence.fences for p in self.processes)

        await until(arrived, timeout_s=30)


async def _start(tmp_path: Path, emulator_secrets: EmulatorSecrets) -> Pair:
    closers: list[Any] = []
    database = fresh_database_url("postgres", tmp_path)
    url = await database.__aenter__()
    closers.append(lambda: database.__aexit__(None, None, None))
    engine_a = await create_engine(url)
    await upgrade(engine_a)
    closers.append(engine_a.dispose)
    # No background channel maintenance: every write is one of the steps.
    running = start_stack(
        engine_a, url, tmp_path, emulator_secrets=emulator_secrets, push_maintenance_interval_s=0
    )
    stack = await running.__anext__()
    closers.append(running.aclose)
    engine_b = await create_engine(url)
    closers.append(engine_b.dispose)
    app_b = create_app(stack.settings, engine=engine_b)
    server_b = TestServer(app_b, host="127.0.0.1", port=0)
    await server_b.start_server()
    closers.append(server_b.close)
    truth = await create_engine(url)
    closers.append(truth.dispose)
    a = Process(stack.app, stack.base_url)
    b = Process(app_b, str(server_b.make_url("")).rstrip("/"))
    return Pair(stack, [a, b], truth, closers)


async def _stop(pair: Pair) -> None:
    for close in reversed(pair.closers):
        result = close()
        if isinstance(result, Awaitable):
            await result


@pytest.fixture
def pair(tmp_path: Path, emulator_secrets: EmulatorSecrets) -> Iterator[tuple[LoopThread, Pair]]:
    thread = LoopThread()
    try:
        made = thread.run(_start(tmp_path, emulator_secrets))
        try:
            yield thread, made
        finally:
            thread.run(_stop(made))
    finally:
        thread.close()


# -- the steps ------------------------------------------------------------------------------------

who = st.integers(min_value=0, max_value=1)
hour = st.integers(min_value=0, max_value=70)
step = st.one_of(
    st.tuples(st.just("event"), hour, st.integers(min_value=1, max_value=5)),
    st.tuples(st.just("sync"), who),
    st.tuples(st.just("rebuild"), who),
    st.tuples(st.just("book"), who, hour),
    st.tuples(st.just("request"), who),
    st.tuples(st.just("read"), who),
)
scenario = st.tuples(st.lists(step, min_size=2, max_size=10), st.booleans(), who)


@dataclass
class Person:
    email: str
    integration_id: str
    calendar_ids: list[str]


async def _new_person(pair: Pair) -> Person:
    n = next(_users)
    email = f"prop{n}-{secrets.token_hex(2)}@example.com"
    pair.stack.google.add_user(f"3{n:020d}", email, time_zone="UTC")
    result = await pair.stack.connect(email, user_id=f"prop-{n}")
    assert result["status"] == "connected", result
    integration_id = result["integration_id"]
    rows = await pair.processes[0].app[SYNC_KEY].ensure_calendars(integration_id)
    for row in rows:
        await pair.processes[0].app[SYNC_KEY].sync_calendar(row.id)
    return Person(email, integration_id, [r.id for r in rows])


async def _do(pair: Pair, person: Person, action: tuple[Any, ...]) -> None:
    kind = action[0]
    google = pair.stack.google.calendars
    if kind == "event":
        start = D + timedelta(hours=action[1])
        google.insert_event(
            google.ensure_user(person.email),
            {
                "id": f"prop{secrets.token_hex(6)}",
                "start": {"dateTime": z(start)},
                "end": {"dateTime": z(start + timedelta(minutes=30 * action[2]))},
            },
        )
        return
    process = pair.processes[action[1]]
    if kind in ("sync", "rebuild"):
        if kind == "rebuild":
            google.invalidate_sync_tokens(person.email)  # the next sync answers 410
        for calendar_id in person.calendar_ids:
            outcome = await process.app[SYNC_KEY].sync_calendar(calendar_id)
            assert outcome.status == "synced", outcome
    elif kind == "book":
        start = at(D + timedelta(hours=action[2]), "00:00")
        end = start + timedelta(minutes=30)
        body = {"summary": "Intro", "start": z(start), "end": z(end), "if_free": False}
        headers = {
            **pair.stack.auth(),
            "Idempotency-Key": f"prop-{next(_bookings)}-{secrets.token_hex(4)}",
        }
        url = f"{process.base_url}/v1/integrations/{person.integration_id}/events"
        async with pair.stack.http.post(url, json=body, headers=headers) as response:
            assert response.status in (200, 201), await response.text()
    elif kind == "request":
        store = process.app[SYNC_KEY].store
        for calendar_id in person.calendar_ids:
            await store.request_sync(calendar_id, datetime.now(UTC))
    elif kind == "disconnect":
        url = f"{process.base_url}/v1/integrations/{person.integration_id}"
        async with pair.stack.http.delete(url, headers=pair.stack.auth()) as response:
            assert response.status in (200, 202), await response.text()


async def _database_answer(pair: Pair, process: Process, person: Person) -> Any:
    """The same question answered by a service without an index (its store reads the
    database every time): what the database says now."""
    from gateway.sync.engine import SyncEngine

    sync: SyncEngine = process.app[SYNC_KEY]
    plain = AvailabilityService(
        sync=sync,
        client=await CalendarClient.create(
            process.app[HTTP_KEY], pair.stack.settings.google_calendar_api_url
        ),
        tokens=process.app[TOKENS_KEY],
    )
    integration = await IntegrationRepository(pair.truth, announcer=IntegrationOutbox()).get(
        "acme", person.integration_id
    )
    assert integration is not None
    if not integration.usable:
        return integration.status
    return await plain.freebusy(integration, WINDOW, max_staleness=timedelta(days=1))


async def _check_reads(pair: Pair, person: Person) -> None:
    await pair.fence()
    for process in pair.processes:
        service = process.availability
        integration = await service.integration("acme", person.integration_id)
        assert integration is not None
        expected = await _database_answer(pair, process, person)
        if not integration.usable:
            assert integration.status == expected
            index = process.app[INDEX_KEY]
            assert all(index.calendar(c) is None for c in person.calendar_ids)
            continue
        assert not isinstance(expected, str), (integration.status, expected)
        answer = await service.freebusy(integration, WINDOW, max_staleness=timedelta(days=1))
        assert answer == expected
        # The answer came from the index, at the database's version.
        index = process.app[INDEX_KEY]
        async with pair.truth.connect() as conn:
            versions = dict(
                (
                    await conn.execute(
                        select(calendars.c.id, calendars.c.version).where(
                            calendars.c.integration_id == person.integration_id
                        )
                    )
                ).all()
            )
            integration_version = (
                await conn.execute(
                    select(integrations.c.version).where(integrations.c.id == person.integration_id)
                )
            ).scalar_one()
        held = index.integration(person.integration_id)
        assert held is not None and held.version == integration_version
        for calendar_id, version in versions.items():
            entry = index.calendar(calendar_id)
            assert entry is not None and entry.version == version


async def _run(pair: Pair, steps: list[tuple[Any, ...]], disconnect: bool, by: int) -> None:
    person = await _new_person(pair)
    await _check_reads(pair, person)
    for action in [*steps, *([("disconnect", by)] if disconnect else [])]:
        await _do(pair, person, action)
        if action[0] == "disconnect":

            async def disconnected() -> bool:
                async with pair.truth.connect() as conn:
                    status = (
                        await conn.execute(
                            select(integrations.c.status).where(
                                integrations.c.id == person.integration_id
                            )
                        )
                    ).scalar_one()
                return bool(status == "disconnected")

            await until(disconnected, timeout_s=60)
        await _check_reads(pair, person)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario)
def test_every_index_read_equals_a_database_read_across_two_processes(
    pair: tuple[LoopThread, Pair], case: tuple[list[tuple[Any, ...]], bool, int]
) -> None:
    thread, environment = pair
    steps, disconnect, by = case
    thread.run(_run(environment, steps, disconnect, by))
