"""SQL of the synced copy's writes: a calendar's minimal event records and busy blocks.

SQLAlchemy Core for statements, the driver's bulk path (gateway.db.bulk) for the rows; the
same statements on SQLite and PostgreSQL. An upsert is a delete and an insert inside one
transaction (portable, and idempotent for repeated deltas).

Generations. A calendar's records and blocks carry a generation number; readers only look at
`calendars.active_generation`. A full sync writes a NEW generation beside the active one and
switches `active_generation` in one UPDATE when it is complete, then deletes the old one, so a
reader never sees a half-built or empty copy. An incremental sync changes the active
generation in one transaction (records, recomputed blocks and the new sync token together).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, NamedTuple

from sqlalchemy import (
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.engine import Row, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import CompoundSelect

from gateway.db.after_commit import after_commit
from gateway.db.bulk import BulkRows, DeleteIn, chunks, insert_bulk, prepare_rows, write_bulk
from gateway.db.direct import Direct, any_of, execute
from gateway.db.notify import CALENDAR_CHANGE, bump_calendars, calendar_bump, publish_calendars
from gateway.db.schema import (
    busy_blocks,
    calendar_events,
    calendars,
)
from gateway.db.transactions import commit_if_changed
from gateway.db.values import as_utc, epoch_ceil, epoch_floor
from gateway.errors import NotFound
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.lease_store import LEASE_RELEASE_VALUES, LeaseRelease, lease_release_params
from gateway.sync.model import BusyBlock, EventRecord, Horizon
from gateway.sync.rows import (
    EVENT_ID,
    RECURRING_EVENT_ID,
    ROW_COLUMNS,
    STATUS,
    EventRow,
    record_of,
)
from gateway.webhooks.sync_events import record_booking_changes, record_sync_changes

# Column orders of the tuples written with the driver's bulk path (gateway.db.bulk).
EVENT_COLUMNS = ("calendar_id", "generation", *ROW_COLUMNS)
BLOCK_COLUMNS = ("calendar_id", "generation", "event_id", "start_at", "end_at", "series_id")

Compute = Callable[[list[EventRecord]], Awaitable[list[BusyBlock]]]
"""Busy blocks of the given records (the engine expands them off the event loop)."""


class _NotSwitched(Exception):
    """A build's switch found no calendar to switch (`CopyStore._switch`): roll it back."""


class Stored(NamedTuple):
    """What a sync's last transaction did: whether its result went in (a full sync's copy
    was switched on; a delta always goes in) and whether it released the lease as asked
    (`LeaseRelease`; False when not asked, or the lease had run out and gone to another)."""

    stored: bool
    released: bool


@dataclass(frozen=True)
class EventMerge:
    """How event rows merge into a generation.

    The last row of an id wins (pages are in order). A cancelled exception is kept: it
    removes an occurrence. Any other cancelled event is deleted, a cancelled master with its
    exceptions (Google lists them as cancelled too). Everything else replaces its previous
    version."""

    latest: dict[str, EventRow]  # id -> its last row, in order of last appearance
    gone: list[str]  # masters and single events deleted
    keep: list[EventRow]  # the rows written

    @classmethod
    def of(cls, items: Iterable[EventRow]) -> EventMerge:
        latest: dict[str, EventRow] = {}
        for row in items:
            latest.pop(row[EVENT_ID], None)  # keep the order of last appearance
            latest[row[EVENT_ID]] = row
        gone = [
            r[EVENT_ID]
            for r in latest.values()
            if r[STATUS] == "cancelled" and not r[RECURRING_EVENT_ID]
        ]
        gone_set = set(gone)
        keep = (
            [
                r
                for r in latest.values()
                if r[EVENT_ID] not in gone_set and r[RECURRING_EVENT_ID] not in gone_set
            ]
            if gone_set
            else list(latest.values())
        )
        return cls(latest, gone, keep)

    @property
    def touched(self) -> set[str]:
        """The series the rows belong to (a master's id for its exceptions)."""
        return {r[RECURRING_EVENT_ID] or r[EVENT_ID] for r in self.latest.values()}

    def after(self, before: Iterable[EventRecord]) -> list[EventRecord]:
        """The records of the touched series once merged, from what the generation held of
        them `before` (exactly what `_write_merge` leaves, computed without reading it back)."""
        gone = set(self.gone)
        kept = [
            r
            for r in before
            if r.event_id not in self.latest and (r.recurring_event_id or "") not in gone
        ]
        return kept + [record_of(row) for row in self.keep]


