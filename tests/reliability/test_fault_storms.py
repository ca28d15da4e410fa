"""Fault storms: Google misbehaving in every documented way while calendars keep changing, and
afterwards every calendar the gateway answers for equals Google's truth.

During the storm, at the emulator: bursts of 429 and 403 rate limits (`rateLimitExceeded`,
`userRateLimitExceeded`) and 500/503 on events.list and on the token endpoint; events.list
hanging beyond the Calendar client's timeout; every access token expiring at once (an hour
passes at Google), so every calendar refreshes through the token faults; sync tokens
invalidated (410 `fullSyncRequired`); push notifications dropped and duplicated; and one user
revoking the grant from Google's side. Meanwhile every user's calendar changes (inserts, moves,
deletions, events turned transparent) round after round.

Afterwards: every active calendar's local copy, as the agent reads it through the freebusy
API, equals the emulator's busy time over the horizon (no change lost, nothing stale); the
revoked integration is `needs_reauth`, answers 409 and costs no more Google calls; no log line
holds a token (tests/support/stack.py). A scheduler of the test's own (real clock, short backoffs, a
1 s Calendar timeout) does the syncing; the app's push maintenance opens real channels.
Rate-limit backoff timing itself is pinned tick by tick in tests/sync/test_scheduler.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from emulator.seed import seed_calendar
from gateway.db.schema import calendars, integrations, watch_channels
from gateway.db.values import as_utc
from gateway.google.calendar import CalendarClient
from gateway.http.appkeys import TOKENS_KEY
from gateway.sync.config import SchedulerConfig
from gateway.sync.engine import SyncEngine
from gateway.sync.scheduler import SyncScheduler
from gateway.sync.store import SyncStore
from tests.reliability.truth import assert_converged, gateway_freebusy, google_busy
from tests.support.processes import until
from tests.support.stack import EmulatorSecrets, Stack, start_stack

USERS = [f"storm{n}@example.com" for n in range(5)]
REVOKER = "leaver@example.com"
ROUNDS = 6


@pytest.fixture
async def storm_stack(
    engine: AsyncEngine, database_url: str, tmp_path: Path, emulator_secrets: EmulatorSecrets
) -> AsyncIterator[Stack]:
    """The stack with push maintenance running often (channels open as soon as calendars are
    synced); the syncing is done by the test's scheduler."""
    async for running in start_stack(
        engine,
        database_url,
        tmp_path,
        emulator_secrets=emulator_secrets,
        sync_worker=False,
        push_maintenance_interval_s=0.3,
    ):
        yield running


async def storm_scheduler(stack: Stack) -> SyncScheduler:
    """A scheduler as deployed, on the app's token manager, but with storm-sized timings: a
    1 s Calendar timeout (hangs are cut short), backoffs of at most 0.4 s, polls every 1-2 s."""
    client = await CalendarClient.create(
        stack.http, stack.settings.google_calendar_api_url, timeout_s=1.0
    )
    engine = SyncEngine(
        store=SyncStore(stack.engine),
        client=client,
        tokens=stack.app[TOKENS_KEY],
    )
    config = SchedulerConfig(
        tick_s=0.05,
        poll_interval_s=1,
        safety_poll_interval_s=2,
        lease_s=10,
        concurrency=8,
        backoff_base_s=0.05,
        backoff_max_s=0.4,
    )
    return SyncScheduler(engine=engine, config=config, owner="storm")


async def calendar_rows(stack: Stack) -> dict[str, Any]:
    """integration id -> its calendar row."""
    async with stack.engine.connect() as conn:
        rows = (await conn.execute(select(calendars))).mappings().all()
    return {r["integration_id"]: r for r in rows}


async def status_of(stack: Stack, integration_id: str) -> str:
    async with stack.engine.connect() as conn:
        return str(
            (
                await conn.execute(
                    select(integrations.c.status).where(integrations.c.id == integration_id)
                )
            ).scalar_one()
        )


