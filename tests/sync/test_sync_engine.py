"""The sync engine against the Google emulator over real HTTP, on SQLite and PostgreSQL.

Full then incremental sync (deltas merged, not replaced), paging with short and empty pages,
410 at any page (a new generation, readers keep the old complete copy meanwhile), recurring
series with EXDATE, modified and cancelled instances across a DST change, what is busy,
data minimisation in the raw rows, no Google call for an inactive integration, and the
disconnect purge.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.exc import NoResultFound
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from emulator.calendar_store import Calendar
from gateway.connections.model import Status
from gateway.db.notify import bump_calendars
from gateway.db.schema import busy_blocks, calendar_events, calendars
from gateway.errors import NotFound
from gateway.google.calendar import CalendarClient
from gateway.google.events import LIST_FIELDS
from gateway.http.appkeys import INTEGRATIONS_KEY, TOKENS_KEY
from gateway.http.disconnect_routes import disconnect_hooks
from gateway.sync import copy_store
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.config import SyncConfig
from gateway.sync.copy_store import EVENT_COLUMNS
from gateway.sync.engine import SyncEngine
from gateway.sync.model import BusyBlock, Horizon
from gateway.sync.store import SyncStore
from tests.support.hops import counted_hops
from tests.support.stack import ALICE, Stack

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
BERLIN = "Europe/Berlin"
EVERYTHING = (NOW - timedelta(days=60), NOW + timedelta(days=400))


@dataclass
class Harness:
    stack: Stack
    engine: SyncEngine
    integration_id: str
    calendar: CalendarRow
    google_cal: Calendar
    client: CalendarClient
    hooks: list[Callable[[str, int], Awaitable[None]]] = field(default_factory=list)

    def with_config(self, config: SyncConfig) -> SyncEngine:
        return make_engine(self.stack, self.client, config=config)

    async def busy(self) -> list[tuple[str, str]]:
        """Busy blocks as (start, end) in Berlin wall time, for readable assertions."""
        return [
            (
                s.astimezone(ZoneInfo(BERLIN)).strftime("%m-%d %H:%M"),
                e.astimezone(ZoneInfo(BERLIN)).strftime("%H:%M"),
            )
            for s, e in await self.engine.busy_between(self.calendar.id, *EVERYTHING)
        ]

    def insert(self, event_id: str, start: str, end: str, **extra: Any) -> None:
        """A timed event in Berlin wall time (`2026-11-23T10:00`)."""
        self.stack.google.calendars.insert_event(
            self.google_cal,
            {
                "id": event_id,
                "start": {"dateTime": start + ":00", "timeZone": BERLIN},
                "end": {"dateTime": end + ":00", "timeZone": BERLIN},
                **extra,
            },
        )


def make_engine(
    stack: Stack,
    client: CalendarClient,
    *,
    config: SyncConfig | None = None,
    page_hook: Callable[[str, int], Awaitable[None]] | None = None,
) -> SyncEngine:
    return SyncEngine(
        store=SyncStore(stack.engine),
        client=client,
        tokens=stack.app[TOKENS_KEY],
        config=config,
        clock=lambda: NOW,
        page_hook=page_hook,
    )


@pytest.fixture
async def h(stack: Stack) -> AsyncIterator[Harness]:
    result = await stack.connect(ALICE, user_id="u-alice")
    assert result["status"] == "connected"
    client = await CalendarClient.create(stack.http, stack.settings.google_calendar_api_url)
    hooks: list[Callable[[str, int], Awaitable[None]]] = []

    async def page_hook(kind: str, page: int) -> None:
        for hook in list(hooks):
            await hook(kind, page)

    engine = make_engine(stack, client, page_hook=page_hook)
    [calendar] = await engine.ensure_calendars(result["integration_id"])
    assert calendar.google_calendar_id == ALICE and calendar.time_zone == BERLIN
    assert calendar.state == "initial"
    yield Harness(
        stack,
        engine,
        result["integration_id"],
        calendar,
        stack.google.calendars.ensure_user(ALICE),
        client,
        hooks,
    )


async def rows(db: AsyncEngine, table: Any) -> list[dict[str, Any]]:
    async with db.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(table))).mappings()]


async def test_full_then_incremental_merges_deltas(h: Harness) -> None:
    h.insert("aaaa1", "2026-11-23T10:00", "2026-11-23T11:00")
    h.insert("bbbb1", "2026-11-24T10:00", "2026-11-24T11:00")
    h.insert("cccc1", "2026-11-25T10:00", "2026-11-25T11:00")

    first = await h.engine.sync_calendar(h.calendar.id)
    assert first.status == "synced" and first.full and first.generation == 1
    assert await h.busy() == [
        ("11-23 10:00", "11:00"),
        ("11-24 10:00", "11:00"),
        ("11-25 10:00", "11:00"),
    ]

    store = h.stack.google.calendars
    h.insert("dddd1", "2026-11-26T14:00", "2026-11-26T15:30")
    store.patch_event(
        h.google_cal,
        "bbbb1",
        {
            "start": {"dateTime": "2026-11-24T16:00:00+01:00"},
            "end": {"dateTime": "2026-11-24T17:00:00+01:00"},
        },
    )
    store.delete_event(h.google_cal, "cccc1")

    second = await h.engine.sync_calendar(h.calendar.id)
    assert second.status == "synced" and not second.full and second.generation == 1
    assert second.changes == 3
    assert await h.busy() == [
        ("11-23 10:00", "11:00"),
        ("11-24 16:00", "17:00"),
        ("11-26 14:00", "15:30"),
    ]

    # Nothing changed: an empty delta changes nothing (and repeating one is harmless).
    third = await h.engine.sync_calendar(h.calendar.id)
    assert third.changes == 0 and len(await h.busy()) == 3
    row = await h.engine.store.get(h.calendar.id)
    assert row is not None and row.state == "synced" and row.last_success_at == NOW
    assert row.last_error is None and row.horizon == SyncConfig().horizon(NOW)
    # Full and incremental listings asked Google for the fields a sync reads, nothing more
    # (and the primary calendar's probe for its zone, for its zone alone).
    listings = h.stack.google.inspector.requests(endpoint="events.list")
    assert len(listings) >= 4
    assert {r.query.get("fields") for r in listings} == {LIST_FIELDS, "timeZone"}


async def test_a_changed_exception_reads_its_series_through_the_indexes(h: Harness) -> None:
    # A calendar of many single events and one weekly series (Mondays 09:00 Berlin) with a
    # moved instance. A delta that touches the series reads its master and exceptions again
    # (`_SERIES_RECORDS`): through the primary key and the (partial) series index, not by
    # walking the calendar's whole copy, which grows with every event it holds.
    for n in range(300):
        day = 1 + n % 28
        h.insert(f"single{n:05d}", f"2026-12-{day:02d}T07:00", f"2026-12-{day:02d}T07:30")
    h.insert(
        "series00002",
        "2026-11-23T09:00",
        "2026-11-23T10:00",
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"],
    )
    google = h.stack.google.calendars
    moved = {
        "start": {"dateTime": "2026-11-30T13:00:00+01:00"},
        "end": {"dateTime": "2026-11-30T14:00:00+01:00"},
    }
    google.patch_event(h.google_cal, "series00002_20261130T080000Z", moved)
    await h.engine.sync_calendar(h.calendar.id)

    reads: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        # An IN list on SQLite, an array on PostgreSQL (gateway.db.direct).
        series = ("recurring_event_id IN", "recurring_event_id = ANY")
        if "FROM calendar_events" in statement and any(s in statement for s in series):
            reads.append((statement, parameters))

    later = {
        "start": {"dateTime": "2026-11-30T15:00:00+01:00"},
        "end": {"dateTime": "2026-11-30T16:00:00+01:00"},
    }
    google.patch_event(h.google_cal, "series00002_20261130T080000Z", later)
    sa_event.listen(h.stack.engine.sync_engine, "before_cursor_execute", seen)
    try:
        outcome = await h.engine.sync_calendar(h.calendar.id)
    finally:
        sa_event.remove(h.stack.engine.sync_engine, "before_cursor_execute", seen)

    assert not outcome.full and outcome.changes == 1
    series = [b for b in await h.busy() if b[1] != "07:30"]  # the singles end at 07:30
    assert series == [("11-23 09:00", "10:00"), ("11-30 15:00", "16:00"), ("12-07 09:00", "10:00")]
    assert len(reads) == 1
    if h.stack.engine.dialect.name != "sqlite":
        return  # PostgreSQL plans by its statistics (a bitmap OR serves either form)
    statement, parameters = reads[0]
    async with h.stack.engine.connect() as conn:
        plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        searches = [str(row[-1]) for row in plan if "calendar_events" in str(row[-1])]
    assert len(searches) == 2, searches
    assert all("event_id=?" in s for s in searches), searches


async def test_paging_with_short_and_empty_pages(h: Harness) -> None:
    for i in range(12):
        h.insert(f"page{i:04d}", f"2026-12-{i + 1:02d}T09:00", f"2026-12-{i + 1:02d}T10:00")
    h.stack.google.calendars.max_page_items = 2
    h.stack.google.calendars.empty_page_every = 3

    first = await h.engine.sync_calendar(h.calendar.id)
    assert first.pages >= 8 and len(await h.busy()) == 12

    for i in range(0, 12, 2):
        h.stack.google.calendars.delete_event(h.google_cal, f"page{i:04d}")
    h.insert("late0001", "2026-12-20T09:00", "2026-12-20T09:30")
    second = await h.engine.sync_calendar(h.calendar.id)
    assert not second.full and second.pages >= 4 and second.changes == 7
    busy = await h.busy()
    assert len(busy) == 7 and busy[-1] == ("12-20 09:00", "09:30")


async def test_410_resyncs_into_a_new_generation_that_readers_see_only_when_complete(
    h: Harness,
) -> None:
    h.insert("keep0001", "2026-11-23T10:00", "2026-11-23T11:00")
    h.insert("gone0001", "2026-11-24T10:00", "2026-11-24T11:00")
    assert (await h.engine.sync_calendar(h.calendar.id)).generation == 1
    before = await h.busy()

    google = h.stack.google.calendars
    for i in range(4):
        h.insert(f"fresh{i:03d}", f"2026-12-0{i + 1}T09:00", f"2026-12-0{i + 1}T10:00")
    google.delete_event(h.google_cal, "gone0001")
    google.max_page_items = 1
    seen_during_resync: list[list[tuple[str, str]]] = []

    async def hook(kind: str, page: int) -> None:
        if kind == "incremental" and page == 1:
            # Google drops the token between pages: the next page answers 410.
            google.invalidate_sync_tokens(ALICE)
        if kind == "full":
            seen_during_resync.append(await h.busy())

    h.hooks.append(hook)
    outcome = await h.engine.sync_calendar(h.calendar.id)
    assert outcome.status == "synced" and outcome.full and outcome.resynced
    assert outcome.generation == 2 and outcome.pages >= 5
    # Every read during the resync saw the old, complete copy; never an empty or partial one.
    assert seen_during_resync and all(seen == before for seen in seen_during_resync)
    after = await h.busy()
    assert len(after) == 5 and ("11-24 10:00", "11:00") not in after
    # The old generation is gone; the new one holds every record.
    assert {r["generation"] for r in await rows(h.stack.engine, calendar_events)} == {2}
    assert {r["generation"] for r in await rows(h.stack.engine, busy_blocks)} == {2}

    # A 410 on the very first page of an incremental sync: same path.
    h.hooks.clear()
    google.invalidate_sync_tokens(ALICE)
    again = await h.engine.sync_calendar(h.calendar.id)
    assert again.resynced and again.generation == 3 and await h.busy() == after


async def test_recurring_series_with_exdate_modified_and_cancelled_instances_across_dst(
    h: Harness,
) -> None:
    google = h.stack.google.calendars
    # Mondays 09:00 Berlin from 2027-03-15 (CET); Berlin moves to CEST on 2027-03-28.
    google.insert_event(
        h.google_cal,
        {
            "id": "series00001",
            "start": {"dateTime": "2027-03-15T09:00:00", "timeZone": BERLIN},
            "end": {"dateTime": "2027-03-15T10:00:00", "timeZone": BERLIN},
            "recurrence": [
                "RRULE:FREQ=WEEKLY;COUNT=6",
                "EXDATE;TZID=Europe/Berlin:20270322T090000",
            ],
        },
    )
    google.patch_event(
        h.google_cal,
        "series00001_20270329T070000Z",
        {
            "start": {"dateTime": "2027-03-29T11:00:00+02:00"},
            "end": {"dateTime": "2027-03-29T12:00:00+02:00"},
        },
    )
    google.delete_event(h.google_cal, "series00001_20270405T070000Z")

    await h.engine.sync_calendar(h.calendar.id)
    expected = [
        ("03-15 09:00", "10:00"),
        ("03-29 11:00", "12:00"),  # the modified instance
        ("04-12 09:00", "10:00"),  # still 09:00 local after the change
        ("04-19 09:00", "10:00"),
    ]
    assert await h.busy() == expected
    utc_starts = [s for s, _ in await h.engine.busy_between(h.calendar.id, *EVERYTHING)]
    assert [s.hour for s in utc_starts] == [8, 9, 7, 7]

    # Exceptions arriving as deltas recompute the series.
    google.delete_event(h.google_cal, "series00001_20270412T070000Z")
    google.patch_event(
        h.google_cal, "series00001_20270329T070000Z", {"transparency": "transparent"}
    )
    outcome = await h.engine.sync_calendar(h.calendar.id)
    assert not outcome.full
    assert await h.busy() == [("03-15 09:00", "10:00"), ("04-19 09:00", "10:00")]

    # Deleting the series deletes everything it blocked.
    google.delete_event(h.google_cal, "series00001")
    await h.engine.sync_calendar(h.calendar.id)
    assert await h.busy() == []
    assert await h.engine.store.count_records(h.calendar.id) == 0


async def test_what_is_busy_and_all_day_days(h: Harness) -> None:
    h.insert("bus00001", "2026-11-23T09:00", "2026-11-23T10:00")
    h.insert("free0001", "2026-11-23T11:00", "2026-11-23T12:00", transparency="transparent")
    h.insert("tent0001", "2026-11-23T13:00", "2026-11-23T14:00", status="tentative")
    h.insert(
        "decl0001",
        "2026-11-23T15:00",
        "2026-11-23T16:00",
        attendees=[
            {"email": ALICE, "responseStatus": "declined"},
            {"email": "organizer@example.org", "responseStatus": "accepted"},
        ],
    )
    h.stack.google.calendars.insert_event(
        h.google_cal,
        {"id": "holid001", "start": {"date": "2026-12-24"}, "end": {"date": "2026-12-26"}},
    )
    await h.engine.sync_calendar(h.calendar.id)
    assert await h.busy() == [
        ("11-23 09:00", "10:00"),
        ("11-23 13:00", "14:00"),  # tentative counts by default
        ("12-24 00:00", "00:00"),  # two whole Berlin days
    ]
    [(start, end)] = await h.engine.busy_between(
        h.calendar.id, datetime(2026, 12, 24, tzinfo=UTC), datetime(2026, 12, 25, tzinfo=UTC)
    )
    assert (start, end) == (
        datetime(2026, 12, 23, 23, tzinfo=UTC),
        datetime(2026, 12, 25, 23, tzinfo=UTC),
    )

    # Configured otherwise, re-expanding the stored copy (no Google call) frees tentative time.
    before = len(h.stack.google.inspector.records)
    relaxed = h.with_config(SyncConfig(tentative_is_busy=False))
    assert await relaxed.reexpand(h.calendar.id) == 2
    assert ("11-23 13:00", "14:00") not in await h.busy()
    assert len(h.stack.google.inspector.records) == before


async def test_a_time_zone_changed_at_google_rebuilds_the_copy_in_the_new_zone(
    h: Harness,
) -> None:
    """The user moves and sets their calendar to New York in Google Calendar's settings. An
    all-day event is busy from midnight to midnight in the calendar's zone, so its block must
    move by six hours: the next incremental listing names the new zone, and the engine
    rebuilds the copy in it (as after a 410) and stores the zone."""
    h.stack.google.calendars.insert_event(
        h.google_cal,
        {"id": "offsite1", "start": {"date": "2026-12-24"}, "end": {"date": "2026-12-25"}},
    )
    await h.engine.sync_calendar(h.calendar.id)
    day = datetime(2026, 12, 23, tzinfo=UTC), datetime(2026, 12, 27, tzinfo=UTC)
    assert await h.engine.busy_between(h.calendar.id, *day) == [
        (datetime(2026, 12, 23, 23, tzinfo=UTC), datetime(2026, 12, 24, 23, tzinfo=UTC))
    ]

    # As the owner would, over the emulator's HTTP control API (no event changes, no push).
    url = f"{h.stack.google_url}/_emulator/calendar/calendars/{ALICE}"
    async with h.stack.http.patch(url, json={"timeZone": "America/New_York"}) as r:
        assert r.status == 200, await r.text()
    async with h.stack.http.patch(url, json={"timeZone": "Mars/Olympus"}) as r:
        assert r.status == 400  # the emulator refuses a zone that does not exist

    resync = await h.engine.sync_calendar(h.calendar.id)
    assert resync.status == "synced" and resync.full and resync.resynced
    assert resync.generation == 2
    assert await h.engine.busy_between(h.calendar.id, *day) == [
        (datetime(2026, 12, 24, 5, tzinfo=UTC), datetime(2026, 12, 25, 5, tzinfo=UTC))
    ]
    row = await h.engine.store.get(h.calendar.id)
    assert row is not None and row.time_zone == "America/New_York"

    # The zone is current again: the next listing is an ordinary incremental one.
    again = await h.engine.sync_calendar(h.calendar.id)
    assert again.status == "synced" and not again.full and again.generation == 2


async def test_a_zone_changed_by_discovery_also_rebuilds_the_copy(h: Harness) -> None:
    """Discovery storing a new zone for a calendar with a copy drops its sync token: the next
    sync is a full one that builds the copy in that zone (an incremental one would find the
    listing's zone equal to the stored one and rebuild nothing)."""
    h.stack.google.calendars.insert_event(
        h.google_cal,
        {"id": "offsite2", "start": {"date": "2026-12-24"}, "end": {"date": "2026-12-25"}},
    )
    await h.engine.sync_calendar(h.calendar.id)
    h.google_cal.time_zone = "America/New_York"
    [listed] = await h.engine.ensure_calendars(h.integration_id)
    assert listed.time_zone == "America/New_York" and listed.sync_token is None
    rebuilt = await h.engine.sync_calendar(h.calendar.id)
    assert rebuilt.full and rebuilt.generation == 2
    day = datetime(2026, 12, 23, tzinfo=UTC), datetime(2026, 12, 27, tzinfo=UTC)
    assert await h.engine.busy_between(h.calendar.id, *day) == [
        (datetime(2026, 12, 24, 5, tzinfo=UTC), datetime(2026, 12, 25, 5, tzinfo=UTC))
    ]


async def test_reexpansion_for_a_moved_horizon_needs_no_google(h: Harness) -> None:
    h.stack.google.calendars.insert_event(
        h.google_cal,
        {
            "id": "dailie001",
            "start": {"dateTime": "2026-11-23T08:00:00", "timeZone": BERLIN},
            "end": {"dateTime": "2026-11-23T08:30:00", "timeZone": BERLIN},
            "recurrence": ["RRULE:FREQ=DAILY"],
        },
    )
    await h.engine.sync_calendar(h.calendar.id)
    horizon = SyncConfig().horizon(NOW)
    late = (horizon.end - timedelta(days=1), horizon.end + timedelta(days=30))
    assert len(await h.engine.busy_between(h.calendar.id, *late)) == 1

    before = len(h.stack.google.inspector.records)
    moved = Horizon(horizon.start + timedelta(days=30), horizon.end + timedelta(days=30))
    assert await h.engine.reexpand(h.calendar.id, moved)
    assert len(await h.engine.busy_between(h.calendar.id, *late)) == 31
    assert len(h.stack.google.inspector.records) == before
    row = await h.engine.store.get(h.calendar.id)
    assert row is not None and row.horizon == moved


SECRETS = ["Project Nightingale", "Merger with Globex", "Room Zanzibar", "zed@example.org"]


async def test_raw_rows_hold_no_titles_descriptions_attendees_or_locations(h: Harness) -> None:
    extra = {
        "summary": SECRETS[0],
        "description": SECRETS[1],
        "location": SECRETS[2],
        "attendees": [{"email": SECRETS[3], "responseStatus": "accepted"}],
    }
    h.insert("priv0001", "2026-11-23T09:00", "2026-11-23T10:00", **extra)
    h.stack.google.calendars.insert_event(
        h.google_cal,
        {
            "id": "priv0002",
            "start": {"dateTime": "2026-11-24T09:00:00", "timeZone": BERLIN},
            "end": {"dateTime": "2026-11-24T10:00:00", "timeZone": BERLIN},
            "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"],
            **extra,
        },
    )
    h.stack.google.calendars.patch_event(
        h.google_cal, "priv0002_20261125T080000Z", {"summary": SECRETS[0] + " (moved)"}
    )
    await h.engine.sync_calendar(h.calendar.id)
    assert len(await h.busy()) == 4
    for table in (calendars, calendar_events, busy_blocks):
        for row in await rows(h.stack.engine, table):
            for value in row.values():
                assert not any(s in str(value) for s in SECRETS), (table.name, value)

    # Opted in, the same events keep their details.
    detailed = h.with_config(SyncConfig(store_event_details=True))
    h.stack.google.calendars.invalidate_sync_tokens(ALICE)
    await detailed.sync_calendar(h.calendar.id)
    details = [r["details"] for r in await rows(h.stack.engine, calendar_events)]
    assert any(d and SECRETS[0] in d for d in details)


