"""The sync scheduler against the Google emulator over real HTTP, on SQLite and PostgreSQL.

A connection's first full sync starts by itself; a request (what a push notification or a
booking makes) brings a change in; many requests make one sync, a request during a sync one
more; polls follow the push state; inactive integrations never cost a Google call; a
rate-limit storm backs off (reported in the integration's status) and loses no change.

Most tests drive a scheduler of their own tick by tick with a fake clock (`run_once`); the
first runs the app's background scheduler as deployed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from emulator.calendar_store import Calendar
from gateway.clock import utc_now
from gateway.connections.model import Status
from gateway.db.schema import calendars, watch_channels
from gateway.google.calendar import CalendarClient
from gateway.http.appkeys import INTEGRATIONS_KEY, SCHEDULER_KEY, SYNC_NUDGE_KEY, TOKENS_KEY
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.config import SchedulerConfig
from gateway.sync.engine import SyncEngine
from gateway.sync.scheduler import SyncScheduler
from gateway.sync.store import SyncStore
from tests.support.openapi import assert_conforms
from tests.support.scheduler import EVERYTHING, FakeClock, blocks, event, eventually
from tests.support.stack import ALICE, DAVE, EmulatorSecrets, Stack, start_stack

RATE_LIMIT_ERRORS = ("rateLimitExceeded", "userRateLimitExceeded", "backendError")


async def get_integration(stack: Stack, integration_id: str) -> dict[str, Any]:
    async with stack.http.get(
        stack.url(f"/v1/integrations/{integration_id}"), headers=stack.auth()
    ) as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


def list_calls(stack: Stack, email: str, since_seq: int = 0) -> list[Any]:
    """events.list calls the emulator answered for the user's primary calendar."""
    return [
        r
        for r in stack.google.inspector.requests(endpoint="events.list", since_seq=since_seq)
        if f"/calendars/{email}/" in r.path
    ]


def last_seq(stack: Stack) -> int:
    records = stack.google.inspector.records
    return records[-1].seq if records else 0


@dataclass
class Harness:
    """A scheduler of the test's own over the stack's database, driven tick by tick."""

    stack: Stack
    clock: FakeClock
    engine: SyncEngine
    scheduler: SyncScheduler
    hooks: list[Callable[[str, int], Awaitable[None]]] = field(default_factory=list)

    @property
    def store(self) -> SyncStore:
        return self.engine.store

    async def connect(self, email: str, user_id: str) -> str:
        result = await self.stack.connect(email, user_id=user_id)
        assert result["status"] == "connected"
        return result["integration_id"]

    async def calendar_of(self, integration_id: str) -> CalendarRow:
        [calendar] = await self.store.calendars_of(integration_id)
        return calendar

    async def first_sync(self, email: str, user_id: str) -> tuple[str, CalendarRow]:
        """Connect; one tick discovers the calendar and runs its first full sync."""
        integration_id = await self.connect(email, user_id)
        claimed = await self.scheduler.run_once()
        calendar = await self.calendar_of(integration_id)
        assert claimed == [calendar.id]
        assert (await self.store.get(calendar.id)).state == "synced"  # type: ignore[union-attr]
        return integration_id, calendar

    def google(self, email: str) -> Calendar:
        return self.stack.google.calendars.ensure_user(email)


async def make_scheduler(
    stack: Stack,
    db: AsyncEngine,
    clock: FakeClock,
    *,
    owner: str,
    config: SchedulerConfig | None = None,
    page_hook: Callable[[str, int], Awaitable[None]] | None = None,
    engine_class: type[SyncEngine] = SyncEngine,
    rng: Callable[[], float] | None = None,
) -> SyncScheduler:
    """A SyncEngine and a SyncScheduler on `db`, with the stack's token manager."""
    client = await CalendarClient.create(stack.http, stack.settings.google_calendar_api_url)
    engine = engine_class(
        store=SyncStore(db),
        client=client,
        tokens=stack.app[TOKENS_KEY],
        clock=clock,
        page_hook=page_hook,
    )
    return SyncScheduler(
        engine=engine,
        config=config or SchedulerConfig(),
        owner=owner,
        clock=clock,
        rng=rng or random.Random(5).random,
    )


@pytest.fixture
async def h(stack: Stack) -> AsyncIterator[Harness]:
    clock = FakeClock()
    hooks: list[Callable[[str, int], Awaitable[None]]] = []

    async def page_hook(kind: str, page: int) -> None:
        for hook in list(hooks):
            await hook(kind, page)

    scheduler = await make_scheduler(
        stack, stack.engine, clock, owner="test-a", page_hook=page_hook
    )
    try:
        yield Harness(stack, clock, scheduler.engine, scheduler, hooks)
    finally:
        await scheduler.stop()