def edit(stack: Stack, email: str, round_: int) -> None:
    """One round of edits "in Google Calendar" (each notifies the calendar's push channels):
    a new meeting, the previous round's moved, the one before turned free (transparent), the
    one four rounds back cancelled."""
    store = stack.google.calendars
    cal = store.ensure_user(email)
    day = datetime.now(UTC).replace(hour=13, minute=0, second=0, microsecond=0)

    def at(r: int, minutes: int = 0) -> dict[str, Any]:
        start = day + timedelta(days=1 + r, minutes=minutes)
        return {
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + timedelta(minutes=45)).isoformat()},
        }

    store.insert_event(cal, {"id": f"storm{round_:04d}", **at(round_)})
    if round_ >= 1:
        store.patch_event(cal, f"storm{round_ - 1:04d}", at(round_ - 1, minutes=90))
    if round_ >= 2:
        store.patch_event(cal, f"storm{round_ - 2:04d}", {"transparency": "transparent"})
    if round_ >= 4:
        store.delete_event(cal, f"storm{round_ - 4:04d}")


async def test_calendars_converge_after_a_storm_and_lose_no_change(storm_stack: Stack) -> None:
    stack = storm_stack
    google = stack.google
    ids: dict[str, str] = {}
    for n, email in enumerate([*USERS, REVOKER]):
        google.add_user(f"7000000000000000000{n:02d}", email, time_zone="America/New_York")
        seed_calendar(google.calendars, google.calendars.ensure_user(email), seed=n, count=30)
        ids[email] = (await stack.connect(email, user_id=f"u-storm-{n}"))["integration_id"]

    scheduler = await storm_scheduler(stack)
    scheduler.start()
    try:

        async def all_synced_with_channels() -> bool:
            rows = await calendar_rows(stack)
            async with stack.engine.connect() as conn:
                live = (
                    (
                        await conn.execute(
                            select(watch_channels.c.calendar_id).where(
                                watch_channels.c.state == "active"
                            )
                        )
                    )
                    .scalars()
                    .all()
                )
            return (
                len(rows) == len(ids)
                and all(r["state"] == "synced" for r in rows.values())
                and len(set(live)) == len(ids)
            )

        await until(all_synced_with_channels, timeout_s=60)
        await storm(stack, ids, scheduler)
    finally:
        await scheduler.stop()