async def test_inactive_integration_is_never_synced(h: Harness) -> None:
    h.insert("aaaa1", "2026-11-23T10:00", "2026-11-23T11:00")
    assert await h.stack.app[INTEGRATIONS_KEY].set_status(
        h.integration_id, Status.NEEDS_REAUTH, reason="invalid_grant"
    )
    inspector = h.stack.google.inspector
    since = inspector.records[-1].seq if inspector.records else 0
    outcome = await h.engine.sync_calendar(h.calendar.id)
    assert outcome.status == "inactive"
    assert [c.id for c in await h.engine.ensure_calendars(h.integration_id)] == [h.calendar.id]
    assert inspector.requests(since_seq=since) == []
    row = await h.engine.store.get(h.calendar.id)
    assert row is not None and row.state == "initial" and row.active_generation is None


async def test_a_discovered_calendar_is_written_in_one_hop_and_a_duplicate_is_found(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new calendar's row and the integration's version bump: on SQLite in ONE hop to the
    connection's thread (the INSERT deferred into the bump's), answered as a fresh read
    lists it. And when the row appeared meanwhile (another discovery, in the instant between
    this one's read and its write), the INSERT's duplicate is caught and the row found."""
    store = h.engine.store

    def team(new_id: str) -> Awaitable[list[CalendarRow]]:
        return store.ensure_listed(
            new_id=new_id,
            integration_id=h.integration_id,
            tenant_id="acme",
            google_calendar_id="team@group.calendar.google.com",
            time_zone="UTC",
            now=NOW + timedelta(seconds=1),
        )

    sqlite = h.stack.engine.dialect.name == "sqlite"
    with counted_hops() as hops:
        listed = await team("cal_" + "t" * 24)
    # The integration's calendars read (a read: no writer), then the INSERT and bump.
    assert hops == (["_run", "_run"] if sqlite else [])
    assert listed == await store.calendars_of(h.integration_id)
    assert [c.id for c in listed] == [h.calendar.id, "cal_" + "t" * 24]

    # The same calendar again, as if the first read had missed the row: the duplicate INSERT
    # fails (unique integration and Google id), the retry reads it, nothing is added.
    reads = 0
    real = store._calendars_of

    async def stale_once(conn: Any, integration_id: str) -> list[CalendarRow]:
        nonlocal reads
        reads += 1
        found = await real(conn, integration_id)
        return [c for c in found if c.id != "cal_" + "t" * 24] if reads == 1 else found

    monkeypatch.setattr(store, "_calendars_of", stale_once)
    again = await team("cal_" + "u" * 24)
    assert reads == 2 and again == listed == await store.calendars_of(h.integration_id)


async def test_discovery_lists_every_calendar_of_the_integration_as_stored(h: Harness) -> None:
    """`ensure_calendars` answers from the transaction that found or created the primary's
    row (no second read): the same list, in the same order, as reading the rows afterwards,
    with an older second calendar, a changed zone, and a primary created after it."""
    store = h.engine.store

    async def older_team_calendar() -> None:
        await store.ensure_calendar(
            new_id="cal_" + "t" * 24,
            integration_id=h.integration_id,
            tenant_id="acme",
            google_calendar_id="team@group.calendar.google.com",
            time_zone="UTC",
            now=NOW - timedelta(days=1),
        )

    await older_team_calendar()
    listed = await h.engine.ensure_calendars(h.integration_id)
    assert listed == await store.calendars_of(h.integration_id)
    assert [c.id for c in listed] == ["cal_" + "t" * 24, h.calendar.id]

    # The zone changed at Google: the list carries the new one.
    h.stack.google.calendars.ensure_user(ALICE).time_zone = "America/New_York"
    listed = await h.engine.ensure_calendars(h.integration_id)
    assert listed == await store.calendars_of(h.integration_id)
    assert listed[1].time_zone == "America/New_York"

    # A primary created now (the old one gone) sorts after the older calendar.
    await store.purge_integration(h.integration_id)
    await older_team_calendar()
    listed = await h.engine.ensure_calendars(h.integration_id)
    assert listed == await store.calendars_of(h.integration_id)
    assert len(listed) == 2 and listed[1].google_calendar_id == ALICE


async def test_google_failure_is_recorded(h: Harness) -> None:
    # The user revoked access at Google: the refresh fails with invalid_grant, so the
    # integration becomes needs_reauth and the sync reports it inactive.
    await h.engine.sync_calendar(h.calendar.id)
    h.stack.google.revoke_user_access(ALICE)
    outcome = await h.engine.sync_calendar(h.calendar.id)
    assert outcome.status == "inactive"
    integration = await h.stack.app[INTEGRATIONS_KEY].get_by_id(h.integration_id)
    assert integration is not None and integration.status is Status.NEEDS_REAUTH
    # The last complete copy stays readable.
    assert (await h.engine.store.get(h.calendar.id)) is not None


async def test_disconnect_purges_every_synced_row(h: Harness) -> None:
    h.insert("aaaa1", "2026-11-23T10:00", "2026-11-23T11:00")
    h.insert("bbbb1", "2026-11-24T10:00", "2026-11-24T11:00")
    await h.engine.sync_calendar(h.calendar.id)
    # What gateway.http.sync_wiring.setup registers; the running app shares the hooks object.
    disconnect_hooks(h.stack.app).record_purgers.append(h.engine.purge_integration)

    url = h.stack.url(f"/v1/integrations/{h.integration_id}")
    async with h.stack.http.delete(url, headers=h.stack.auth()) as response:
        assert response.status == 200, await response.text()
        receipt = await response.json()
    assert receipt["records_purged"] == 3  # two event records and the calendar
    for table in (calendars, calendar_events, busy_blocks):
        async with h.stack.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(table))).scalar_one() == 0
    # Idempotent: a second purge finds nothing.
    integration = await h.stack.app[INTEGRATIONS_KEY].get_by_id(h.integration_id)
    assert integration is not None
    assert await h.engine.purge_integration(integration) == 0


async def test_concurrent_syncs_of_one_calendar_run_one_after_the_other(h: Harness) -> None:
    h.insert("aaaa1", "2026-11-23T10:00", "2026-11-23T11:00")
    first, second = await asyncio.gather(
        h.engine.sync_calendar(h.calendar.id), h.engine.sync_calendar(h.calendar.id)
    )
    assert (first.full, second.full) == (True, False)
    assert first.generation == second.generation == 1
    assert await h.busy() == [("11-23 10:00", "11:00")]


# When the ghost a dead build left (`insert_ghost`) blocks time.
GHOST_AT = datetime(2026, 11, 25, 9, tzinfo=UTC)


async def insert_ghost(
    conn: AsyncConnection, calendar_id: str, generation: int, record: Mapping[str, Any]
) -> None:
    """What a build that died leaves in `generation`, which nobody reads: a record `ghost001`
    (the fields of `record`) and its busy block at GHOST_AT."""
    await conn.execute(
        calendar_events.insert().values(
            {**record, "calendar_id": calendar_id, "generation": generation, "event_id": "ghost001"}
        )
    )
    await conn.execute(
        busy_blocks.insert().values(
            calendar_id=calendar_id,
            generation=generation,
            event_id="ghost001",
            start_at=GHOST_AT,
            end_at=GHOST_AT + timedelta(hours=1),
            series_id="ghost001",
        )
    )


async def test_a_one_page_rebuild_is_written_and_switched_in_one_transaction(h: Harness) -> None:
    """A calendar that fits in one page is rebuilt with one write transaction (records,
    blocks and the switch together, leftovers of an earlier build that died deleted in it),
    then one that drops the old generation; readers see the old copy until the switch."""
    h.insert("keep0001", "2026-11-23T10:00", "2026-11-23T11:00")
    h.insert("gone0001", "2026-11-24T10:00", "2026-11-24T11:00")
    assert (await h.engine.sync_calendar(h.calendar.id)).generation == 1
    db = h.stack.engine
    # A rebuild that died after writing part of generation 2 left a ghost behind.
    async with db.begin() as conn:
        [row] = [r for r in await rows(db, calendar_events) if r["event_id"] == "keep0001"]
        await insert_ghost(conn, h.calendar.id, 2, row)
        await bump_calendars(conn, [h.calendar.id])
    h.stack.google.calendars.delete_event(h.google_cal, "gone0001")
    h.insert("fresh001", "2026-12-01T09:00", "2026-12-01T10:00")
    h.stack.google.calendars.invalidate_sync_tokens(ALICE)

    commits: list[int] = []
    seen: list[list[tuple[str, str]]] = []

    def committed(_conn: Any) -> None:
        commits.append(1)

    async def hook(kind: str, page: int) -> None:
        seen.append(await h.busy())

    h.hooks.append(hook)
    sa_event.listen(db.sync_engine, "commit", committed)
    try:
        outcome = await h.engine.sync_calendar(h.calendar.id)
    finally:
        sa_event.remove(db.sync_engine, "commit", committed)
    assert outcome.resynced and outcome.generation == 2 and outcome.pages == 1
    assert len(commits) == 2, commits  # the build with its switch, then the old generation's drop
    assert seen == [[("11-23 10:00", "11:00"), ("11-24 10:00", "11:00")]]  # the old copy
    assert await h.busy() == [("11-23 10:00", "11:00"), ("12-01 09:00", "10:00")]
    assert {r["generation"] for r in await rows(db, calendar_events)} == {2}
    assert {r["generation"] for r in await rows(db, busy_blocks)} == {2}
    assert "ghost001" not in {r["event_id"] for r in await rows(db, calendar_events)}


async def test_a_first_build_clears_a_dead_build_s_rows_and_deletes_nothing_without_them(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A calendar's first one-page build deletes what an earlier first build that died left
    (records and blocks of a generation nobody reads) and, for a calendar with no such rows,
    sends no DELETE at all (two statements fewer while SQLite's writer is held)."""
    deleted: list[list[str]] = []
    write_bulk = copy_store.write_bulk

    async def spied(conn: Any, deletes: Any, inserts: Any, **kwargs: Any) -> None:
        deleted.append([d.table.name for d in deletes if d.values])
        await write_bulk(conn, deletes, inserts, **kwargs)

    monkeypatch.setattr(copy_store, "write_bulk", spied)
    h.insert("keep0001", "2026-11-23T10:00", "2026-11-23T11:00")
    db = h.stack.engine
    async with db.begin() as conn:
        # What a first build that died after its first page leaves: generation 1, not active.
        record = {
            "status": "confirmed",
            "transparency": "opaque",
            "self_declined": False,
            "event_type": "default",
            "all_day": False,
            "start_at": GHOST_AT,
            "end_at": GHOST_AT + timedelta(hours=1),
            "created_by_gateway": False,
        }
        await insert_ghost(conn, h.calendar.id, 1, record)
    assert (await h.engine.sync_calendar(h.calendar.id)).generation == 1
    assert deleted == [["calendar_events", "busy_blocks"]]
    assert {r["event_id"] for r in await rows(db, calendar_events)} == {"keep0001"}
    assert {r["event_id"] for r in await rows(db, busy_blocks)} == {"keep0001"}
    assert await h.busy() == [("11-23 10:00", "11:00")]

    # The same calendar's copy dropped (as a disconnect's purge does) and built again from
    # nothing: no leftovers, no DELETE.
    async with db.begin() as conn:
        for table in (calendar_events, busy_blocks):
            await conn.execute(table.delete().where(table.c.calendar_id == h.calendar.id))
        await conn.execute(
            calendars.update()
            .where(calendars.c.id == h.calendar.id)
            .values(active_generation=None, sync_token=None)
        )
        await bump_calendars(conn, [h.calendar.id])
    deleted.clear()
    assert (await h.engine.sync_calendar(h.calendar.id)).generation == 1
    assert deleted == [[]]
    assert await h.busy() == [("11-23 10:00", "11:00")]


async def test_a_build_that_cannot_switch_leaves_nothing_behind(h: Harness) -> None:
    """A build whose calendar went meanwhile (a disconnect purged it) or whose generation a
    newer build overtook writes nothing that stays: no records of a purged calendar, no
    blocks of a generation nobody reads."""
    h.insert("keep0001", "2026-11-23T10:00", "2026-11-23T11:00")
    assert (await h.engine.sync_calendar(h.calendar.id)).generation == 1
    store, db = h.engine.store, h.stack.engine
    [row] = [r for r in await rows(db, calendar_events) if r["event_id"] == "keep0001"]
    event_row = tuple(row[c] for c in EVENT_COLUMNS[2:])
    horizon = Horizon(*EVERYTHING)

    async def no_blocks(kept: list[Any]) -> list[Any]:
        return []

    stored, generation, count = await store.build_generation(
        "cal_purged", [event_row], no_blocks, sync_token="t", horizon=horizon, now=NOW
    )
    assert not stored.stored and (generation, count) == (0, 0)
    assert not [r for r in await rows(db, calendar_events) if r["calendar_id"] == "cal_purged"]

    # Generation 1 is active: a late build of generation 1 does not switch, and its blocks go.
    at = NOW + timedelta(days=3)
    late = [BusyBlock(at, at + timedelta(hours=1), "late0001", "late0001")]
    done = await store.activate_generation(
        h.calendar.id, 1, late, sync_token="t", horizon=horizon, now=NOW
    )
    assert not done.stored
    assert "late0001" not in {r["event_id"] for r in await rows(db, busy_blocks)}
    assert await h.busy() == [("11-23 10:00", "11:00")]


async def test_pages_listed_before_a_disconnect_s_purge_are_not_written_after_it(
    h: Harness,
) -> None:
    """A sync that listed pages before the disconnect purged the calendar, and writes them
    after: nothing is written (the purge's promise: every synced record gone), whichever
    write of a build, delta or booking it is."""
    h.insert("keep0001", "2026-11-23T10:00", "2026-11-23T11:00")
    assert (await h.engine.sync_calendar(h.calendar.id)).generation == 1
    store, db = h.engine.store, h.stack.engine
    [row] = [r for r in await rows(db, calendar_events) if r["event_id"] == "keep0001"]
    page = [tuple(row[c] for c in EVENT_COLUMNS[2:])]
    read_before = await store.get(h.calendar.id)  # as a delta or a booking read it
    assert read_before is not None
    assert await store.purge_integration(h.integration_id) > 0
    with pytest.raises(NotFound):
        await store.begin_generation(h.calendar.id, page)
    with pytest.raises(NotFound):
        await store.write_page(h.calendar.id, 2, page)

    async def blocks(records: list[Any]) -> list[BusyBlock]:
        at = NOW + timedelta(days=1)
        return [BusyBlock(at, at + timedelta(hours=1), "keep0001", "keep0001")]

    # A booking's own records: no copy to show them in.
    assert not await store.merge_local(read_before, page, compute=blocks)
    # A delta: its records and blocks were written before it found the calendar gone, and
    # its last statement (which would commit them with it on SQLite) changed nothing.
    with pytest.raises(NoResultFound):
        await store.apply_delta(read_before, page, compute=blocks, sync_token="t2", now=NOW)
    assert await rows(db, calendar_events) == [] and await rows(db, busy_blocks) == []