def _record(row: RowMapping) -> EventRecord:
    return EventRecord(
        event_id=row["event_id"],
        status=row["status"],
        transparency=row["transparency"],
        self_declined=bool(row["self_declined"]),
        event_type=row["event_type"],
        all_day=bool(row["all_day"]),
        start_at=as_utc(row["start_at"]),
        end_at=as_utc(row["end_at"]),
        start_date=date.fromisoformat(row["start_date"]) if row["start_date"] else None,
        end_date=date.fromisoformat(row["end_date"]) if row["end_date"] else None,
        time_zone=row["time_zone"],
        recurrence=tuple(json.loads(row["recurrence"])) if row["recurrence"] else None,
        recurring_event_id=row["recurring_event_id"],
        original_start=row["original_start"],
        etag=row["etag"],
        updated=row["updated"],
        created_by_gateway=bool(row["created_by_gateway"]),
        details=json.loads(row["details"]) if row["details"] else None,
    )


def block_rows(
    calendar_id: str, generation: int, blocks: Iterable[BusyBlock]
) -> list[tuple[Any, ...]]:
    """`busy_blocks` rows of `blocks` in BLOCK_COLUMNS order (also the bench's baseline's)."""
    # Epoch seconds (`EpochSeconds`): the driver takes them as they are.
    return [
        (calendar_id, generation, b.event_id, epoch_floor(b.start), epoch_ceil(b.end), b.series_id)
        for b in blocks
    ]


