"""Several gateway processes on one database share the sync work through leases.

Two schedulers with their own database pools, token managers and owners sync many
calendars: every calendar is synced, exactly as often as asked, never by both at once. A
gateway process (`python -m gateway serve`) killed with SIGKILL while it holds a lease in the
middle of a sync: once the lease has run out another scheduler completes the calendar.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.db.schema import calendars
from gateway.db.values import as_utc
from gateway.google.calendar import CalendarClient
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.config import SchedulerConfig
from gateway.sync.engine import SyncEngine, SyncOutcome
from gateway.sync.lease_store import LeaseRelease
from gateway.sync.scheduler import SyncScheduler
from gateway.sync.store import SyncStore
from tests.support.processes import Process, gateway_env, process
from tests.support.scheduler import EVERYTHING, FakeClock, blocks, event, eventually
from tests.support.stack import ALICE, Stack

USERS = 8
ROUNDS = 3


@dataclass
class Tracker:
    """Counts syncs per calendar and how many ran at once, across every scheduler."""

    in_flight: Counter[str] = field(default_factory=Counter)
    most_at_once: Counter[str] = field(default_factory=Counter)
    syncs: Counter[str] = field(default_factory=Counter)
    by_owner: Counter[str] = field(default_factory=Counter)

    def engine_class(self, owner: str) -> type[SyncEngine]:
        tracker = self

        class Counting(SyncEngine):
            async def sync_calendar(
                self,
                calendar_id: str,
                *,
                claimed: CalendarRow | None = None,
                release: LeaseRelease | None = None,
            ) -> SyncOutcome:
                tracker.in_flight[calendar_id] += 1
                tracker.most_at_once[calendar_id] = max(
                    tracker.most_at_once[calendar_id], tracker.in_flight[calendar_id]
                )
                try:
                    return await super().sync_calendar(
                        calendar_id, claimed=claimed, release=release
                    )
                finally:
                    tracker.in_flight[calendar_id] -= 1
                    tracker.syncs[calendar_id] += 1
                    tracker.by_owner[owner] += 1

        return Counting


async def scheduler_for(
    stack: Stack,
    proc: Process,
    owner: str,
    *,
    engine_class: type[SyncEngine] = SyncEngine,
    config: SchedulerConfig | None = None,
    clock: FakeClock | None = None,
) -> SyncScheduler:
    client = await CalendarClient.create(stack.http, stack.settings.google_calendar_api_url)
    engine = engine_class(
        store=SyncStore(proc.db),
        client=client,
        tokens=proc.tokens,
        **({"clock": clock} if clock is not None else {}),
    )
    if clock is not None:
        return SyncScheduler(engine=engine, config=config, owner=owner, clock=clock)
    return SyncScheduler(engine=engine, config=config, owner=owner)


# PostgreSQL only: several gateway processes share one database only there (a second `serve`
# on one SQLite file is refused at start, gateway.db.serve_lock). Two engines writing one SQLite
# file from one test process contend outside the per-process writer queue, and under a loaded
# machine a sync attempt could fail on the lock and be retried, counted here as a second sync.
@pytest.mark.parametrize("backend", ["postgres"])
async def test_two_processes_share_calendars_without_double_sync(stack: Stack) -> None:
    emails = [f"rep{n}@example.com" for n in range(USERS)]
    for n, email in enumerate(emails):
        stack.google.add_user(f"4000000000000000000{n:02d}", email)
        google = stack.google.calendars.ensure_user(email)
        for day in range(1, 4):
            stack.google.calendars.insert_event(
                google,
                event(f"ev{n:02d}d{day}", f"2026-12-0{day}T09:00:00Z", f"2026-12-0{day}T10:00:00Z"),
            )
        await stack.connect(email, user_id=f"u-{n}")
    # Every events.list answers a little later: syncs overlap in time.
    stack.google.inject_fault(delay_s=0.02, times=10_000, endpoint="events.list")

    tracker = Tracker()
    config = SchedulerConfig(tick_s=0.02, concurrency=3)
    async with process(stack) as one, process(stack) as two:
        a = await scheduler_for(
            stack, one, "proc-a", engine_class=tracker.engine_class("a"), config=config
        )
        b = await scheduler_for(
            stack, two, "proc-b", engine_class=tracker.engine_class("b"), config=config
        )
        store = SyncStore(stack.engine)

        async def settled(expected_syncs: int) -> bool:
            async with stack.engine.connect() as conn:
                rows = (await conn.execute(select(calendars))).mappings().all()
            return (
                len(rows) == USERS
                and all(r["lease_owner"] is None and r["sync_requested_at"] is None for r in rows)
                # >=: a double sync would overshoot; the asserts below say so.
                and sum(tracker.syncs.values()) >= expected_syncs
            )

        a.start()
        b.start()
        try:
            await eventually(lambda: settled(USERS), timeout_s=60)
            for round_ in range(1, ROUNDS + 1):
                async with stack.engine.connect() as conn:
                    ids = list((await conn.execute(select(calendars.c.id))).scalars())
                for calendar_id in ids:
                    assert await store.request_sync(calendar_id, datetime.now().astimezone())
                a.nudge()
                b.nudge()
                await eventually(functools.partial(settled, USERS * (1 + round_)), timeout_s=60)
        finally:
            await a.stop()
            await b.stop()

    assert len(tracker.syncs) == USERS
    assert set(tracker.syncs.values()) == {1 + ROUNDS}  # each exactly as often as asked
    assert set(tracker.most_at_once.values()) == {1}  # never two syncs of one calendar at once
    assert tracker.by_owner["a"] > 0 and tracker.by_owner["b"] > 0
    # Google saw the same: one events.list sequence per sync, per calendar.
    for email in emails:
        sync_lists = [
            r
            for r in stack.google.inspector.requests(endpoint="events.list")
            if f"/calendars/{email}/" in r.path and "showDeleted" in r.query
        ]
        assert len(sync_lists) == 1 + ROUNDS
    for calendar_id in tracker.syncs:
        row = await store.get(calendar_id)
        assert row is not None and row.state == "synced"
        assert len(await store.busy_between(calendar_id, *EVERYTHING)) == 3


async def test_a_killed_process_lease_is_taken_over(stack: Stack, tmp_path: Path) -> None:
    google = stack.google.calendars.ensure_user(ALICE)
    stack.google.calendars.insert_event(
        google, event("survive1", "2026-12-03T14:00:00Z", "2026-12-03T15:00:00Z")
    )
    integration_id = (await stack.connect(ALICE, user_id="u-killed"))["integration_id"]
    clock = FakeClock()
    async with process(stack) as ours:
        scheduler = await scheduler_for(stack, ours, "survivor", clock=clock)
        # The calendar row exists before the other process starts (its first sync is due).
        [calendar] = await scheduler.engine.ensure_calendars(integration_id)
        # The other process's events.list will hang: it holds the lease mid-sync.
        hang = stack.google.inject_fault(delay_s=6, times=1, user=ALICE, endpoint="events.list")
        log_file = (tmp_path / "gateway.log").open("wb")
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            cwd=tmp_path,
            env=gateway_env(stack, lease_s=3),
            stdout=log_file,
            stderr=log_file,
        )
        try:

            async def hanging_in_the_child() -> bool:
                return hang.applied == 1

            await eventually(hanging_in_the_child, timeout_s=60)
            held = await SyncStore(ours.db).get(calendar.id)
            assert held is not None and held.state == "initial"
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
            log_file.close()
        async with ours.db.connect() as conn:
            owner, lease_until = (
                await conn.execute(
                    select(calendars.c.lease_owner, calendars.c.lease_until).where(
                        calendars.c.id == calendar.id
                    )
                )
            ).one()
        assert owner and owner != "survivor"
        lease_until = as_utc(lease_until)
        assert lease_until is not None and lease_until > clock()

        # While the dead process's lease lasts, nobody takes the calendar...
        assert await scheduler.run_once() == []
        # ... once it has run out (no sleeping: our clock moves on), the survivor does.
        clock.set(lease_until + timedelta(milliseconds=1))
        assert await scheduler.run_once() == [calendar.id]
        done = await SyncStore(ours.db).get(calendar.id)
        assert done is not None and done.state == "synced"
        assert await SyncStore(ours.db).busy_between(calendar.id, *EVERYTHING) == blocks(
            ("2026-12-03T14:00:00+00:00", "2026-12-03T15:00:00+00:00")
        )
        async with ours.db.connect() as conn:
            assert (
                await conn.execute(
                    select(calendars.c.lease_owner).where(calendars.c.id == calendar.id)
                )
            ).scalar() is None
