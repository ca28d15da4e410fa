"""The ingest fast path (gateway/sync/rows.py) against the reference `parse_event`.

`parse_rows` must give exactly the rows `row_of(parse_event(...))` gives, and skip exactly the
items `parse_event` refuses: on Google's recorded pages, on the emulator's generated calendars
(singles, all-day, series with EXDATE, modified and cancelled instances, transparent, declined,
tombstones) and on hypothesis-generated events with odd and broken fields. Data minimisation
holds on the fast path too; rows written with the driver's bulk path read back as the records.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from emulator.calendar_api import select_fields
from emulator.calendar_store import CalendarStore, ListQuery
from emulator.seed import seed_calendar
from gateway.db.bulk import insert_rows, sqlite_chunks
from gateway.db.schema import busy_blocks, calendar_events
from gateway.db.values import epoch_ceil, epoch_floor
from gateway.google.errors import EventParseError
from gateway.google.events import GATEWAY_PROPERTY, LIST_FIELDS, parse_event
from gateway.sync.copy_store import EVENT_COLUMNS, EventMerge
from gateway.sync.model import EventRecord
from gateway.sync.rows import (
    RECURRING_EVENT_ID,
    ROW_COLUMNS,
    STATUS,
    EventRow,
    Skipped,
    parse_rows,
    record_of,
    row_of,
)
from gateway.sync.store import SyncStore
from tests.fixtures import GOOGLE

# "America" is a folder of the zone database, not a zone: unknown, like "Not/AZone".
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Not/AZone", "America")
OWNER = "tag-of-ours"


def reference(
    items: list[Any], calendar_tz: str, keep_details: bool, owner_tag: str | None
) -> tuple[list[EventRow], list[str]]:
    """The old path: parse_event per item, then the row of each record."""
    rows: list[EventRow] = []
    skipped: list[str] = []
    for item in items:
        try:
            record = parse_event(
                item, calendar_tz=calendar_tz, keep_details=keep_details, owner_tag=owner_tag
            )
        except EventParseError:
            skipped.append(str(item.get("id", "?"))[:80])
            continue
        rows.append(row_of(record))
    return rows, skipped


def assert_same(
    items: list[Any], calendar_tz: str, keep_details: bool = False, owner_tag: str | None = OWNER
) -> list[EventRow]:
    """Both paths give the same rows and skip the same items; input neither can read (a
    field of an impossible type) fails with the same exception on both."""
    try:
        fast, skipped = parse_rows(
            items, calendar_tz=calendar_tz, keep_details=keep_details, owner_tag=owner_tag
        )
    except Exception as exc:
        with pytest.raises(type(exc)):
            reference(items, calendar_tz, keep_details, owner_tag)
        return []
    rows, refused = reference(items, calendar_tz, keep_details, owner_tag)
    assert fast == rows
    assert [type(v) for r in fast for v in r] == [type(v) for r in rows for v in r]
    assert [s.event_id for s in skipped] == refused
    return fast


def recorded_items() -> list[Any]:
    items: list[Any] = []
    for path in sorted(GOOGLE.glob("*.json")):
        loaded = json.loads(path.read_text("utf-8"))
        if isinstance(loaded, dict) and isinstance(loaded.get("items"), list):
            items.extend(loaded["items"])
        elif isinstance(loaded, dict) and loaded.get("kind") == "calendar#event":
            items.append(loaded)
    return items


def generated_items(time_zone: str, count: int = 400) -> list[Any]:
    google = CalendarStore()
    cal = google.ensure_user("owner@example.com", time_zone)
    seed_calendar(google, cal, seed=11, count=count, anchor=datetime(2026, 11, 1, 9, tzinfo=UTC))
    page = google.list_events(cal, ListQuery(max_results=2500, show_deleted=True))
    return list(page["items"])


def test_columns_are_the_table_s() -> None:
    assert tuple(calendar_events.c.keys()) == EVENT_COLUMNS
    assert EVENT_COLUMNS[2:] == ROW_COLUMNS


@pytest.mark.parametrize("keep_details", [False, True])
@pytest.mark.parametrize("calendar_tz", ZONES)
def test_recorded_pages_give_the_reference_rows(calendar_tz: str, keep_details: bool) -> None:
    items = recorded_items()
    assert len(items) >= 5
    rows = assert_same(items, calendar_tz, keep_details)
    assert any(r[11] for r in rows), "the fixtures hold a recurring master"


@pytest.mark.parametrize("time_zone", ["Europe/Berlin", "America/New_York"])
def test_generated_calendars_give_the_reference_rows(time_zone: str) -> None:
    items = generated_items(time_zone)
    rows = assert_same(items, time_zone)
    kinds = {
        (bool(r[5]), bool(r[11]), bool(r[12]), r[1], r[2], bool(r[3])) for r in rows
    }  # all-day, series, exception, status, transparency, declined
    assert len(kinds) >= 6, kinds
    assert_same(items, time_zone, keep_details=True, owner_tag=None)


@pytest.mark.parametrize("keep_details", [False, True])
def test_the_partial_listing_a_sync_asks_for_gives_the_same_rows(keep_details: bool) -> None:
    """A sync asks events.list for `LIST_FIELDS` only (Google's `fields` partial response):
    less than half the bytes of a recorded page, and the same rows as the whole items give,
    details of bookings included."""
    booked = {
        "id": "b1",
        "summary": "Intro call with Ada",
        "description": "Agenda",
        "location": "Room 1",
        "htmlLink": "https://www.google.com/calendar/event?eid=b1",
        "attendees": [
            {"email": "ada@example.com", "displayName": "Ada", "responseStatus": "accepted"},
            {"email": "owner@example.com", "self": True, "responseStatus": "declined"},
        ],
        "extendedProperties": {"private": {GATEWAY_PROPERTY: OWNER}, "shared": {"x": "y"}},
        "start": {"dateTime": "2026-11-23T10:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-11-23T10:30:00+01:00", "timeZone": "Europe/Berlin"},
    }
    whole = {"timeZone": "Europe/Berlin", "items": [*recorded_items(), booked]}
    whole["items"] += generated_items("Europe/Berlin", count=100)
    partial = select_fields(whole, LIST_FIELDS)
    assert partial["timeZone"] == "Europe/Berlin"
    assert "htmlLink" not in partial["items"][-101] and "shared" not in str(partial)
    for tz in ("Europe/Berlin", "UTC"):
        assert parse_rows(
            partial["items"], calendar_tz=tz, keep_details=keep_details, owner_tag=OWNER
        ) == parse_rows(whole["items"], calendar_tz=tz, keep_details=keep_details, owner_tag=OWNER)
    recorded = {"items": recorded_items()}
    assert len(json.dumps(select_fields(recorded, LIST_FIELDS))) < 0.5 * len(json.dumps(recorded))


def test_only_this_integration_s_bookings_keep_details() -> None:
    booked = {
        "id": "b1",
        "summary": "Intro call with Ada",
        "attendees": [{"email": "ada@example.com", "responseStatus": "accepted"}],
        "extendedProperties": {"private": {GATEWAY_PROPERTY: OWNER}},
        "start": {"dateTime": "2026-11-23T10:00:00+01:00"},
        "end": {"dateTime": "2026-11-23T10:30:00+01:00"},
    }
    other = {**booked, "id": "b2", "extendedProperties": {"private": {GATEWAY_PROPERTY: "x"}}}
    rows, _ = parse_rows([booked, other], calendar_tz="Europe/Berlin", owner_tag=OWNER)
    mine, theirs = (dict(zip(ROW_COLUMNS, r, strict=True)) for r in rows)
    assert mine["created_by_gateway"] is True
    assert json.loads(mine["details"])["summary"] == "Intro call with Ada"
    assert theirs["created_by_gateway"] is False and theirs["details"] is None


def test_unreadable_items_are_skipped_with_a_reason() -> None:
    rows, skipped = parse_rows(
        [
            {"id": "ok", "start": {"date": "2026-11-23"}, "end": {"date": "2026-11-24"}},
            {"status": "confirmed"},
            {"id": "bad", "start": {"dateTime": "soon"}, "end": {"dateTime": "later"}},
        ],
        calendar_tz="UTC",
    )
    assert [r[0] for r in rows] == ["ok"]
    assert skipped == [
        Skipped("?", "event without an id"),
        Skipped("bad", "malformed dateTime"),
    ]


# -- generated events: the common shape, and every field broken in turn -----------------------

_instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.none()
)
_offsets = st.sampled_from(["Z", "+00:00", "+01:00", "-05:00", "+05:30", ""])
_zones = st.sampled_from([None, "", "Europe/Berlin", "America/New_York", "Bad/Zone", "America", 7])
_odd = st.one_of(st.none(), st.integers(), st.booleans(), st.text(max_size=3), st.just([]))


@st.composite
def _when(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["timed", "timed", "date", "odd"]))
    moment = draw(_instants)
    if kind == "timed":
        value: dict[str, Any] = {"dateTime": moment.isoformat() + draw(_offsets)}
        zone = draw(_zones)
        if zone is not None:
            value["timeZone"] = zone
        return value
    if kind == "date":
        return {"date": draw(st.sampled_from([moment.date().isoformat(), "2026-W01-1", "bad", 3]))}
    return draw(st.one_of(_odd, st.just({}), st.just({"dateTime": "nonsense"})))


@st.composite
def events(draw: st.DrawFn) -> Any:
    item: dict[str, Any] = {}
    item["id"] = draw(st.one_of(st.text(min_size=1, max_size=12), _odd))
    for key, common in (
        ("status", st.sampled_from(["confirmed", "tentative", "cancelled", ""])),
        ("transparency", st.sampled_from(["opaque", "transparent"])),
        ("eventType", st.sampled_from(["default", "workingLocation", "outOfOffice"])),
        ("etag", st.just('"3181161784712000"')),
        ("updated", st.just("2026-11-20T10:00:00.000Z")),
        ("summary", st.text(max_size=8)),
        ("location", st.text(max_size=8)),
    ):
        if draw(st.booleans()):
            item[key] = draw(st.one_of(common, common, _odd))
    if draw(st.booleans()):
        item["start"] = draw(_when())
    if draw(st.booleans()):
        item["end"] = draw(_when())
    if draw(st.booleans()):
        item["recurringEventId"] = draw(st.one_of(st.just("master1"), _odd))
        item["id"] = draw(st.sampled_from(["master1_20261123T090000Z", "master1_20261123", "x"]))
        if draw(st.booleans()):
            item["originalStartTime"] = draw(_when())
    if draw(st.booleans()):
        item["recurrence"] = draw(
            st.one_of(
                st.just(["RRULE:FREQ=WEEKLY;COUNT=5", "EXDATE:20261130T090000Z"]),
                st.lists(st.text(max_size=6), max_size=2),
                _odd,
            )
        )
    if draw(st.booleans()):
        item["attendees"] = draw(
            st.one_of(
                st.just([{"email": "me@example.com", "self": True, "responseStatus": "declined"}]),
                st.just([{"email": "x@example.com", "responseStatus": "accepted"}, "junk"]),
                _odd,
            )
        )
    if draw(st.booleans()):
        item["extendedProperties"] = draw(
            st.one_of(
                st.just({"private": {GATEWAY_PROPERTY: OWNER}}),
                st.just({"private": {GATEWAY_PROPERTY: "someone-else"}}),
                _odd,
            )
        )
    return item


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(events(), max_size=6),
    st.sampled_from(ZONES),
    st.booleans(),
    st.sampled_from([OWNER, None]),
)
def test_generated_events_give_the_reference_rows(
    items: list[Any], calendar_tz: str, keep_details: bool, owner_tag: str | None
) -> None:
    assert_same(items, calendar_tz, keep_details, owner_tag)


def test_a_detail_beyond_64_bits_is_kept_as_the_reference_keeps_it() -> None:
    """Found by the test above: orjson refuses an integer beyond 64 bits (a field of the
    wrong type); the fast path failed on such an item (the reference skips a broken one)."""
    huge = -(2**63) - 1
    event = {
        "id": "evt1",
        "status": "confirmed",
        "location": huge,
        "start": {"dateTime": "2026-12-07T10:00:00Z"},
        "end": {"dateTime": "2026-12-07T11:00:00Z"},
    }
    rows = assert_same([event, {"location": huge}], "UTC", keep_details=True)
    assert len(rows) == 1 and str(huge) in str(rows[0])


def test_rows_turn_back_into_the_records() -> None:
    items = generated_items("America/New_York", count=200) + recorded_items()
    for item in items:
        try:
            record = parse_event(item, calendar_tz="Europe/Berlin", owner_tag=OWNER)
        except EventParseError:
            continue
        assert record_of(row_of(record)) == record


# -- the driver's bulk path -----------------------------------------------------------------


async def _stored(engine: AsyncEngine, table: str, columns: tuple[str, ...]) -> dict[str, Any]:
    """Each calendar's rows of `table` as SQLite holds them: every value with its storage
    class (what range queries compare and what SQLAlchemy reads back)."""
    typeof = "typeof" if engine.dialect.name == "sqlite" else "pg_typeof"
    shown = ", ".join(f"{c}, CAST({typeof}({c}) AS TEXT)" for c in columns[1:])
    async with engine.connect() as conn:
        rows = (await conn.execute(text(f"SELECT calendar_id, {shown} FROM {table}"))).all()
    out: dict[str, Any] = {}
    for row in rows:
        out.setdefault(row[0], []).append(tuple(row[1:]))
    return {cal: sorted(found, key=repr) for cal, found in out.items()}


async def test_bulk_rows_are_stored_exactly_as_sqlalchemy_stores_them(engine: AsyncEngine) -> None:
    """Rows written through the driver (multi-row INSERTs of a few fixed sizes on SQLite,
    COPY on PostgreSQL) and through SQLAlchemy are stored alike, value by value and storage
    class by storage class (SQLite keeps datetimes as text that range queries compare,
    booleans as integers), and read back as the same records. On SQLite a value holding NUL
    is stored whole (PostgreSQL refuses NUL in text either way)."""
    sqlite = engine.dialect.name == "sqlite"
    items = generated_items("Europe/Berlin", count=150)
    rows, _ = parse_rows(items, calendar_tz="Europe/Berlin", keep_details=True)
    etag = EVENT_COLUMNS.index("etag") - 2
    odd = list(rows[0])
    odd[0], odd[etag] = "nul-event", "before\x00after"
    block_columns = ("calendar_id", "generation", "event_id", "start_at", "end_at", "series_id")
    start = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    blocks = [
        (
            f"b{i}",
            1,
            f"e{i}",
            start + timedelta(hours=i),
            start + timedelta(hours=i, minutes=30),
            "s",
        )
        for i in range(40)
    ]
    async with engine.begin() as conn:
        await insert_rows(conn, calendar_events, EVENT_COLUMNS, [("cal_bulk", 1, *r) for r in rows])
        if sqlite:
            await insert_rows(conn, calendar_events, EVENT_COLUMNS, [("cal_nul", 1, *odd)])
            await conn.execute(
                insert(calendar_events),
                [dict(zip(EVENT_COLUMNS, ("cal_orm_nul", 1, *odd), strict=True))],
            )
        # The bulk path takes blocks as the sync writes them: epoch seconds (`EpochSeconds`).
        await insert_rows(
            conn,
            busy_blocks,
            block_columns,
            [("cal_bulk", g, e, epoch_floor(s), epoch_ceil(x), i) for _, g, e, s, x, i in blocks],
        )
        await conn.execute(
            insert(calendar_events),
            [dict(zip(EVENT_COLUMNS, ("cal_orm", 1, *r), strict=True)) for r in rows],
        )
        await conn.execute(
            insert(busy_blocks),
            [dict(zip(block_columns, ("cal_orm", *b[1:]), strict=True)) for b in blocks],
        )
    events = await _stored(engine, "calendar_events", EVENT_COLUMNS)
    assert len(events["cal_bulk"]) == len(rows) > 100
    [(count, size)] = sqlite_chunks(len(rows), len(EVENT_COLUMNS))
    assert count == len(rows) < size  # one statement, with padding rows left out
    assert events["cal_bulk"] == events["cal_orm"]
    if sqlite:
        assert events["cal_nul"] == events["cal_orm_nul"]
        assert "before\x00after" in events["cal_nul"][0]
    stored_blocks = await _stored(engine, "busy_blocks", block_columns)
    assert stored_blocks["cal_bulk"] == stored_blocks["cal_orm"]
    assert len(stored_blocks["cal_bulk"]) == len(blocks)
    records = await SyncStore(engine).records("cal_bulk", 1)
    assert sorted(records, key=lambda r: r.event_id) == sorted(
        (record_of(r) for r in rows), key=lambda r: r.event_id
    )
    store = SyncStore(engine)
    assert await store.records("cal_bulk", 1) == await store.records("cal_orm", 1)
    async with engine.connect() as conn:
        # The range test availability runs (bound datetimes against stored ones).
        found = (
            await conn.execute(
                select(busy_blocks.c.calendar_id)
                .where(
                    busy_blocks.c.start_at < start + timedelta(minutes=1),
                    busy_blocks.c.end_at > start + timedelta(minutes=29),
                )
                .order_by(busy_blocks.c.calendar_id)
            )
        ).scalars()
        assert list(found) == ["cal_bulk", "cal_orm"]


async def test_bulk_insert_rolls_back_with_its_transaction(engine: AsyncEngine) -> None:
    rows, _ = parse_rows(generated_items("UTC", count=20), calendar_tz="UTC")

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with engine.begin() as conn:
            await insert_rows(
                conn, calendar_events, EVENT_COLUMNS, [("cal_gone", 1, *r) for r in rows]
            )
            raise Abort
    assert await SyncStore(engine).records("cal_gone", 1) == []


async def test_a_delta_s_records_computed_before_writing_are_those_read_back(
    engine: AsyncEngine,
) -> None:
    """An incremental sync computes the touched series' records from what it read before its
    writes (so the expansion runs before SQLite's one writer is taken): they must be exactly
    what the writes leave, for cancelled masters (with their exceptions), cancelled
    exceptions, changed and new events."""
    rows, _ = parse_rows(generated_items("Europe/Berlin", count=150), calendar_tz="Europe/Berlin")
    store = SyncStore(engine)
    await store.ensure_calendar(
        new_id="cal_merge",
        integration_id="int_merge",
        tenant_id="acme",
        google_calendar_id="merge@example.com",
        time_zone="Europe/Berlin",
        now=datetime(2026, 11, 22, tzinfo=UTC),
    )
    await store.write_page("cal_merge", 1, rows, first=True)

    def cancelled(row: EventRow) -> EventRow:
        return (*row[:STATUS], "cancelled", *row[STATUS + 1 :])

    delta = [
        cancelled(r) if n % 3 == 0 else r for n, r in enumerate(rows) if n % 3 == 0 or n % 5 == 0
    ]
    delta += [(f"new{n:04d}", *r[1:]) for n, r in enumerate(rows[:10])]
    merge = EventMerge.of(delta)
    assert merge.gone and any(r[RECURRING_EVENT_ID] for r in rows)  # the cases are there

    async def touched() -> list[EventRecord]:
        found = await store.records("cal_merge", 1)
        return [r for r in found if (r.recurring_event_id or r.event_id) in merge.touched]

    before = await touched()
    expected = merge.after(before)
    await store.write_page("cal_merge", 1, delta)  # the same merge, written
    after = await touched()
    assert sorted(expected, key=lambda r: r.event_id) == sorted(after, key=lambda r: r.event_id)
    assert len(after) < len(before) + 10  # the cancellations removed records
