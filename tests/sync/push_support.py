"""What the push channel tests share (test_push_channels.py, test_webhook.py): the `push_stack`
and `h` fixtures (a stack whose maintenance passes the test runs, and a `Push` handle on it),
and notifications as Google sends them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from emulator.calendar_store import Calendar, Channel
from gateway.db.schema import calendars
from gateway.google.calendar import CalendarClient
from gateway.http.appkeys import PUSH_CONFIG_KEY, SCHEDULER_CONFIG_KEY, SYNC_KEY, TOKENS_KEY
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.channel_store import ChannelRow, ChannelStore, WatchTarget
from gateway.sync.channels import ChannelManager
from gateway.sync.engine import SyncEngine
from tests.support.stack import ALICE, EmulatorSecrets, Stack, start_stack


@dataclass
class Push:
    stack: Stack
    sync: SyncEngine
    manager: ChannelManager
    integration_id: str
    calendar: CalendarRow
    google_cal: Calendar

    @property
    def store(self) -> ChannelStore:
        return self.manager.store

    async def channels(self) -> list[ChannelRow]:
        return await self.store.channels_of_calendar(self.calendar.id)

    async def channel(self, channel_id: str) -> ChannelRow:
        row = await self.store.get(channel_id)
        assert row is not None
        return row

    async def open_verified(self) -> ChannelRow:
        """One maintenance pass opens a channel; wait for its `sync` message."""
        report = await self.manager.run_once()
        assert report.opened == 1
        [row] = [r for r in await self.channels() if r.state in ("opening", "active")]
        await self.wait_active(row.id)
        return await self.channel(row.id)

    async def wait_active(self, channel_id: str) -> None:
        async def active() -> bool:
            return (await self.channel(channel_id)).state == "active"

        await eventually(active, f"channel {channel_id} verified")

    async def sync_requested_at(self) -> datetime | None:
        async with self.stack.engine.connect() as conn:
            value: datetime | None = (
                await conn.execute(
                    select(calendars.c.sync_requested_at).where(calendars.c.id == self.calendar.id)
                )
            ).scalar_one()
            return value

    async def clear_sync_request(self) -> None:
        """What the scheduler does when it takes the request."""
        async with self.stack.engine.begin() as conn:
            await conn.execute(
                update(calendars)
                .where(calendars.c.id == self.calendar.id)
                .values(sync_requested_at=None)
            )

    async def calendar_state(self) -> tuple[int, str | None]:
        """The calendar's version and push error."""
        async with self.stack.engine.connect() as conn:
            found = select(calendars.c.version, calendars.c.push_error)
            row = (await conn.execute(found.where(calendars.c.id == self.calendar.id))).one()
        return int(row.version), row.push_error

    async def claim_channel(
        self, channel_id: str, now: datetime, *, renew_before: timedelta, first: bool = False
    ) -> None:
        """Claim a channel row for the calendar (what `open_channel` does before events.watch),
        its token the SHA-256 of its id."""
        calendar = self.calendar
        assert await self.store.claim(
            WatchTarget(calendar.id, calendar.integration_id, calendar.google_calendar_id),
            channel_id=channel_id,
            token_sha256=hashlib.sha256(channel_id.encode()).digest(),
            now=now,
            renew_before=renew_before,
            silence=timedelta(minutes=5),
            first=first,
        )

    async def set_copy(self, generation: int | None) -> None:
        """The calendar's active generation (None: no complete copy), behind the stores' backs."""
        async with self.stack.engine.begin() as conn:
            await conn.execute(
                update(calendars)
                .where(calendars.c.id == self.calendar.id)
                .values(active_generation=generation)
            )

    def google_channels(self) -> dict[str, Channel]:
        return dict(self.stack.google.calendars.channels)

    def insert_at_google(self, event_id: str, start: str, end: str) -> None:
        self.stack.google.calendars.insert_event(
            self.google_cal,
            {"id": event_id, "start": {"dateTime": start}, "end": {"dateTime": end}},
        )


async def notify(stack: Stack, channel: Channel, state: str, number: int, **override: str) -> int:
    """POST a notification as Google would for `channel` (headers overridable)."""
    headers = {
        "X-Goog-Channel-ID": channel.id,
        "X-Goog-Channel-Token": channel.token or "",
        "X-Goog-Resource-ID": channel.resource_id,
        "X-Goog-Resource-URI": channel.resource_uri,
        "X-Goog-Resource-State": state,
        "X-Goog-Message-Number": str(number),
        **override,
    }
    async with stack.http.post(
        stack.url("/webhooks/google/calendar"), headers=headers, data=b""
    ) as response:
        await response.read()
        return response.status


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for something another task (a delivery from the emulator) does; the deadline is
    only a safety net, generous for a loaded machine."""
    deadline = asyncio.get_running_loop().time() + 60
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def push_stack(
    engine: AsyncEngine, database_url: str, tmp_path: Path, emulator_secrets: EmulatorSecrets
) -> AsyncIterator[Stack]:
    """The stack with the app's maintenance loop off: tests run the passes themselves."""
    # No background scheduler either (`sync_worker`, where it exists): the tests look at the
    # sync requests a notification leaves behind.
    async for running in start_stack(
        engine,
        database_url,
        tmp_path,
        emulator_secrets=emulator_secrets,
        push_maintenance_interval_s=0,
        sync_worker=False,
    ):
        yield running


@pytest.fixture
async def h(push_stack: Stack) -> Push:
    stack = push_stack
    integration_id, calendar = await connect_and_sync(stack, ALICE, "u-alice")
    return Push(
        stack,
        stack.app[SYNC_KEY],
        await make_manager(stack),
        integration_id,
        calendar,
        stack.google.calendars.ensure_user(ALICE),
    )


async def make_manager(stack: Stack, engine: AsyncEngine | None = None) -> ChannelManager:
    client = await CalendarClient.create(stack.http, stack.settings.google_calendar_api_url)
    return ChannelManager(
        store=ChannelStore(engine or stack.engine),
        client=client,
        tokens=stack.app[TOKENS_KEY],
        config=stack.app[PUSH_CONFIG_KEY],
        clock=google_now(stack),
        backoff_s=stack.app[SCHEDULER_CONFIG_KEY].backoff_s,
        rng=lambda: JITTER,
    )


async def connect_and_sync(stack: Stack, email: str, user_id: str) -> tuple[str, CalendarRow]:
    result = await stack.connect(email, user_id=user_id)
    assert result["status"] == "connected"
    sync = stack.app[SYNC_KEY]
    [calendar] = await sync.ensure_calendars(result["integration_id"])
    assert (await sync.sync_calendar(calendar.id)).status == "synced"
    return result["integration_id"], calendar


def google_now(stack: Stack) -> Callable[[], datetime]:
    return lambda: datetime.fromtimestamp(stack.google.clock(), UTC)


# The jitter draw of the backoff: the first retry comes after 0.99 x 2 s (GATEWAY_SYNC_BACKOFF_
# BASE_S), the longest the first backoff can be.
JITTER = 0.99
