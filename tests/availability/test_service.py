"""AvailabilityService without HTTP (as MCP tools will call it), on the stack's real store and
emulator, with an injected clock: staleness decided by the clock, min notice from the clock,
one unreadable calendar beside a readable one, bounded concurrency keeping order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.availability.intervals import Interval
from gateway.availability.service import (
    MAX_WINDOW,
    AvailabilityService,
    FreeBusy,
    parse_staleness,
    parse_window,
)
from gateway.availability.slots import SlotQuery
from gateway.clock import utc_now
from gateway.connections.errors import IntegrationInactive
from gateway.connections.model import Integration
from gateway.db.notify import bump_calendars
from gateway.db.schema import calendars, watch_channels
from gateway.errors import InvalidInput
from gateway.google.calendar import CalendarClient
from gateway.http.appkeys import AVAILABILITY_KEY, INTEGRATIONS_KEY, SYNC_KEY, TOKENS_KEY
from tests.support.availability import ALICE, DAVE, ERIN, at, connect, day, event, sync
from tests.support.stack import Stack

UTC_ZONE = ZoneInfo("UTC")


async def service(
    stack: Stack, clock: Callable[[], datetime], concurrency: int = 8
) -> AvailabilityService:
    client = await CalendarClient.create(stack.http, stack.settings.google_calendar_api_url)
    return AvailabilityService(
        sync=stack.app[SYNC_KEY],
        client=client,
        tokens=stack.app[TOKENS_KEY],
        clock=clock,
        concurrency=concurrency,
    )


async def integration(stack: Stack, integration_id: str) -> Integration:
    found = await stack.app[INTEGRATIONS_KEY].get_by_id(integration_id)
    assert found is not None
    return found


async def live_channel(
    conn: AsyncConnection,
    channel_id: str,
    calendar_id: str,
    integration_id: str,
    *,
    opened: datetime,
    heard: datetime | None = None,
) -> None:
    """An active push channel of the calendar, opened at `opened`, expiring a week later."""
    await conn.execute(
        insert(watch_channels).values(
            id=channel_id,
            calendar_id=calendar_id,
            integration_id=integration_id,
            resource_id=f"res-{channel_id}",
            token_sha256=bytes(32),
            state="active",
            expires_at=opened + timedelta(days=7),
            created_at=opened,
            last_message_at=heard,
        )
    )


async def test_the_clock_decides_when_the_copy_is_too_old(stack: Stack) -> None:
    alice = await integration(stack, await connect(stack, ALICE))
    await sync(stack, alice.id)
    synced_at = utc_now()
    d = day(7)
    event(stack, ALICE, at(d, "10:00"), at(d, "11:00"))  # after the sync
    window = Interval(at(d, "09:00"), at(d, "12:00"))
    later = await service(stack, clock=lambda: synced_at + timedelta(minutes=20))

    cached = await later.freebusy(alice, window, max_staleness=timedelta(minutes=30))
    assert (cached.source, cached.busy, cached.complete) == ("cache", [], True)
    assert cached.as_of is not None and cached.as_of <= synced_at

    live = await later.freebusy(alice, window, max_staleness=timedelta(minutes=10))
    assert live.source == "google" and live.complete
    assert live.busy == [Interval(at(d, "10:00"), at(d, "11:00"))]
    assert live.as_of == synced_at + timedelta(minutes=20)


async def test_a_live_push_channel_keeps_the_copy_current_until_a_change_is_pending(
    stack: Stack,
) -> None:
    alice = await integration(stack, await connect(stack, ALICE))
    [calendar_id] = await sync(stack, alice.id)
    synced_at = utc_now()
    # Within GATEWAY_PUSH_TRUST_S (900 s) of the channel's last sign of life.
    ten_minutes_later = synced_at + timedelta(minutes=10)
    async with stack.engine.begin() as conn:
        await live_channel(conn, "chan-avail-1", calendar_id, alice.id, opened=synced_at)
    d = day(7)
    event(stack, ALICE, at(d, "10:00"), at(d, "11:00"))  # Google would now notify us
    window = Interval(at(d, "09:00"), at(d, "12:00"))
    later = await service(stack, clock=lambda: ten_minutes_later)

    # No notification waiting and the channel heard from lately: the copy is as good as now.
    pushed = await later.freebusy(alice, window, max_staleness=timedelta(minutes=5))
    assert (pushed.source, pushed.as_of, pushed.busy) == ("cache", ten_minutes_later, [])

    # The notification arrived but its sync has not run: the copy is as old as its last sync.
    async with stack.engine.begin() as conn:
        await conn.execute(
            update(calendars)
            .where(calendars.c.id == calendar_id)
            .values(sync_requested_at=ten_minutes_later)
        )
    pending = await later.freebusy(alice, window, max_staleness=timedelta(minutes=5))
    assert pending.source == "google"
    assert pending.busy == [Interval(at(d, "10:00"), at(d, "11:00"))]


@pytest.mark.parametrize("path", ["database", "index"])
async def test_a_claimed_sync_that_has_not_finished_leaves_the_copy_as_old_as_its_last_sync(
    stack: Stack, path: str
) -> None:
    """The claim consumes the notification's request; until the sync stores what changed and
    releases the calendar, a live channel must not make the copy count as current: a
    calendar whose sync is running (or whose process died mid-sync) answers as of its last
    sync, on the database path and from the in-process index alike."""
    alice = await integration(stack, await connect(stack, ALICE))
    [calendar_id] = await sync(stack, alice.id)
    async with stack.engine.begin() as conn:
        opened = utc_now()
        await live_channel(conn, "chan-avail-2", calendar_id, alice.id, opened=opened, heard=opened)
        await bump_calendars(conn, [calendar_id], blocks=False)
    d = day(7)
    window = Interval(at(d, "09:00"), at(d, "12:00"))
    now = utc_now() + timedelta(minutes=1)
    answers = (
        await service(stack, clock=lambda: now)
        if path == "database"
        else stack.app[AVAILABILITY_KEY]
    )

    async def as_of() -> datetime | None:
        found = await answers.freebusy(alice, window, max_staleness=timedelta(days=1))
        assert found.source == "cache"
        [status] = found.calendars
        return status.as_of

    async def set_lease(owner: str | None) -> None:
        async with stack.engine.begin() as conn:
            await conn.execute(
                update(calendars)
                .where(calendars.c.id == calendar_id)
                .values(sync_requested_at=None, lease_owner=owner)
            )
            await bump_calendars(conn, [calendar_id], blocks=False)

    [row] = await stack.app[SYNC_KEY].store.calendars_of(alice.id)
    assert row.last_success_at is not None
    current = await as_of()
    assert current is not None and current > row.last_success_at  # the channel vouches
    await set_lease("another-process")  # claimed: the request consumed, the sync running
    assert await as_of() == row.last_success_at
    await set_lease(None)  # released after storing its result
    released = await as_of()
    assert released is not None and released > row.last_success_at


async def test_min_notice_is_counted_from_the_injected_clock(stack: Stack) -> None:
    alice = await integration(stack, await connect(stack, ALICE))
    await sync(stack, alice.id)
    d = day(7)
    now = at(d, "10:07")
    found = await (await service(stack, clock=lambda: now)).slots(
        [alice],
        SlotQuery(
            window=Interval(at(d, "09:00"), at(d, "14:00")),
            duration=timedelta(minutes=30),
            time_zone=UTC_ZONE,
            min_notice=timedelta(minutes=120),
        ),
        max_staleness=timedelta(days=1),
    )
    assert found.answer.slots[0].start == at(d, "12:15")
    assert found.answer.complete


async def test_an_unreadable_calendar_is_listed_as_error_beside_a_fresh_one(
    stack: Stack,
) -> None:
    alice = await integration(stack, await connect(stack, ALICE))
    [primary] = await sync(stack, alice.id)
    # A second calendar Google does not know (deleted meanwhile, say): never synced.
    store = stack.app[SYNC_KEY].store
    ghost = await store.ensure_calendar(
        new_id="cal_" + "0" * 24,
        integration_id=alice.id,
        tenant_id=alice.tenant_id,
        google_calendar_id="deleted-calendar@group.calendar.google.com",
        time_zone="UTC",
        now=utc_now(),
    )
    d = day(7)
    event(stack, ALICE, at(d, "10:00"), at(d, "11:00"))
    assert (await stack.app[SYNC_KEY].sync_calendar(primary)).status == "synced"
    answer = await (await service(stack, clock=utc_now)).freebusy(
        alice, Interval(at(d, "09:00"), at(d, "12:00")), max_staleness=timedelta(minutes=10)
    )
    states = {c.calendar_id: (c.state, c.error) for c in answer.calendars}
    assert states == {primary: ("fresh", None), ghost.id: ("error", "not_found")}
    assert answer.complete is False
    assert answer.busy == [Interval(at(d, "10:00"), at(d, "11:00"))]


async def test_many_answers_keep_their_order_under_a_concurrency_of_one(stack: Stack) -> None:
    ids = [await connect(stack, email) for email in (ALICE, DAVE, ERIN)]
    people = [await integration(stack, i) for i in ids]
    d = day(7)
    for n, email in enumerate((ALICE, DAVE, ERIN)):
        event(stack, email, at(d, f"1{n}:00"), at(d, f"1{n}:30"))
    repository = stack.app[INTEGRATIONS_KEY]
    await repository.mark_needs_reauth(ids[1], reason="invalid_grant", at=utc_now())
    people[1] = await integration(stack, ids[1])
    answers = await (await service(stack, clock=utc_now, concurrency=1)).freebusy_each(
        people, Interval(at(d, "09:00"), at(d, "13:00")), max_staleness=timedelta(0)
    )
    first, second, third = answers
    assert isinstance(first, FreeBusy) and first.integration_id == ids[0]
    assert first.busy == [Interval(at(d, "10:00"), at(d, "10:30"))]
    assert isinstance(second, IntegrationInactive)
    assert isinstance(third, FreeBusy) and third.integration_id == ids[2]
    assert third.busy == [Interval(at(d, "12:00"), at(d, "12:30"))]


def test_window_and_staleness_limits() -> None:
    d = day(7)
    assert parse_window(d, d + MAX_WINDOW) == Interval(d, d + MAX_WINDOW)
    for start, end in ((d, d), (d, d - timedelta(hours=1)), (d, d + MAX_WINDOW + timedelta(1))):
        with pytest.raises(InvalidInput):
            parse_window(start, end)
    assert parse_staleness(None, timedelta(minutes=10)) == timedelta(minutes=10)
    assert parse_staleness(0, timedelta(minutes=10)) == timedelta(0)
    with pytest.raises(InvalidInput):
        parse_staleness(86_401, timedelta(minutes=10))