class CopyStore:
    """The statements that write a calendar's copy (and read its records back)."""

    def __init__(self, engine: AsyncEngine, *, webhook_coalesce_s: float = 30.0) -> None:
        self.engine = engine
        # GATEWAY_WEBHOOK_AVAILABILITY_COALESCE_S: at most one availability.changed per this.
        self.webhook_coalesce_s = webhook_coalesce_s

    # -- records ------------------------------------------------------------------------------

    async def _apply(
        self,
        conn: AsyncConnection,
        calendar_id: str,
        generation: int,
        items: list[EventRow],
        *,
        empty: bool = False,
    ) -> list[EventRow]:
        """Merge event rows (gateway.sync.rows) into a generation (see `EventMerge`); returns the
        rows written. `empty` says the generation holds nothing yet
        (the first page of a full sync): there is nothing to replace or delete, so only the
        INSERTs run."""
        merge = EventMerge.of(items)
        await self._write_merge(conn, calendar_id, generation, merge, empty=empty)
        return merge.keep

    async def _write_merge(
        self,
        conn: AsyncConnection,
        calendar_id: str,
        generation: int,
        merge: EventMerge,
        *,
        empty: bool = False,
    ) -> None:
        # The rows are converted before the first DELETE takes SQLite's writer.
        rows = await self._event_bulk(conn, calendar_id, generation, merge)
        deletes = [] if empty else self._replaced(calendar_id, generation, merge)
        await write_bulk(conn, deletes, [rows], with_next=True)

    @staticmethod
    def _replaced(calendar_id: str, generation: int, merge: EventMerge) -> list[DeleteIn]:
        """The records a merge replaces and the exceptions of the masters it deletes."""
        scope = (("calendar_id", calendar_id), ("generation", generation))
        return [
            DeleteIn(calendar_events, scope, "event_id", list(merge.latest)),
            DeleteIn(calendar_events, scope, "recurring_event_id", merge.gone),
        ]

    @staticmethod
    async def _event_bulk(
        conn: AsyncConnection, calendar_id: str, generation: int, merge: EventMerge
    ) -> BulkRows:
        return await prepare_rows(
            conn.dialect.name,
            calendar_events,
            EVENT_COLUMNS,
            [(calendar_id, generation, *r) for r in merge.keep],
        )

    @staticmethod
    async def _block_bulk(
        dialect: str, calendar_id: str, generation: int, blocks: Iterable[BusyBlock]
    ) -> BulkRows:
        return await prepare_rows(
            dialect, busy_blocks, BLOCK_COLUMNS, block_rows(calendar_id, generation, blocks)
        )

    async def _merge_series(
        self,
        conn: AsyncConnection,
        calendar_id: str,
        generation: int,
        items: list[EventRow],
        compute: Compute,
    ) -> list[str]:
        """Merge `items` into the generation with the recomputed blocks of every series they
        touch; returns those series. Reads and the computation first, the writes after: on
        SQLite the first write takes the one writer, and everything after it is time every
        other writer waits."""
        merge = EventMerge.of(items)
        series = sorted(merge.touched)
        before = await self._series_records(conn, calendar_id, generation, series)
        blocks = await compute(merge.after(before))
        events = await self._event_bulk(conn, calendar_id, generation, merge)
        prepared = await self._block_bulk(conn.dialect.name, calendar_id, generation, blocks)
        # Every record the merge replaces is deleted, found or not in `before` (a booking's
        # `merge_local` may have written one since it was read), with the series' blocks.
        scope = (("calendar_id", calendar_id), ("generation", generation))
        await write_bulk(
            conn,
            [
                *self._replaced(calendar_id, generation, merge),
                DeleteIn(busy_blocks, scope, "series_id", series),
            ],
            [events, prepared],
            with_next=True,
        )
        return series

    async def _series_records(
        self, conn: AsyncConnection, calendar_id: str, generation: int, series: Sequence[str]
    ) -> list[EventRecord]:
        if conn.dialect.name == "postgresql":
            params = {"calendar_id": calendar_id, "generation": generation, "series": list(series)}
            found = await execute(conn, _SERIES_RECORDS_POSTGRES, params)
            return [_record(r) for r in found.mappings()]
        out: list[EventRecord] = []
        for chunk in chunks(series):
            params = {"calendar_id": calendar_id, "generation": generation, "series": chunk}
            rows = await conn.execute(_SERIES_RECORDS, params)
            out.extend(_record(r) for r in rows.mappings())
        return out

    async def records(self, calendar_id: str, generation: int) -> list[EventRecord]:
        """Every record of a generation."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(calendar_events)
                .where(
                    calendar_events.c.calendar_id == calendar_id,
                    calendar_events.c.generation == generation,
                )
                .order_by(calendar_events.c.event_id)
            )
            return [_record(r) for r in rows.mappings()]

    @staticmethod
    async def _build_target(conn: AsyncConnection, calendar_id: str) -> Row[Any, Any, Any] | None:
        """What a full build needs of the calendar row (its active generation, whether it has
        rows to clear: `_leftovers`; the rest for `_announce_rebuild`), read before its writes
        (on SQLite a read takes no writer)."""
        return (await execute(conn, _BUILD_TARGET, {"target": calendar_id})).first()

    async def _announce_rebuild(
        self,
        conn: AsyncConnection,
        calendar_id: str,
        generation: int,
        now: datetime,
        cal: Row[Any, Any, Any] | None,
    ) -> int | None:
        """A rebuild (Google expired the sync token: 410) replaces the copy wholesale; what
        happened meanwhile to the meetings the gateway booked is announced as an incremental
        sync would (booking.updated, or booking.cancelled for one the new copy lacks), in the
        switch's transaction, once the new generation's records are written. `cal` is
        `_build_target`'s row. Returns the generation active before the switch."""
        if cal is None or cal.active_generation is None or cal.active_generation >= generation:
            # A first build: nothing was known, so nothing changed.
            return None if cal is None else cal.active_generation
        c = calendar_events.c
        ours = list(
            (
                await conn.execute(
                    select(c.event_id).where(
                        c.calendar_id == calendar_id,
                        c.generation == cal.active_generation,
                        c.created_by_gateway.is_(True),
                        c.recurring_event_id.is_(None),
                    )
                )
            ).scalars()
        )
        if not ours:
            return int(cal.active_generation)
        rows = await conn.execute(
            select(calendar_events).where(
                c.calendar_id == calendar_id, c.generation == generation, c.event_id.in_(ours)
            )
        )
        now_known = {r.event_id: r for r in map(_record, rows.mappings())}
        await record_booking_changes(
            conn,
            tenant_id=cal.tenant_id,
            integration_id=cal.integration_id,
            calendar_id=calendar_id,
            generation=cal.active_generation,
            items=[now_known.get(i) or EventRecord(event_id=i, status="cancelled") for i in ours],
            now=now,
        )
        return int(cal.active_generation)

    # -- full sync: a new generation ----------------------------------------------------------

    async def begin_generation(
        self, calendar_id: str, first_page: list[EventRow]
    ) -> tuple[int, list[EventRow]]:
        """Start building a full copy in a fresh generation with its first page (event rows,
        gateway.sync.rows); returns the generation and the rows written. Leftovers of an
        earlier build that never completed (a crash, a 410 during it) are deleted first, in
        the same transaction: one write instead of two on the way to a calendar's first copy."""
        async with self.engine.begin() as conn:
            cal = await self._build_target(conn, calendar_id)
            if cal is None:
                raise NotFound("the calendar was deleted during its sync")
            generation = (cal.active_generation or 0) + 1
            merge = EventMerge.of(first_page)
            rows = await self._event_bulk(conn, calendar_id, generation, merge)  # before the writer
            stale = _leftovers(calendar_id, cal)
            await write_bulk(conn, stale, [rows], with_next=True)
            await _still_there(conn, calendar_id)
        return generation, merge.keep

    async def write_page(
        self,
        calendar_id: str,
        generation: int,
        items: list[EventRow],
        *,
        first: bool = False,
    ) -> list[EventRow]:
        """Merge a further page of a full sync (event rows, gateway.sync.rows) into the
        generation `begin_generation` started; returns the rows it wrote. `first`: the
        generation holds nothing yet (nothing to replace: INSERTs only)."""
        async with self.engine.begin() as conn:
            written = await self._apply(conn, calendar_id, generation, items, empty=first)
            await _still_there(conn, calendar_id)
        return written

    async def activate_generation(
        self,
        calendar_id: str,
        generation: int,
        blocks: list[BusyBlock],
        *,
        sync_token: str | None,
        horizon: Horizon,
        now: datetime,
        release: LeaseRelease | None = None,
        time_zone: str | None = None,
    ) -> Stored:
        """Store the blocks of the complete generation and make it the one readers see (and
        release the lease in the same transaction, with `release`), then drop the previous
        one. Not stored (nothing switched) if another build replaced it. `time_zone`: the
        calendar's zone as the listing named it, stored with the switch (None: unchanged)."""
        prepared = await self._block_bulk(self.engine.dialect.name, calendar_id, generation, blocks)
        try:
            async with self.engine.begin() as conn:
                cal = await self._build_target(conn, calendar_id)
                previous = await self._announce_rebuild(conn, calendar_id, generation, now, cal)
                await insert_bulk(conn, prepared, with_next=True)
                done = await self._switch(
                    conn, calendar_id, generation, sync_token, horizon, now, release, time_zone
                )
        except _NotSwitched:
            return Stored(stored=False, released=False)
        if previous is not None:
            await self._drop_before(calendar_id, generation)
        return done

    async def build_generation(
        self,
        calendar_id: str,
        rows: list[EventRow],
        blocks_of: Callable[[list[EventRow]], Awaitable[list[BusyBlock]]],
        *,
        sync_token: str | None,
        horizon: Horizon,
        now: datetime,
        release: LeaseRelease | None = None,
        time_zone: str | None = None,
    ) -> tuple[Stored, int, int]:
        """A whole calendar listed in one page (most calendars: up to the engine's page size):
        its records and blocks (`await blocks_of(rows_kept)`, computed before the transaction)
        written as a new generation and switched on in ONE transaction, with the lease's
        release; leftovers of a build that never completed deleted in it too. What
        `begin_generation` and `activate_generation` do for a calendar of many pages, with
        one writer's turn instead of two. Returns what was stored, the generation and the
        records written. `time_zone` as for `activate_generation`."""
        merge = EventMerge.of(rows)
        blocks = await blocks_of(merge.keep)
        dialect = self.engine.dialect.name
        not_stored = Stored(stored=False, released=False), 0, 0
        try:
            async with self.engine.begin() as conn:
                cal = await self._build_target(conn, calendar_id)
                if cal is None:
                    return not_stored  # deleted meanwhile (a disconnect): nothing to write
                generation = (cal.active_generation or 0) + 1
                # Converted before the first write takes SQLite's writer.
                events = await self._event_bulk(conn, calendar_id, generation, merge)
                prepared = await self._block_bulk(dialect, calendar_id, generation, blocks)
                stale = _leftovers(calendar_id, cal)
                # In the switch's hop on SQLite: one hop for the writer, not two.
                await write_bulk(conn, stale, [events, prepared], with_next=True)
                previous = await self._announce_rebuild(conn, calendar_id, generation, now, cal)
                done = await self._switch(
                    conn, calendar_id, generation, sync_token, horizon, now, release, time_zone
                )
        except _NotSwitched:
            return not_stored
        if previous is not None:
            await self._drop_before(calendar_id, generation)
        return done, generation, len(merge.keep)

    async def _switch(
        self,
        conn: AsyncConnection,
        calendar_id: str,
        generation: int,
        sync_token: str | None,
        horizon: Horizon,
        now: datetime,
        release: LeaseRelease | None,
        time_zone: str | None = None,
    ) -> Stored:
        """Make the written `generation` the one readers see, in the caller's transaction
        (with the lease's release). `_NotSwitched` (the caller's transaction rolls back) if the
        calendar is gone or a newer build is active already."""
        params: dict[str, Any] = {
            "switch_calendar": calendar_id,
            "switch_generation": generation,
            "switch_token": sync_token,
            "switch_time_zone": time_zone,
            "switch_horizon_start": horizon.start,
            "switch_horizon_end": horizon.end,
            "synced_at": now,
            **lease_release_params(calendar_id, release, now),
        }
        # The build's last statement: on SQLite it commits with it (if it switched).
        switched = await commit_if_changed(conn, _switch_statement(release is not None), params)
        row = switched.first()
        if row is None:
            # The calendar went (a disconnect's purge) or a newer build is active: nothing of
            # this build may stay behind, least of all records of a purged calendar.
            raise _NotSwitched
        await publish_calendars(conn, [row[: len(CALENDAR_CHANGE)]])
        return Stored(stored=True, released=_released(conn, release, row.lease_owner))

    async def _drop_before(self, calendar_id: str, generation: int) -> None:
        """After a rebuild's switch has committed nobody reads the older generations any
        more. (A first build has none: the build deleted every other generation, and what is
        written meanwhile goes into the one being built, `merge_local`.)"""
        async with self.engine.begin() as conn:
            for table in (calendar_events, busy_blocks):
                await conn.execute(
                    delete(table).where(
                        table.c.calendar_id == calendar_id, table.c.generation < generation
                    )
                )

    # -- incremental sync ---------------------------------------------------------------------

    async def apply_delta(
        self,
        calendar: CalendarRow,
        items: list[EventRow],
        *,
        compute: Compute,
        sync_token: str | None,
        now: datetime,
        release: LeaseRelease | None = None,
    ) -> Stored:
        """Merge a complete delta into the active generation, recompute the blocks of every
        series it touches (`await compute(records) -> blocks`) and store the new sync token,
        all in one transaction, which also releases the lease with `release`."""
        generation = calendar.active_generation
        assert generation is not None
        async with self.engine.begin() as conn:
            # Outbound webhooks for meetings the gateway booked, in this very transaction.
            await record_sync_changes(
                conn,
                tenant_id=calendar.tenant_id,
                integration_id=calendar.integration_id,
                calendar_id=calendar.id,
                generation=generation,
                # Deltas are small (a push brings a few events): records cost little here.
                items=[record_of(row) for row in items],
                now=now,
                horizon=(calendar.horizon_start, calendar.horizon_end)
                if calendar.horizon_start and calendar.horizon_end
                else None,
                coalesce_s=self.webhook_coalesce_s,
            )
            await self._merge_series(conn, calendar.id, generation, items, compute)
            # The delta's last statement: on SQLite it commits with it (a calendar purged
            # meanwhile changes nothing, and `.one()` rolls the delta back).
            params: dict[str, Any] = {
                "delta_calendar": calendar.id,
                "delta_token": sync_token,
                "synced_at": now,
                **lease_release_params(calendar.id, release, now),
            }
            # An empty delta (a channel's first `sync` message, a poll that found nothing)
            # leaves the blocks as they were: caches keep their arrays.
            statement = _delta_statement(release is not None, blocks=bool(items))
            changed = await commit_if_changed(conn, statement, params)
            row = changed.one()
            await publish_calendars(conn, [row[: len(CALENDAR_CHANGE)]])
            released = _released(conn, release, row.lease_owner)
        return Stored(stored=True, released=released)

    async def merge_local(
        self,
        calendar: CalendarRow,
        items: list[EventRow],
        *,
        compute: Compute,
    ) -> bool:
        """Merge events the gateway itself just wrote to Google (a booking, its change or
        cancellation) into the active copy, with the blocks of the series they touch, so
        availability sees them at once. Unlike `apply_delta` the sync token and the copy's
        freshness stay as they are: the next sync brings Google's own view, which replaces
        these records.

        A full sync being built meanwhile may have listed the calendar before the write: the
        records go into that generation too (its blocks are computed from its records when it
        completes), so switching to it does not lose them. Returns False when there is no
        complete copy to show them in."""
        async with self.engine.begin() as conn:
            active = (
                await conn.execute(
                    select(calendars.c.active_generation).where(calendars.c.id == calendar.id)
                )
            ).scalar_one_or_none()
            building = select(calendar_events.c.generation).where(
                calendar_events.c.calendar_id == calendar.id
            )
            if active is not None:
                building = building.where(calendar_events.c.generation > active)
            for generation in (await conn.execute(building.distinct())).scalars().all():
                await self._apply(conn, calendar.id, generation, items)
            if active is None:
                return False
            await self._merge_series(conn, calendar.id, active, items, compute)
            # The last statement: on SQLite it commits with it (one hop less for the writer).
            await bump_calendars(conn, [calendar.id], last=True)
        return True

    async def replace_blocks(
        self,
        calendar_id: str,
        generation: int,
        blocks: list[BusyBlock],
        horizon: Horizon,
        now: datetime,
    ) -> bool:
        """Every block of the generation replaced (a moved horizon), if it is still active."""
        prepared = await self._block_bulk(self.engine.dialect.name, calendar_id, generation, blocks)
        async with self.engine.begin() as conn:
            moved = await conn.execute(
                update(calendars)
                .where(calendars.c.id == calendar_id, calendars.c.active_generation == generation)
                .values(horizon_start=horizon.start, horizon_end=horizon.end, updated_at=now)
            )
            if moved.rowcount != 1:
                return False
            await conn.execute(
                delete(busy_blocks).where(
                    busy_blocks.c.calendar_id == calendar_id,
                    busy_blocks.c.generation == generation,
                )
            )
            await insert_bulk(conn, prepared, with_next=True)
            # On SQLite the blocks, this bump and the COMMIT go to the connection's thread in
            # one hop.
            await bump_calendars(conn, [calendar_id], last=True)
        return True

    async def count_records(self, calendar_id: str) -> int:
        async with self.engine.connect() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(calendar_events)
                        .where(calendar_events.c.calendar_id == calendar_id)
                    )
                ).scalar_one()
            )