async def storm(stack: Stack, ids: dict[str, str], scheduler: SyncScheduler) -> None:
    google = stack.google
    a, b, c, d, e = USERS
    faults = [
        # Rate limits, as Google words them, for two users' syncs.
        google.inject_fault(
            status=429, reason="rateLimitExceeded", times=3, user=a, endpoint="events.list"
        ),
        google.inject_fault(
            status=403, reason="userRateLimitExceeded", times=3, user=a, endpoint="events.list"
        ),
        google.inject_fault(
            status=403, reason="rateLimitExceeded", times=3, user=b, endpoint="events.list"
        ),
        # Google's own trouble.
        google.inject_fault(status=500, times=2, user=b, endpoint="events.list"),
        google.inject_fault(status=503, times=3, user=c, endpoint="events.list"),
        # Hangs beyond the Calendar client's 1 s timeout.
        google.inject_fault(delay_s=2.5, times=2, user=d, endpoint="events.list"),
        # The token endpoint misbehaves for whoever refreshes next.
        google.inject_fault(status=503, times=2, endpoint="token"),
        google.inject_fault(status=429, times=2, endpoint="token"),
        google.inject_fault(status=500, times=2, endpoint="token"),
    ]
    google.calendars.push_faults.drop_next = 3
    google.calendars.push_faults.duplicate_next = 3
    watcher = asyncio.create_task(never_empty(stack, {a: ids[a], e: ids[e]}))
    for round_ in range(ROUNDS):
        for email in [*USERS, REVOKER]:
            if email != REVOKER or round_ == 0:
                edit(stack, email, round_)
        if round_ == 1:
            # The leaver removes the app's access in their Google account.
            google.revoke_user_access(REVOKER)
        if round_ == 2:
            # Google drops sync tokens: the next syncs of e must start over (410).
            google.calendars.invalidate_sync_tokens(e)
            google.calendars.invalidate_sync_tokens(a)
        if round_ == 3:
            # An hour passes at Google: every access token expires at once, so every next
            # Calendar call gets 401 and refreshes through whatever token faults are left.
            google.advance_clock(3700)
        await asyncio.sleep(0.4)

    # The storm lasts until every scripted fault has been met (each is retried through).
    async def storm_spent() -> bool:
        pushed = google.calendars.push_faults
        return (
            all(f.times == 0 for f in faults)  # `times` counts down to 0 as they are met
            and pushed.drop_next == 0
            and pushed.duplicate_next == 0
        )

    await until(storm_spent, 60, lambda: [(f.endpoint, f.status, f.applied) for f in faults])
    watcher.cancel()
    answers = await asyncio.gather(watcher, return_exceptions=True)
    assert isinstance(answers[0], asyncio.CancelledError), answers  # it found nothing wrong
    storm_over = datetime.now(UTC)

    async def settled() -> bool:
        rows = await calendar_rows(stack)
        return all(
            rows[ids[email]]["state"] == "synced"
            and rows[ids[email]]["last_success_at"] is not None
            and as_utc(rows[ids[email]]["last_success_at"]) > storm_over
            for email in USERS
        )

    await until(settled, timeout_s=60)
    # The 410s and the expired tokens' 401s really happened.
    assert google.inspector.requests(endpoint="events.list", status=410)
    assert google.inspector.requests(endpoint="events.list", status=401)

    # Every active calendar converges to Google's truth; nothing was lost.
    compared = 0
    for email in USERS:
        compared += await assert_converged(stack, ids[email], email)
    assert compared > 5 * 30

    # The leaver: needs reauth (noticed at its next sync, with the dead grant), answers 409,
    # and costs Google nothing more.
    async def reauth() -> bool:
        return await status_of(stack, ids[REVOKER]) == "needs_reauth"

    await until(reauth)
    spent = len(calls(stack, REVOKER))
    now = datetime.now(UTC)
    with pytest.raises(AssertionError, match="integration_inactive"):
        await gateway_freebusy(stack, ids[REVOKER], now, now + timedelta(days=7))
    edit(stack, REVOKER, 1)  # a change (and notification) at Google changes nothing here
    scheduler.nudge()
    await asyncio.sleep(2.5)  # past a safety poll: nothing of the leaver's may be claimed
    assert len(calls(stack, REVOKER)) == spent
    async with stack.engine.connect() as conn:
        live = (
            await conn.execute(
                select(watch_channels.c.id).where(
                    watch_channels.c.integration_id == ids[REVOKER],
                    watch_channels.c.state.in_(("opening", "active")),
                )
            )
        ).all()
    assert live == [], "the leaver's channels are stopped"


async def never_empty(stack: Stack, watched: dict[str, str]) -> None:
    """The agent keeps asking about the next month of calendars whose copies are rebuilt
    (410) mid-storm: it is never told that a calendar with meetings is empty. Runs until
    cancelled; an AssertionError ends it early."""
    while True:
        for email, integration_id in watched.items():
            now = datetime.now(UTC)
            lo, hi = now, now + timedelta(days=30)
            assert google_busy(stack, email, lo, hi), "the seed left the month empty"
            answer = await gateway_freebusy(stack, integration_id, lo, hi)
            assert answer["busy"], answer
        await asyncio.sleep(0.05)


def calls(stack: Stack, email: str) -> list[Any]:
    """Calendar API calls made with the user's tokens."""
    sub = stack.google.find_user(email).sub
    return [
        r
        for r in stack.google.inspector.requests(user=sub)
        if r.endpoint.startswith(("events.", "calendarList", "channels", "freebusy"))
    ]