# -- the app's own scheduler ----------------------------------------------------------------


@pytest.fixture
async def live(
    engine: AsyncEngine, database_url: str, tmp_path: Path, emulator_secrets: EmulatorSecrets
) -> AsyncIterator[Stack]:
    """The stack with the background scheduler on, ticking often. Push is off: a channel
    opened after the first sync would bring syncs of its own (tests/sync/test_push_channels.py
    runs the scheduler with push)."""
    async for running in start_stack(
        engine,
        database_url,
        tmp_path,
        emulator_secrets=emulator_secrets,
        sync_worker=True,
        sync_tick_s=0.05,
        push_enabled=False,
    ):
        yield running


async def test_connect_starts_the_first_full_sync_and_a_request_brings_a_change(
    live: Stack,
) -> None:
    google = live.google.calendars.ensure_user(ALICE)
    live.google.calendars.insert_event(
        google, event("first001", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z")
    )
    integration_id = (await live.connect(ALICE, user_id="u-live"))["integration_id"]
    store = SyncStore(live.engine)

    async def synced() -> bool:
        doc = await get_integration(live, integration_id)
        return [c["state"] for c in doc["sync"]["calendars"]] == ["synced"]

    await eventually(synced)
    doc = await get_integration(live, integration_id)
    assert_conforms(doc, "IntegrationDetail")
    [status] = doc["sync"]["calendars"]
    assert status["push"] == "polling" and status["backoff_until"] is None
    assert status["last_error"] is None and status["last_success_at"] is not None
    assert status["lag_s"] is not None and status["lag_s"] < 60
    assert await store.busy_between(status["id"], *EVERYTHING) == blocks(
        ("2026-12-01T10:00:00+00:00", "2026-12-01T11:00:00+00:00")
    )

    # A change at Google, then a request (as the webhook makes it) and a nudge.
    since = last_seq(live)
    live.google.calendars.insert_event(
        google, event("second01", "2026-12-02T09:00:00Z", "2026-12-02T09:30:00Z")
    )
    assert await store.request_sync(status["id"], utc_now())
    live.app[SYNC_NUDGE_KEY](status["id"])

    async def has_second() -> bool:
        return len(await store.busy_between(status["id"], *EVERYTHING)) == 2

    await eventually(has_second)
    [call] = list_calls(live, ALICE, since)
    assert "syncToken" in call.query  # incremental, not a new full sync
    assert live.app[SCHEDULER_KEY].owner


async def test_app_without_worker_runs_no_scheduler(stack: Stack) -> None:
    result = await stack.connect(ALICE, user_id="u-off")
    await asyncio.sleep(0)  # would any background task have started, it could run now
    assert SCHEDULER_KEY not in stack.app and SYNC_NUDGE_KEY not in stack.app
    assert await SyncStore(stack.engine).calendars_of(result["integration_id"]) == []


# -- requests, coalescing, polls --------------------------------------------------------------


async def test_requests_coalesce_and_one_during_a_sync_makes_one_more(h: Harness) -> None:
    _, calendar = await h.first_sync(ALICE, "u-coalesce")
    assert await h.scheduler.run_once() == []  # nothing due: next poll in 5 minutes

    since = last_seq(h.stack)
    for _ in range(5):
        assert await h.store.request_sync(calendar.id, h.clock())
    assert await h.scheduler.run_once() == [calendar.id]
    assert await h.scheduler.run_once() == []
    assert len(list_calls(h.stack, ALICE, since)) == 1

    # A notification arriving while the sync runs: exactly one more sync afterwards.
    async def request_during(kind: str, page: int) -> None:
        h.hooks.clear()
        await h.store.request_sync(calendar.id, h.clock())

    h.hooks.append(request_during)
    since = last_seq(h.stack)
    assert await h.scheduler.run_once() == []  # not due yet; the hook has not run
    assert await h.store.request_sync(calendar.id, h.clock())
    assert await h.scheduler.run_once() == [calendar.id]  # the hook requests again
    assert await h.scheduler.run_once() == [calendar.id]  # ... so one more sync
    assert await h.scheduler.run_once() == []
    assert len(list_calls(h.stack, ALICE, since)) == 2


async def test_a_sync_releases_its_lease_with_its_result_but_never_another_s(
    h: Harness,
) -> None:
    """A successful sync frees its calendar in the transaction that stores its result (the
    next poll planned there); if its lease ran out and another process holds the calendar
    meanwhile, that lease stays as it is."""
    _, calendar = await h.first_sync(ALICE, "u-release")
    row = await h.store.get(calendar.id)
    assert row is not None
    async with h.stack.engine.connect() as conn:
        lease = (
            await conn.execute(
                select(calendars.c.lease_owner, calendars.c.next_poll_at).where(
                    calendars.c.id == calendar.id
                )
            )
        ).one()
    assert lease.lease_owner is None
    assert lease.next_poll_at is not None

    async def taken_over(kind: str, page: int) -> None:
        h.hooks.clear()
        async with h.stack.engine.begin() as conn:
            await conn.execute(
                update(calendars)
                .where(calendars.c.id == calendar.id)
                .values(lease_owner="test-b", lease_until=h.clock() + timedelta(minutes=5))
            )

    h.hooks.append(taken_over)
    assert await h.store.request_sync(calendar.id, h.clock())
    assert await h.scheduler.run_once() == [calendar.id]
    async with h.stack.engine.connect() as conn:
        owner = (
            await conn.execute(select(calendars.c.lease_owner).where(calendars.c.id == calendar.id))
        ).scalar_one()
    assert owner == "test-b"


class Heartbeats:
    """The scheduler's sleep between lease renewals, stepped by the test: `beat()` ends one
    sleep and returns once the heartbeat has acted on it (it sleeps again, or it ended)."""

    def __init__(self) -> None:
        self._go: asyncio.Queue[None] = asyncio.Queue()
        self._asleep = asyncio.Event()

    async def sleep(self, _seconds: float) -> None:
        self._asleep.set()
        await self._go.get()

    async def first_sleep(self) -> None:
        await self._asleep.wait()

    async def beat(self, heartbeat: asyncio.Task[None]) -> None:
        self._asleep.clear()
        self._go.put_nowait(None)
        asleep = asyncio.create_task(self._asleep.wait())
        await asyncio.wait({asleep, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
        asleep.cancel()


async def test_a_lease_freed_by_the_sync_itself_is_not_reported_lost(stack: Stack) -> None:
    """The heartbeat renews the lease while the sync runs and reports it lost when another
    process took it; when the sync's own last transaction freed it (the result stored), the
    heartbeat must not call that a loss, or the finished sync would be abandoned: neither
    before nor after the sync has noted the release."""
    clock = FakeClock()
    beats = Heartbeats()
    scheduler = await make_scheduler(stack, stack.engine, clock, owner="test-hb")
    scheduler._sleep = beats.sleep
    integration_id = (await stack.connect(ALICE, user_id="u-heartbeat"))["integration_id"]
    assert await scheduler.run_once()
    [calendar] = await scheduler.engine.store.calendars_of(integration_id)

    async def lease(owner: str | None) -> None:
        async with stack.engine.begin() as conn:
            await conn.execute(
                update(calendars)
                .where(calendars.c.id == calendar.id)
                .values(lease_owner=owner, lease_until=clock() + timedelta(minutes=2))
            )

    await lease("test-hb")
    heartbeat = asyncio.create_task(scheduler._hold_lease(calendar.id))
    try:
        await beats.first_sleep()
        await beats.beat(heartbeat)
        assert not heartbeat.done()  # renewed
        await lease(None)  # the sync's last transaction stored its result and freed the lease
        # A renewal that sees the commit before the sync has run its `on_released` (answers
        # from two PostgreSQL connections arrive in either order): freed is not lost.
        await beats.beat(heartbeat)
        assert not heartbeat.done()
        scheduler._released.add(calendar.id)  # what its `on_released` does after the commit
        for _ in range(2):
            await beats.beat(heartbeat)
            assert not heartbeat.done()
        scheduler._released.discard(calendar.id)
        await lease("another-process")  # taken over: now it is lost
        await beats.beat(heartbeat)
        assert heartbeat.done() and heartbeat.exception() is None
    finally:
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        await scheduler.stop()


async def test_a_request_is_made_or_undone_with_the_transaction_it_joins(h: Harness) -> None:
    """The webhook records a message and requests its sync in one transaction: both or
    neither, so a message that was not recorded leaves no sync behind."""
    _, calendar = await h.first_sync(ALICE, "u-atomic")
    with pytest.raises(RuntimeError):
        async with h.stack.engine.begin() as conn:
            assert await h.store.request_sync(calendar.id, h.clock(), conn=conn)
            raise RuntimeError("the message could not be recorded")
    assert await h.scheduler.run_once() == []  # nothing was requested

    async with h.stack.engine.begin() as conn:
        assert await h.store.request_sync(calendar.id, h.clock(), conn=conn)
    assert await h.scheduler.run_once() == [calendar.id]


async def test_polls_every_five_minutes_without_push_and_hourly_with_it(h: Harness) -> None:
    integration_id, calendar = await h.first_sync(ALICE, "u-poll")
    h.clock.advance(299)
    assert await h.scheduler.run_once() == []
    h.clock.advance(2)
    assert await h.scheduler.run_once() == [calendar.id]  # the polling fallback

    # A live watch channel (the push engineer's table): only the slow safety poll remains.
    async with h.stack.engine.begin() as conn:
        await conn.execute(
            insert(watch_channels).values(
                id="chan-test-1",
                calendar_id=calendar.id,
                integration_id=integration_id,
                resource_id="res-1",
                token_sha256=b"\0" * 32,
                state="active",
                expires_at=h.clock() + timedelta(days=7),
                created_at=h.clock(),
            )
        )
    h.clock.advance(301)
    assert await h.scheduler.run_once() == [calendar.id]  # planned before the channel existed
    doc = await get_integration(h.stack, integration_id)
    assert doc["sync"]["calendars"][0]["push"] == "active"
    h.clock.advance(301)
    assert await h.scheduler.run_once() == []
    h.clock.advance(3600 - 301)
    assert await h.scheduler.run_once() == [calendar.id]  # the safety poll


async def test_horizon_that_drifted_is_re_expanded(h: Harness) -> None:
    _, calendar = await h.first_sync(ALICE, "u-drift")
    before = (await h.store.get(calendar.id)).horizon  # type: ignore[union-attr]
    assert before is not None
    h.clock.advance(86400)  # one day: the horizon moved one day, not re-expanded yet
    assert await h.scheduler.run_once() == [calendar.id]
    assert (await h.store.get(calendar.id)).horizon == before  # type: ignore[union-attr]
    h.clock.advance(86400)  # two days: re-expanded from the stored records
    assert await h.scheduler.run_once() == [calendar.id]
    after = (await h.store.get(calendar.id)).horizon  # type: ignore[union-attr]
    assert after == h.engine.config.horizon(h.clock())


# -- inactive integrations ------------------------------------------------------------------


async def test_inactive_integrations_are_never_synced(h: Harness) -> None:
    repo = h.stack.app[INTEGRATIONS_KEY]
    # Alice was synced once, then her grant died; a request for her calendar arrives anyway.
    alice, alice_cal = await h.first_sync(ALICE, "u-alice")
    # Dave never got a calendar row: discovery must not call Google for him either.
    dave = await h.connect(DAVE, "u-dave")
    others: list[str] = []
    for n, status in enumerate((Status.DISCONNECTING, Status.DISCONNECTED)):
        email = f"gone{n}@example.com"
        h.stack.google.add_user(f"30000000000000000000{n}", email)
        others.append(await h.connect(email, f"u-gone{n}"))
        assert await repo.set_status(others[-1], status)
    assert await repo.set_status(alice, Status.NEEDS_REAUTH, reason="invalid_grant")
    assert await repo.set_status(dave, Status.NEEDS_REAUTH, reason="invalid_grant")
    assert await h.store.request_sync(alice_cal.id, h.clock())

    since = last_seq(h.stack)
    for _ in range(3):
        assert await h.scheduler.run_once() == []
        h.clock.advance(3600)
    calendar_calls = [
        r for r in h.stack.google.inspector.requests(since_seq=since) if "/calendar/v3/" in r.path
    ]
    assert calendar_calls == []
    for integration_id in (dave, *others):
        assert await h.store.calendars_of(integration_id) == []
    # Back to active (the user connected again): the waiting request is served.
    assert await repo.set_status(alice, Status.ACTIVE)
    assert await h.scheduler.run_once() == [alice_cal.id]


# -- rate-limit storms ------------------------------------------------------------------------


async def test_rate_limit_storm_backs_off_reports_and_loses_no_change(h: Harness) -> None:
    google = h.google(ALICE)
    store = h.stack.google.calendars
    for i in range(6):
        store.insert_event(
            google,
            event(f"keep{i:04d}", f"2026-12-0{i + 1}T10:00:00Z", f"2026-12-0{i + 1}T11:00:00Z"),
        )
    integration_id, calendar = await h.first_sync(ALICE, "u-storm")
    assert len(await h.store.busy_between(calendar.id, *EVERYTHING)) == 6

    # The storm: every events.list of Alice's answers 429, then 403 rateLimitExceeded, then
    # 403 userRateLimitExceeded, then 503, four times each; changes keep happening meanwhile.
    for status, reason in (
        (429, "rateLimitExceeded"),
        (403, "rateLimitExceeded"),
        (403, "userRateLimitExceeded"),
        (503, None),
    ):
        h.stack.google.inject_fault(
            status=status, reason=reason, times=4, user=ALICE, endpoint="events.list"
        )
    changes = iter(
        [
            lambda: store.insert_event(
                google, event("added001", "2026-12-10T08:00:00Z", "2026-12-10T09:00:00Z")
            ),
            lambda: store.patch_event(
                google, "keep0001", {"end": {"dateTime": "2026-12-02T12:30:00Z"}}
            ),
            lambda: store.delete_event(google, "keep0002"),
            lambda: store.patch_event(google, "keep0003", {"transparency": "transparent"}),
        ]
    )
    backoffs: list[float] = []
    since = last_seq(h.stack)
    for attempt in range(1, 17):
        change = next(changes, None)
        if change is not None:
            change()
        assert await h.store.request_sync(calendar.id, h.clock())
        assert await h.scheduler.run_once() == [calendar.id]
        [status] = (await get_integration(h.stack, integration_id))["sync"]["calendars"]
        assert status["state"] == "backoff"
        assert status["last_error"] in (
            "rateLimitExceeded",
            "userRateLimitExceeded",
            "backendError",
        )
        until = datetime.fromisoformat(status["backoff_until"])
        wait_s = (until - h.clock()).total_seconds()
        # Truncated exponential backoff with full jitter: below base * 2**(n-1), capped.
        assert 0 <= wait_s <= min(900, 2.0 * 2 ** (attempt - 1)) + 0.001
        backoffs.append(wait_s)
        # Requests do not break the backoff: nothing is claimed before it ends.
        if wait_s > 0.001:
            h.clock.advance(wait_s / 2)
            assert await h.store.request_sync(calendar.id, h.clock())
            assert await h.scheduler.run_once() == []
        h.clock.set(until)
    assert max(backoffs) > 8  # it really grew
    assert len(list_calls(h.stack, ALICE, since)) == 16

    # The storm is over: the next sync succeeds and every change is in.
    assert await h.scheduler.run_once() == [calendar.id]
    [status] = (await get_integration(h.stack, integration_id))["sync"]["calendars"]
    assert status["state"] == "synced" and status["backoff_until"] is None
    assert status["last_error"] is None
    merged = await h.store.busy_between(calendar.id, *EVERYTHING)
    assert merged == blocks(
        ("2026-12-01T10:00:00+00:00", "2026-12-01T11:00:00+00:00"),
        ("2026-12-02T10:00:00+00:00", "2026-12-02T12:30:00+00:00"),
        ("2026-12-05T10:00:00+00:00", "2026-12-05T11:00:00+00:00"),
        ("2026-12-06T10:00:00+00:00", "2026-12-06T11:00:00+00:00"),
        ("2026-12-10T08:00:00+00:00", "2026-12-10T09:00:00+00:00"),
    )
    # Google's truth, from scratch: a forced full resync builds exactly the same copy.
    store.invalidate_sync_tokens(ALICE)
    assert await h.store.request_sync(calendar.id, h.clock())
    assert await h.scheduler.run_once() == [calendar.id]
    rebuilt = await h.store.get(calendar.id)
    assert rebuilt is not None and rebuilt.active_generation == 2
    assert await h.store.busy_between(calendar.id, *EVERYTHING) == merged


async def test_a_non_transient_error_waits_the_longest_backoff(h: Harness) -> None:
    integration_id, calendar = await h.first_sync(ALICE, "u-errors")
    # Google answers 404 for the calendar (gone at Google): no reason to hammer it.
    async with h.stack.engine.begin() as conn:
        await conn.execute(
            update(calendars)
            .where(calendars.c.id == calendar.id)
            .values(google_calendar_id="nobody@example.com")
        )
    assert await h.store.request_sync(calendar.id, h.clock())
    assert await h.scheduler.run_once() == [calendar.id]
    [status] = (await get_integration(h.stack, integration_id))["sync"]["calendars"]
    assert status["state"] == "error" and status["last_error"] == "notFound"
    until = datetime.fromisoformat(status["backoff_until"])
    assert until - h.clock() == timedelta(seconds=900)
    # The old copy is still the last good one, just made (seconds of real time may pass here).
    assert status["lag_s"] is not None and status["lag_s"] < 60
    h.clock.advance(899)
    assert await h.scheduler.run_once() == []
    async with h.stack.engine.begin() as conn:
        await conn.execute(
            update(calendars).where(calendars.c.id == calendar.id).values(google_calendar_id=ALICE)
        )
    h.clock.advance(1)
    assert await h.scheduler.run_once() == [calendar.id]
    [status] = (await get_integration(h.stack, integration_id))["sync"]["calendars"]
    assert status["state"] == "synced" and status["backoff_until"] is None


def test_backoff_is_truncated_exponential_with_full_jitter_and_honours_retry_after() -> None:
    config = SchedulerConfig(backoff_base_s=2, backoff_max_s=900)
    assert [config.backoff_s(n, 0.999999) for n in (1, 2, 3, 4)] == pytest.approx(
        [2, 4, 8, 16], rel=1e-5
    )
    assert config.backoff_s(20, 0.5) == 450  # capped, then jittered
    assert config.backoff_s(1, 0.0) == 0  # full jitter reaches down to zero...
    assert config.backoff_s(1, 0.0, retry_after_s=30) == 30  # ...but never below Retry-After
    assert config.backoff_s(1, 0.0, retry_after_s=10**6) == 900  # a silly one is capped


# -- leases -----------------------------------------------------------------------------------


async def test_a_sync_whose_lease_was_lost_is_abandoned(stack: Stack) -> None:
    """A process stalled past its lease (another took the calendar) must not write on."""
    clock = FakeClock()
    stalled = asyncio.Event()

    async def stall(kind: str, page: int) -> None:
        # Someone else holds the calendar now (as after this process stalled past the lease).
        async with stack.engine.begin() as conn:
            await conn.execute(update(calendars).values(lease_owner="thief"))
        stalled.set()
        await asyncio.Event().wait()  # until cancelled

    scheduler = await make_scheduler(
        stack,
        stack.engine,
        clock,
        owner="stalls",
        config=SchedulerConfig(lease_s=0.3),
        page_hook=stall,
    )
    integration_id = (await stack.connect(ALICE, user_id="u-stall"))["integration_id"]
    [calendar_id] = await scheduler.tick()
    await asyncio.wait_for(stalled.wait(), 60)
    # The heartbeat finds the lease gone and cancels the sync (else this waits forever).
    await asyncio.wait_for(scheduler.drain(), 60)
    row = await scheduler.engine.store.get(calendar_id)
    assert row is not None and row.active_generation is None and row.state == "initial"
    async with stack.engine.connect() as conn:
        owner = (
            await conn.execute(select(calendars.c.lease_owner).where(calendars.c.id == calendar_id))
        ).scalar()
    assert owner == "thief"  # not released by the loser
    assert (await scheduler.engine.store.calendars_of(integration_id))[0].id == calendar_id


async def test_stop_hands_running_calendars_back(stack: Stack) -> None:
    clock = FakeClock()
    started = asyncio.Event()

    async def block(kind: str, page: int) -> None:
        started.set()
        await asyncio.Event().wait()

    scheduler = await make_scheduler(stack, stack.engine, clock, owner="leaving", page_hook=block)
    await stack.connect(ALICE, user_id="u-stop")
    [calendar_id] = await scheduler.tick()
    await asyncio.wait_for(started.wait(), 60)
    await scheduler.stop(grace_s=0)
    async with stack.engine.connect() as conn:
        row = (
            (await conn.execute(select(calendars).where(calendars.c.id == calendar_id)))
            .mappings()
            .one()
        )
    assert row["lease_owner"] is None and row["lease_until"] is None
    assert row["sync_requested_at"] is not None  # the next process syncs it at once
    other = await make_scheduler(stack, stack.engine, clock, owner="next")
    assert await other.run_once() == [calendar_id]


# -- concurrency caps -------------------------------------------------------------------------


async def test_global_cap_and_one_sync_per_google_account(stack: Stack) -> None:
    clock = FakeClock()
    scheduler = await make_scheduler(
        stack, stack.engine, clock, owner="capped", config=SchedulerConfig(concurrency=3)
    )
    store = scheduler.engine.store
    emails = [f"cap{n}@example.com" for n in range(4)]
    integration_ids = []
    for n, email in enumerate(emails):
        stack.google.add_user(f"50000000000000000000{n}", email)
        integration_ids.append((await stack.connect(email, user_id=f"u-cap{n}"))["integration_id"])
    # The first account has a second calendar: its two syncs share one quota.
    second = stack.google.calendars.add_calendar(emails[0], "Team", "UTC")
    [first] = await scheduler.engine.ensure_calendars(integration_ids[0])
    extra = await store.ensure_calendar(
        new_id="cal_" + "e" * 24,
        integration_id=integration_ids[0],
        tenant_id="acme",
        google_calendar_id=second.id,
        time_zone="UTC",
        now=clock(),
    )
    # Requested calendars go first: both of the first account's are the top candidates.
    for calendar_id in (first.id, extra.id):
        assert await store.request_sync(calendar_id, clock())

    claimed = await scheduler.tick()  # 5 calendars due (3 discovered now), 3 slots
    assert len(claimed) == 3 and len(set(claimed) & {first.id, extra.id}) == 1
    assert await scheduler.tick() == []  # every slot busy
    await scheduler.drain()
    assert len(await scheduler.run_once()) == 2  # the rest, the first account's other one too
    for integration_id in integration_ids:
        for row in await store.calendars_of(integration_id):
            assert row.state == "synced"


async def test_a_burst_of_new_integrations_is_discovered_without_waiting_for_ticks(
    stack: Stack,
) -> None:
    """Discovery looks at `concurrency` new integrations at a time; when it found a full
    batch it looks again at once instead of a tick later, so a burst of connections (an
    account's whole team connecting) is not fed to idle slots `concurrency` a tick. The tick
    here is an hour: only that makes the seven calendars appear."""
    clock = FakeClock()
    scheduler = await make_scheduler(
        stack,
        stack.engine,
        clock,
        owner="burst",
        config=SchedulerConfig(concurrency=2, tick_s=3600),
    )
    store = scheduler.engine.store
    integration_ids = []
    for n in range(7):
        email = f"burst{n}@example.com"
        stack.google.add_user(f"60000000000000000000{n}", email)
        integration_ids.append(
            (await stack.connect(email, user_id=f"u-burst{n}"))["integration_id"]
        )

    async def all_synced() -> bool:
        for integration_id in integration_ids:
            rows = await store.calendars_of(integration_id)
            if not rows or rows[0].state != "synced":
                return False
        return True

    scheduler.start()
    try:
        await eventually(all_synced)
    finally:
        await scheduler.stop()


# -- discovery across processes ---------------------------------------------------------------


class _GatedDiscovery(SyncEngine):
    """A SyncEngine whose discovery stops before asking Google until the test opens `gate`."""

    reached: asyncio.Queue[str]
    gate: asyncio.Event

    async def ensure_calendars(self, integration_id: str) -> list[CalendarRow]:
        await self.reached.put(integration_id)
        await self.gate.wait()
        return await super().ensure_calendars(integration_id)


def discovery_calls(stack: Stack, emails: list[str], since_seq: int) -> dict[str, int]:
    """Google calls that discovery makes, per user: an events.list of one item of the primary
    (its zone, under the default grant) or the calendar list."""
    counts = dict.fromkeys(emails, 0)
    subs = {stack.google.find_user(email).sub: email for email in emails}
    for r in stack.google.inspector.requests(since_seq=since_seq):
        listed_one = r.endpoint == "events.list" and r.query.get("maxResults") == "1"
        if r.user in subs and (listed_one or r.endpoint == "calendarList.list"):
            counts[subs[r.user]] += 1
    return counts


async def test_two_processes_discover_each_new_integration_once(stack: Stack) -> None:
    """Process A looks first and is still asking Google when process B looks: B must neither
    ask Google for the same integrations nor get their calendars (before, both asked and one
    INSERT lost: a Google call and a transaction twice per integration per process)."""
    clock = FakeClock()
    first = await make_scheduler(
        stack, stack.engine, clock, owner="proc-a", engine_class=_GatedDiscovery
    )
    gated = first.engine
    assert isinstance(gated, _GatedDiscovery)
    gated.reached, gated.gate = asyncio.Queue(), asyncio.Event()
    second = await make_scheduler(stack, stack.engine, clock, owner="proc-b")
    emails = [f"twice{n}@example.com" for n in range(3)]
    integration_ids = []
    for n, email in enumerate(emails):
        stack.google.add_user(f"70000000000000000000{n}", email)
        integration_ids.append(
            (await stack.connect(email, user_id=f"u-twice{n}"))["integration_id"]
        )
    since = last_seq(stack)

    ticking = asyncio.create_task(first.tick())
    reached = {await gated.reached.get() for _ in emails}
    assert reached == set(integration_ids)
    # B looks while A holds all three: nothing for B to discover, nothing for it to sync.
    assert await second.tick() == []
    assert discovery_calls(stack, emails, since) == dict.fromkeys(emails, 0)
    gated.gate.set()
    claimed = await ticking
    assert len(claimed) == 3
    assert discovery_calls(stack, emails, since) == dict.fromkeys(emails, 1)
    for integration_id in integration_ids:
        assert len(await first.engine.store.calendars_of(integration_id)) == 1
    await first.drain()
    await first.stop()
    await second.stop()


async def test_a_failed_discovery_backs_off_for_every_process(stack: Stack) -> None:
    """Google fails one discovery (503): the backoff is the integration's, so another process
    looking before it ends does not ask Google either; after it, one of them does."""
    clock = FakeClock()
    first = await make_scheduler(stack, stack.engine, clock, owner="proc-a", rng=lambda: 1.0)
    second = await make_scheduler(stack, stack.engine, clock, owner="proc-b")
    integration_id = (await stack.connect(ALICE, user_id="u-backoff"))["integration_id"]
    stack.google.inject_fault(status=503, times=1, user=ALICE, endpoint="events.list")
    since = last_seq(stack)
    assert await first.tick() == []
    assert sum(discovery_calls(stack, [ALICE], since).values()) == 1
    assert await first.engine.store.calendars_of(integration_id) == []
    # Full jitter with rng 1.0: the first backoff is its whole base (SchedulerConfig's).
    wait_s = SchedulerConfig().backoff_s(1, 1.0)
    assert wait_s > 0
    clock.advance(wait_s / 2)
    assert await second.tick() == []
    assert sum(discovery_calls(stack, [ALICE], since).values()) == 1  # B waited too
    clock.advance(wait_s / 2)
    [calendar_id] = await second.tick()
    assert sum(discovery_calls(stack, [ALICE], since).values()) == 2
    assert [c.id for c in await second.engine.store.calendars_of(integration_id)] == [calendar_id]
    await second.drain()
    await first.stop()
    await second.stop()


async def test_a_discovery_claim_left_by_a_dead_process_runs_out(stack: Stack) -> None:
    """A process that claimed an integration and died never discovers it: another one does
    once the claim (lease_s) has run out, not before."""
    clock = FakeClock()
    config = SchedulerConfig(lease_s=60)
    dead = await make_scheduler(
        stack, stack.engine, clock, owner="dies", config=config, engine_class=_GatedDiscovery
    )
    gated = dead.engine
    assert isinstance(gated, _GatedDiscovery)
    gated.reached, gated.gate = asyncio.Queue(), asyncio.Event()
    integration_id = (await stack.connect(ALICE, user_id="u-dead"))["integration_id"]
    ticking = asyncio.create_task(dead.tick())
    assert await gated.reached.get() == integration_id
    ticking.cancel()  # the process is gone: its claim stays until it runs out
    with pytest.raises(asyncio.CancelledError):
        await ticking
    other = await make_scheduler(stack, stack.engine, clock, owner="lives", config=config)
    clock.advance(59)
    assert await other.tick() == []
    clock.advance(1)
    [calendar_id] = await other.tick()
    assert [c.id for c in await other.engine.store.calendars_of(integration_id)] == [calendar_id]
    await other.drain()
    await other.stop()


async def test_a_reconnect_ends_a_failed_discovery_s_backoff(stack: Stack) -> None:
    """A discovery that failed for good waits the longest backoff (15 minutes, stored for every
    process); the person connecting again is them mending it: discovery runs at once."""
    clock = FakeClock()
    scheduler = await make_scheduler(stack, stack.engine, clock, owner="mends")
    store = scheduler.engine.store
    integration_id = (await stack.connect(ALICE, user_id="u-mend"))["integration_id"]
    await store.defer_discovery(integration_id, clock() + timedelta(minutes=15))
    assert await scheduler.tick() == []
    clock.advance(60)
    assert await scheduler.tick() == []  # still backing off
    again = await stack.connect(ALICE, user_id="u-mend")
    assert again["integration_id"] == integration_id
    [calendar_id] = await scheduler.tick()
    assert [c.id for c in await store.calendars_of(integration_id)] == [calendar_id]
    await scheduler.drain()
    await scheduler.stop()