# A build's calendar (`_build_target`). For a first build (no active generation) also whether
# the calendar has any records or blocks at all: only an earlier build that never completed
# leaves some, and without them the build's two DELETEs are skipped. On SQLite each statement
# in the build's one hop is a few more chances for the connection's thread to wait for the GIL
# while it holds the one writer (some 1.5 ms each in the 1,000-calendar bench, for 0.1 ms of
# work). Nothing can add such rows between this read and the build's writes: builds of one
# calendar run under its sync lease, and local writes (`merge_local`) go into generations that
# exist already. A rebuild (410) always deletes: it is rare, and its check would walk the
# active generation's rows.
_BUILD_TARGET = Direct(
    select(
        calendars.c.active_generation,
        calendars.c.tenant_id,
        calendars.c.integration_id,
        exists()
        .where(
            calendar_events.c.calendar_id == calendars.c.id,
            calendars.c.active_generation.is_(None),
        )
        .label("records_left"),
        exists()
        .where(busy_blocks.c.calendar_id == calendars.c.id, calendars.c.active_generation.is_(None))
        .label("blocks_left"),
    ).where(calendars.c.id == bindparam("target"))
)


def _leftovers(calendar_id: str, cal: Row[Any, Any, Any]) -> list[DeleteIn]:
    """A new build's first write: every record and block of the calendar outside its active
    generation (an earlier build that never completed: a crash, a 410 during it); none for a
    first build of a calendar that has none (`_BUILD_TARGET`, `_build_target`'s row `cal`)."""
    active = cal.active_generation
    if active is not None:
        keep = (("generation", int(active)),)
        return [
            DeleteIn(table, (), "calendar_id", [calendar_id], keep)
            for table in (calendar_events, busy_blocks)
        ]
    return [
        DeleteIn(table, (), "calendar_id", [calendar_id])
        for table, left in ((calendar_events, cal.records_left), (busy_blocks, cal.blocks_left))
        if left
    ]


async def _still_there(conn: AsyncConnection, calendar_id: str) -> None:
    """After a build's writes, in their transaction: the calendar still exists, or NotFound
    rolls them back. A disconnect purges the calendar (`purge_integration`, which locks its
    rows first) while a sync may still hold a page it listed before: written after the purge,
    that page would be records of a purged calendar that nothing deletes. On SQLite the
    writes hold the one writer, so the purge committed before them or comes after this
    transaction; on PostgreSQL `FOR SHARE` waits for a purge that has the row locked."""
    query = select(calendars.c.id).where(calendars.c.id == calendar_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    if (await conn.execute(query)).first() is None:
        raise NotFound("the calendar was deleted during its sync")


def _released(conn: AsyncConnection, release: LeaseRelease | None, owner_after: Any) -> bool:
    """Whether `release` freed the lease (the UPDATE returned no owner); its `on_released` is
    then called once the transaction has committed."""
    if release is None or owner_after is not None:
        return False
    if release.on_released is not None:
        after_commit(conn, release.on_released)
    return True


# The records of some series (their masters and exceptions) in a generation, for a delta's
# merge: built once (building its IN lists anew was ~6% of a pushed change's CPU). Two SELECTs
# in a UNION, each read through its own index (the masters by primary key, the exceptions by
# ix_calendar_events_series): SQLite answered one SELECT with `event_id IN (..) OR
# recurring_event_id IN (..)` by walking the calendar's whole generation, every pushed change.
_SERIES: BindParameter[Any] = bindparam("series", expanding=True)
_IN_GENERATION = (
    calendar_events.c.calendar_id == bindparam("calendar_id"),
    calendar_events.c.generation == bindparam("generation"),
)


def _series_records(matches: Callable[[Any], ColumnElement[bool]]) -> CompoundSelect[Any]:
    """The records of a generation whose id or master's id `matches` the series asked for."""
    c = calendar_events.c
    return union(
        select(calendar_events).where(*_IN_GENERATION, matches(c.event_id)),
        select(calendar_events).where(*_IN_GENERATION, matches(c.recurring_event_id)),
    )


_SERIES_RECORDS = _series_records(lambda column: column.in_(_SERIES))
# PostgreSQL's: the series as one array (no IN list: asyncpg runs it itself,
# gateway.db.direct), all of them in one statement.
_SERIES_RECORDS_POSTGRES = Direct(_series_records(lambda column: any_of(column, "series")))

# The statements that store a sync's result, built once per shape (building them anew was
# ~0.15 ms of CPU a sync: a third of what executing one costs); every value is bound per call.
_SYNCED_AT = bindparam("synced_at", type_=calendars.c.last_success_at.type)
_SUCCESS: Mapping[str, Any] = MappingProxyType(
    {
        "state": "synced",
        "last_success_at": _SYNCED_AT,
        "last_attempt_at": _SYNCED_AT,
        "last_error": None,
        "attempts": 0,
        "backoff_until": None,
        "updated_at": _SYNCED_AT,
    }
)


@functools.cache
def _switch_statement(release: bool) -> Direct:
    """A build's switch (`CopyStore._switch`): its generation becomes the active one, with the
    sync token, the horizon, the calendar's time zone as the listing named it (NULL: the
    stored one stays) and success (`synced_at`), unless the calendar is gone or a newer build
    is active already; with `release`, the lease's release too."""
    c = calendars.c
    generation = bindparam("switch_generation", type_=c.active_generation.type)
    return Direct(
        update(calendars)
        .where(
            c.id == bindparam("switch_calendar", type_=c.id.type),
            or_(c.active_generation.is_(None), c.active_generation < generation),
        )
        .values(
            active_generation=generation,
            sync_token=bindparam("switch_token", type_=c.sync_token.type),
            horizon_start=bindparam("switch_horizon_start", type_=c.horizon_start.type),
            horizon_end=bindparam("switch_horizon_end", type_=c.horizon_end.type),
            time_zone=func.coalesce(
                bindparam("switch_time_zone", type_=c.time_zone.type), c.time_zone
            ),
            **_SUCCESS,
            **(LEASE_RELEASE_VALUES if release else {}),
            **calendar_bump(),
        )
        .returning(*CALENDAR_CHANGE, c.lease_owner)
    )


@functools.cache
def _delta_statement(release: bool, *, blocks: bool) -> Direct:
    """A delta's last UPDATE (`CopyStore.apply_delta`): the new sync token and success; with
    `release`, the lease's release; `blocks`: whether the delta changed any."""
    c = calendars.c
    return Direct(
        update(calendars)
        .where(c.id == bindparam("delta_calendar", type_=c.id.type))
        .values(
            sync_token=bindparam("delta_token", type_=c.sync_token.type),
            **_SUCCESS,
            **(LEASE_RELEASE_VALUES if release else {}),
            **calendar_bump(blocks=blocks),
        )
        .returning(*CALENDAR_CHANGE, c.lease_owner)
    )
