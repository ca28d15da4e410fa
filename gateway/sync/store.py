"""SQL of the sync engine: calendars, their minimal event records and busy blocks.

SQLAlchemy Core only, the same statements on SQLite and PostgreSQL. An upsert is a delete and
an insert inside one transaction (portable, and idempotent for repeated deltas).

Generations. A calendar's records and blocks carry a generation number; readers only look at
`calendars.active_generation`. A full sync writes a NEW generation beside the active one and
switches `active_generation` in one UPDATE when it is complete, then deletes the old one, so a
reader never sees a half-built or empty copy. An incremental sync changes the active
generation in one transaction (records, recomputed blocks and the new sync token together).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from gateway.db.bulk import insert_rows
from gateway.db.notify import bump_calendars, bump_integration
from gateway.db.schema import (
    busy_blocks,
    calendar_events,
    calendars,
    integrations,
    watch_channels,
)
from gateway.db.values import as_utc
from gateway.sync.freshness import DEFAULT_PUSH_TRUST_S, copy_as_of
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

# Values per IN list: well under SQLite's 32k variables and PostgreSQL's 65k.
BATCH = 500
# Column orders of the tuples written with the driver's bulk path (gateway.db.bulk).
EVENT_COLUMNS = ("calendar_id", "generation", *ROW_COLUMNS)
BLOCK_COLUMNS = ("calendar_id", "generation", "event_id", "start_at", "end_at", "series_id")

Compute = Callable[[list[EventRecord]], Awaitable[list[BusyBlock]]]
"""Busy blocks of the given records (the engine expands them off the event loop)."""

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = BATCH) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True)
class CalendarRow:
    """One synced calendar, as the engine (and later the status API) needs it."""

    id: str
    integration_id: str
    tenant_id: str
    google_calendar_id: str
    time_zone: str
    sync_token: str | None
    active_generation: int | None
    state: str
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None
    horizon_start: datetime | None
    horizon_end: datetime | None

    @property
    def horizon(self) -> Horizon | None:
        if self.horizon_start is None or self.horizon_end is None:
            return None
        return Horizon(self.horizon_start, self.horizon_end)

    def __repr__(self) -> str:
        # The calendar id is usually the owner's address: not for logs.
        return f"CalendarRow(id={self.id!r}, state={self.state!r})"


@dataclass(frozen=True)
class CalendarFreshness:
    """How far a calendar's local copy can be trusted, for availability answers.

    as_of         the instant up to which the copy is known to match Google, or None when
                  there is no complete copy yet (`gateway.sync.freshness.copy_as_of`: with a
                  live push channel, no notification waiting and a sign of life within
                  GATEWAY_PUSH_TRUST_S, now; otherwise the last successful sync)
    push_active   an `active` watch channel that has not expired
    last_push_at  the last notification of such a channel, or None
    sync_pending  a push notification or request is waiting for its sync
    backoff_until no sync is tried before this instant (after failures), or None
    last_success_at  the last sync that completed, or None
    """

    calendar_id: str
    integration_id: str
    google_calendar_id: str
    state: str  # initial | synced | backoff | error
    as_of: datetime | None
    push_active: bool
    sync_pending: bool
    last_error: str | None
    backoff_until: datetime | None = None
    last_success_at: datetime | None = None
    last_push_at: datetime | None = None
    push_error: str | None = None  # why no channel opened (gateway.sync.channels.push_error)

    def __repr__(self) -> str:
        return f"CalendarFreshness(id={self.calendar_id!r}, as_of={self.as_of!r})"


@dataclass(frozen=True)
class CachedView:
    """An integration's calendars, their freshness and their busy blocks in one window, read
    together (`SyncStore.cached_view`); blocks are UTC, sorted, not merged."""

    calendars: list[CalendarRow]
    freshness: dict[str, CalendarFreshness]
    blocks: dict[str, list[tuple[datetime, datetime]]]


@dataclass(frozen=True)
class CalendarSnapshot:
    """A calendar as the availability index loads it (`SyncStore.index_calendars`)."""

    row: CalendarRow
    version: int
    sync_requested_at: datetime | None
    backoff_until: datetime | None
    push_until: datetime | None  # the latest expiry of an active channel
    push_forever: bool  # an active channel without an expiry
    push_heard_at: datetime | None  # the last sign of life of its active channels
    push_error: str | None
    blocks: list[tuple[datetime, datetime]]

    def __repr__(self) -> str:
        return f"CalendarSnapshot(id={self.row.id!r}, version={self.version})"


def _heard_at() -> ColumnElement[datetime]:
    """A channel's last sign of life: its last message (an `active` channel has had one; its
    creation stands in should a row lack it), so that NULL means no live channel at all."""
    return func.coalesce(watch_channels.c.last_message_at, watch_channels.c.created_at)


def calendar_freshness(
    cal: CalendarRow,
    row: Mapping[Any, Any],
    last_push_at: datetime | None,
    now: datetime,
    push_trust_s: float,
) -> CalendarFreshness:
    """A calendar's freshness (see CalendarFreshness) from its row and the last sign of life
    of its live push channel (None: no live channel). The database path and the availability
    index both use it, so both answer the same `as_of` for the same facts."""
    pending = row["sync_requested_at"] is not None
    push = last_push_at is not None
    return CalendarFreshness(
        calendar_id=cal.id,
        integration_id=cal.integration_id,
        google_calendar_id=cal.google_calendar_id,
        state=cal.state,
        as_of=copy_as_of(
            now,
            complete=cal.active_generation is not None,
            synced=cal.state == "synced",
            sync_pending=pending,
            push_live=push,
            last_success_at=cal.last_success_at,
            last_push_at=last_push_at,
            push_trust_s=push_trust_s,
        ),
        push_active=push,
        sync_pending=pending,
        last_error=cal.last_error,
        backoff_until=as_utc(row["backoff_until"]),
        last_success_at=cal.last_success_at,
        last_push_at=last_push_at,
        push_error=row["push_error"],
    )


def _calendar(row: RowMapping) -> CalendarRow:
    return CalendarRow(
        id=row["id"],
        integration_id=row["integration_id"],
        tenant_id=row["tenant_id"],
        google_calendar_id=row["google_calendar_id"],
        time_zone=row["time_zone"],
        sync_token=row["sync_token"],
        active_generation=row["active_generation"],
        state=row["state"],
        last_success_at=as_utc(row["last_success_at"]),
        last_attempt_at=as_utc(row["last_attempt_at"]),
        last_error=row["last_error"],
        horizon_start=as_utc(row["horizon_start"]),
        horizon_end=as_utc(row["horizon_end"]),
    )


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


def _block_rows(
    calendar_id: str, generation: int, blocks: Iterable[BusyBlock]
) -> list[tuple[Any, ...]]:
    return [(calendar_id, generation, b.event_id, b.start, b.end, b.series_id) for b in blocks]


# The two statements of `SyncStore.cached_view`, built once: it runs on every free/busy request,
# and a statement built per call costs its construction and SQLAlchemy's cache-key generation
# each time (both memoized on a statement object that lives on). Parameters: integration_id,
# now, start, end.
_VIEW_PUSH_HEARD_AT = (
    select(func.max(_heard_at()))
    .where(
        watch_channels.c.calendar_id == calendars.c.id,
        watch_channels.c.state == "active",
        or_(watch_channels.c.expires_at.is_(None), watch_channels.c.expires_at > bindparam("now")),
    )
    .scalar_subquery()
    .label("push_heard_at")
)
_VIEW_CALENDARS = (
    select(calendars, _VIEW_PUSH_HEARD_AT)
    .where(calendars.c.integration_id == bindparam("integration_id"))
    .order_by(calendars.c.created_at, calendars.c.id)
)
_VIEW_BLOCKS = (
    select(busy_blocks.c.calendar_id, busy_blocks.c.start_at, busy_blocks.c.end_at)
    .join(
        calendars,
        and_(
            calendars.c.id == busy_blocks.c.calendar_id,
            calendars.c.active_generation == busy_blocks.c.generation,
        ),
    )
    .where(
        calendars.c.integration_id == bindparam("integration_id"),
        busy_blocks.c.start_at < bindparam("end"),
        busy_blocks.c.end_at > bindparam("start"),
    )
    .order_by(busy_blocks.c.calendar_id, busy_blocks.c.start_at, busy_blocks.c.end_at)
)


class SyncStore:
    """Every statement the sync engine runs."""

    def __init__(self, engine: AsyncEngine, *, webhook_coalesce_s: float = 30.0) -> None:
        self.engine = engine
        # GATEWAY_WEBHOOK_AVAILABILITY_COALESCE_S: at most one availability.changed per this.
        self.webhook_coalesce_s = webhook_coalesce_s

    # -- calendars ----------------------------------------------------------------------------

    async def get(self, calendar_id: str) -> CalendarRow | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(calendars).where(calendars.c.id == calendar_id)))
                .mappings()
                .first()
            )
        return _calendar(row) if row is not None else None

    async def calendars_of(self, integration_id: str) -> list[CalendarRow]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(calendars)
                    .where(calendars.c.integration_id == integration_id)
                    .order_by(calendars.c.created_at, calendars.c.id)
                )
            ).mappings()
            return [_calendar(r) for r in rows]

    async def ensure_calendar(
        self,
        *,
        new_id: str,
        integration_id: str,
        tenant_id: str,
        google_calendar_id: str,
        time_zone: str,
        now: datetime,
    ) -> CalendarRow:
        """The row for (integration, Google calendar), created with `new_id` if missing; a
        changed time zone is updated (it decides where all-day events fall)."""
        attempt = functools.partial(
            self._ensure_calendar,
            new_id=new_id,
            integration_id=integration_id,
            tenant_id=tenant_id,
            google_calendar_id=google_calendar_id,
            time_zone=time_zone,
            now=now,
        )
        try:
            return await attempt()
        except IntegrityError:
            # Two first calls at once (a booking and a free/busy, two processes): the other
            # one created it; this one now finds it.
            return await attempt()

    async def _ensure_calendar(
        self,
        *,
        new_id: str,
        integration_id: str,
        tenant_id: str,
        google_calendar_id: str,
        time_zone: str,
        now: datetime,
    ) -> CalendarRow:
        key = and_(
            calendars.c.integration_id == integration_id,
            calendars.c.google_calendar_id == google_calendar_id,
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(calendars).where(key))).mappings().first()
            if row is None:
                await conn.execute(
                    insert(calendars).values(
                        id=new_id,
                        integration_id=integration_id,
                        tenant_id=tenant_id,
                        google_calendar_id=google_calendar_id,
                        time_zone=time_zone,
                        state="initial",
                        attempts=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
                await bump_integration(conn, integration_id)
            elif row["time_zone"] != time_zone:
                await conn.execute(
                    update(calendars).where(key).values(time_zone=time_zone, updated_at=now)
                )
                await bump_calendars(conn, [row["id"]])
            row = (await conn.execute(select(calendars).where(key))).mappings().one()
        return _calendar(row)

    async def record_failure(
        self, calendar_id: str, *, state: str, error_code: str, now: datetime
    ) -> None:
        """A failed attempt: the state, the error code and one more attempt."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(calendars)
                .where(calendars.c.id == calendar_id)
                .values(
                    state=state,
                    last_error=error_code[:64],
                    last_attempt_at=now,
                    attempts=calendars.c.attempts + 1,
                    updated_at=now,
                )
            )
            await bump_calendars(conn, [calendar_id])

    # -- records ------------------------------------------------------------------------------

    async def _apply(
        self,
        conn: AsyncConnection,
        calendar_id: str,
        generation: int,
        items: list[EventRow],
        *,
        empty: bool = False,
    ) -> tuple[set[str], list[EventRow]]:
        """Merge event rows (gateway.sync.rows) into a generation; returns the series they
        touch and the rows written.

        The last record of an id wins (pages are in order). A cancelled exception is kept: it
        removes an occurrence. Any other cancelled event is deleted, a cancelled master with
        its exceptions. Everything else replaces its previous version. `empty` says the
        generation holds nothing yet (the first page of a full sync): there is nothing to
        replace or delete, so only the INSERTs run.
        """
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
        # Exceptions of a series deleted in the same delta go with it (Google lists them as
        # cancelled too).
        keep = (
            [
                r
                for r in latest.values()
                if r[EVENT_ID] not in gone_set and r[RECURRING_EVENT_ID] not in gone_set
            ]
            if gone_set
            else list(latest.values())
        )
        scope = and_(
            calendar_events.c.calendar_id == calendar_id,
            calendar_events.c.generation == generation,
        )
        if not empty:
            for chunk in _chunks(list(latest)):
                await conn.execute(
                    delete(calendar_events).where(scope, calendar_events.c.event_id.in_(chunk))
                )
            for chunk in _chunks(gone):
                await conn.execute(
                    delete(calendar_events).where(
                        scope, calendar_events.c.recurring_event_id.in_(chunk)
                    )
                )
        await insert_rows(
            conn, calendar_events, EVENT_COLUMNS, [(calendar_id, generation, *r) for r in keep]
        )
        return {r[RECURRING_EVENT_ID] or r[EVENT_ID] for r in latest.values()}, keep

    async def _series_records(
        self, conn: AsyncConnection, calendar_id: str, generation: int, series: Sequence[str]
    ) -> list[EventRecord]:
        out: list[EventRecord] = []
        scope = and_(
            calendar_events.c.calendar_id == calendar_id,
            calendar_events.c.generation == generation,
        )
        for chunk in _chunks(series):
            rows = await conn.execute(
                select(calendar_events).where(
                    scope,
                    or_(
                        calendar_events.c.event_id.in_(chunk),
                        calendar_events.c.recurring_event_id.in_(chunk),
                    ),
                )
            )
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

    async def _announce_rebuild(
        self, conn: AsyncConnection, calendar_id: str, generation: int, now: datetime
    ) -> None:
        """A rebuild (Google expired the sync token: 410) replaces the copy wholesale; what
        happened meanwhile to the meetings the gateway booked is announced as an incremental
        sync would (booking.updated, or booking.cancelled for one the new copy lacks), in the
        switch's transaction."""
        cal = (
            await conn.execute(
                select(
                    calendars.c.active_generation, calendars.c.tenant_id, calendars.c.integration_id
                ).where(calendars.c.id == calendar_id)
            )
        ).first()
        if cal is None or cal.active_generation is None or cal.active_generation >= generation:
            return  # a first build: nothing was known, so nothing changed
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
            return
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

    async def _replace_series_blocks(
        self,
        conn: AsyncConnection,
        calendar_id: str,
        generation: int,
        series: Sequence[str],
        blocks: list[BusyBlock],
    ) -> None:
        scope = and_(
            busy_blocks.c.calendar_id == calendar_id, busy_blocks.c.generation == generation
        )
        for chunk in _chunks(series):
            await conn.execute(delete(busy_blocks).where(scope, busy_blocks.c.series_id.in_(chunk)))
        await insert_rows(
            conn, busy_blocks, BLOCK_COLUMNS, _block_rows(calendar_id, generation, blocks)
        )

    # -- full sync: a new generation ----------------------------------------------------------

    async def begin_generation(self, calendar_id: str) -> int:
        """A fresh generation number to build a full copy in; leftovers of an earlier build
        that never completed (a crash, a 410 during it) are deleted first."""
        async with self.engine.begin() as conn:
            active = (
                await conn.execute(
                    select(calendars.c.active_generation).where(calendars.c.id == calendar_id)
                )
            ).scalar_one()
            for table in (calendar_events, busy_blocks):
                stale = table.c.calendar_id == calendar_id
                if active is not None:
                    stale = and_(stale, table.c.generation != active)
                await conn.execute(delete(table).where(stale))
        return (active or 0) + 1

    async def write_page(
        self,
        calendar_id: str,
        generation: int,
        items: list[EventRow],
        *,
        first: bool = False,
    ) -> list[EventRow]:
        """Merge one page of a full sync (event rows, gateway.sync.rows) into the generation
        being built; returns the rows it wrote. `first`: the first page of a generation
        `begin_generation` just emptied (nothing to replace: INSERTs only, and the rows
        returned are then the whole generation)."""
        async with self.engine.begin() as conn:
            _, written = await self._apply(conn, calendar_id, generation, items, empty=first)
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
    ) -> bool:
        """Store the blocks of the complete generation and make it the one readers see, then
        drop the previous one. False (and nothing switched) if another build replaced it."""
        async with self.engine.begin() as conn:
            await self._announce_rebuild(conn, calendar_id, generation, now)
            await self._replace_series_blocks(conn, calendar_id, generation, [], blocks)
            switched = await conn.execute(
                update(calendars)
                .where(
                    calendars.c.id == calendar_id,
                    or_(
                        calendars.c.active_generation.is_(None),
                        calendars.c.active_generation < generation,
                    ),
                )
                .values(
                    active_generation=generation,
                    sync_token=sync_token,
                    horizon_start=horizon.start,
                    horizon_end=horizon.end,
                    **_success(now),
                )
            )
            if switched.rowcount != 1:
                return False
            await bump_calendars(conn, [calendar_id])
        # After the switch is committed nobody reads the old generation any more.
        async with self.engine.begin() as conn:
            for table in (calendar_events, busy_blocks):
                await conn.execute(
                    delete(table).where(
                        table.c.calendar_id == calendar_id, table.c.generation < generation
                    )
                )
        return True

    # -- incremental sync ---------------------------------------------------------------------

    async def apply_delta(
        self,
        calendar: CalendarRow,
        items: list[EventRow],
        *,
        compute: Compute,
        sync_token: str | None,
        now: datetime,
    ) -> int:
        """Merge a complete delta into the active generation, recompute the blocks of every
        series it touches (`await compute(records) -> blocks`) and store the new sync token, all in
        one transaction. Returns the number of series recomputed."""
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
            touched, _ = await self._apply(conn, calendar.id, generation, items)
            series = sorted(touched)
            records = await self._series_records(conn, calendar.id, generation, series)
            await self._replace_series_blocks(
                conn, calendar.id, generation, series, await compute(records)
            )
            await conn.execute(
                update(calendars)
                .where(calendars.c.id == calendar.id)
                .values(sync_token=sync_token, **_success(now))
            )
            await bump_calendars(conn, [calendar.id])
        return len(series)

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
            touched, _written = await self._apply(conn, calendar.id, active, items)
            series = sorted(touched)
            records = await self._series_records(conn, calendar.id, active, series)
            blocks = await compute(records)
            await self._replace_series_blocks(conn, calendar.id, active, series, blocks)
            await bump_calendars(conn, [calendar.id])
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
            await insert_rows(
                conn, busy_blocks, BLOCK_COLUMNS, _block_rows(calendar_id, generation, blocks)
            )
            await bump_calendars(conn, [calendar_id])
        return True

    # -- reads --------------------------------------------------------------------------------

    async def busy_between(
        self, calendar_id: str, start: datetime, end: datetime, *, except_event: str | None = None
    ) -> list[tuple[datetime, datetime]]:
        """Blocks of the active generation overlapping [start, end), by start, without those
        of `except_event` (a meeting being moved). One statement, so a generation switch is
        seen entirely or not at all."""
        active = (
            select(calendars.c.active_generation)
            .where(calendars.c.id == calendar_id)
            .scalar_subquery()
        )
        query = (
            select(busy_blocks.c.start_at, busy_blocks.c.end_at)
            .where(
                busy_blocks.c.calendar_id == calendar_id,
                busy_blocks.c.generation == active,
                busy_blocks.c.start_at < end.astimezone(UTC),
                busy_blocks.c.end_at > start.astimezone(UTC),
            )
            .order_by(busy_blocks.c.start_at, busy_blocks.c.end_at)
        )
        if except_event is not None:
            query = query.where(busy_blocks.c.series_id != except_event)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        out = []
        for s, e in rows:
            s_utc, e_utc = as_utc(s), as_utc(e)
            assert s_utc is not None and e_utc is not None
            out.append((s_utc, e_utc))
        return out

    async def freshness(
        self,
        integration_ids: Sequence[str],
        now: datetime,
        *,
        push_trust_s: float = DEFAULT_PUSH_TRUST_S,
    ) -> dict[str, list[CalendarFreshness]]:
        """Per integration, the freshness of each of its calendars (see CalendarFreshness)."""
        out: dict[str, list[CalendarFreshness]] = {i: [] for i in integration_ids}
        if not integration_ids:
            return out
        live = (
            select(watch_channels.c.calendar_id, func.max(_heard_at()))
            .where(
                watch_channels.c.state == "active",
                or_(watch_channels.c.expires_at.is_(None), watch_channels.c.expires_at > now),
            )
            .group_by(watch_channels.c.calendar_id)
        )
        async with self.engine.connect() as conn:
            live_ids: dict[str, datetime | None] = {}
            rows: list[RowMapping] = []
            for chunk in _chunks(list(integration_ids)):
                rows.extend(
                    (
                        await conn.execute(
                            select(calendars)
                            .where(calendars.c.integration_id.in_(chunk))
                            .order_by(calendars.c.created_at, calendars.c.id)
                        )
                    ).mappings()
                )
                live_ids.update(
                    (calendar_id, as_utc(heard))
                    for calendar_id, heard in await conn.execute(
                        live.where(watch_channels.c.integration_id.in_(chunk))
                    )
                )
        for row in rows:
            cal = _calendar(row)
            heard = live_ids.get(cal.id)
            out[cal.integration_id].append(calendar_freshness(cal, row, heard, now, push_trust_s))
        return out

    async def cached_view(
        self,
        integration_id: str,
        now: datetime,
        start: datetime,
        end: datetime,
        *,
        push_trust_s: float = DEFAULT_PUSH_TRUST_S,
    ) -> CachedView:
        """What a free/busy answer from the local copy needs, on one connection: the
        integration's calendars (as `calendars_of`), their freshness (as `freshness`) and the
        busy blocks of their active generations overlapping [start, end) (as `busy_between`).

        Two statements instead of the five of those three calls: the availability hot path.
        Blocks come from one statement joining each calendar's `active_generation`, so a
        generation switch is seen entirely or not at all; when one happens between the two
        statements the blocks are newer than the freshness says, never older."""
        params = {
            "integration_id": integration_id,
            "now": now,
            "start": start.astimezone(UTC),
            "end": end.astimezone(UTC),
        }
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_VIEW_CALENDARS, params)).mappings().all()
            found = (await conn.execute(_VIEW_BLOCKS, params)).all() if rows else []
        view = CachedView([], {}, {})
        for row in rows:
            cal = _calendar(row)
            view.calendars.append(cal)
            heard = as_utc(row["push_heard_at"])
            view.freshness[cal.id] = calendar_freshness(cal, row, heard, now, push_trust_s)
            view.blocks[cal.id] = []
        for calendar_id, s, e in found:
            s_utc, e_utc = as_utc(s), as_utc(e)
            assert s_utc is not None and e_utc is not None
            view.blocks[calendar_id].append((s_utc, e_utc))
        return view

    async def index_integration(
        self, integration_id: str
    ) -> tuple[RowMapping, int, list[str]] | None:
        """For the availability index: the integration's row, its version and its calendars'
        ids (in `calendars_of` order), in one statement; None if there is no such row."""
        query = (
            select(integrations, calendars.c.id.label("index_calendar_id"))
            .select_from(
                integrations.outerjoin(calendars, calendars.c.integration_id == integrations.c.id)
            )
            .where(integrations.c.id == integration_id)
            .order_by(calendars.c.created_at, calendars.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        if not rows:
            return None
        ids = [r["index_calendar_id"] for r in rows if r["index_calendar_id"] is not None]
        return rows[0], int(rows[0]["version"]), ids

    async def index_calendars(self, calendar_ids: Sequence[str]) -> list[CalendarSnapshot]:
        """For the availability index: each calendar's row, version, sync request, backoff,
        live push channels and every block of its active generation, read from one snapshot
        (REPEATABLE READ on PostgreSQL; on SQLite the version floors of gateway.db.notify
        refuse a read that a commit overtook)."""
        w = watch_channels.c
        active = and_(w.calendar_id == calendars.c.id, w.state == "active")
        push_until = (
            select(func.max(w.expires_at)).where(active).scalar_subquery().label("push_until")
        )
        push_forever = exists().where(active, w.expires_at.is_(None)).label("push_forever")
        push_heard_at = (
            select(func.max(_heard_at())).where(active).scalar_subquery().label("push_heard_at")
        )
        blocks_query = (
            select(busy_blocks.c.calendar_id, busy_blocks.c.start_at, busy_blocks.c.end_at)
            .join(
                calendars,
                and_(
                    calendars.c.id == busy_blocks.c.calendar_id,
                    calendars.c.active_generation == busy_blocks.c.generation,
                ),
            )
            .where(busy_blocks.c.calendar_id.in_(list(calendar_ids)))
        )
        async with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                rows = (
                    (
                        await conn.execute(
                            select(calendars, push_until, push_forever, push_heard_at).where(
                                calendars.c.id.in_(list(calendar_ids))
                            )
                        )
                    )
                    .mappings()
                    .all()
                )
                found = (await conn.execute(blocks_query)).all() if rows else []
        blocks: dict[str, list[tuple[datetime, datetime]]] = {r["id"]: [] for r in rows}
        for calendar_id, s, e in found:
            s_utc, e_utc = as_utc(s), as_utc(e)
            assert s_utc is not None and e_utc is not None
            blocks[calendar_id].append((s_utc, e_utc))
        return [
            CalendarSnapshot(
                row=_calendar(r),
                version=int(r["version"]),
                sync_requested_at=as_utc(r["sync_requested_at"]),
                backoff_until=as_utc(r["backoff_until"]),
                push_until=as_utc(r["push_until"]),
                push_forever=bool(r["push_forever"]),
                push_heard_at=as_utc(r["push_heard_at"]),
                push_error=r["push_error"],
                blocks=blocks[r["id"]],
            )
            for r in rows
        ]

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

    # -- scheduling (gateway.sync.scheduler) -------------------------------------------------

    async def request_sync(
        self, calendar_id: str, now: datetime, *, conn: AsyncConnection | None = None
    ) -> bool:
        """Ask for one more sync of the calendar (a push notification, a booking). Requests
        coalesce: the earliest unclaimed one is kept, and the scheduler clears it when it
        claims the calendar, so a request arriving during a sync causes one sync after it.
        Within the caller's transaction when `conn` is given (the webhook records the message
        and the request together). False if there is no such calendar."""
        statement = (
            update(calendars)
            .where(calendars.c.id == calendar_id)
            .values(sync_requested_at=func.coalesce(calendars.c.sync_requested_at, now))
        )
        if conn is not None:
            result = await conn.execute(statement)
            await bump_calendars(conn, [calendar_id])
        else:
            async with self.engine.begin() as own:
                result = await own.execute(statement)
                await bump_calendars(own, [calendar_id])
        return bool(result.rowcount == 1)

    async def integrations_without_calendars(self, limit: int) -> list[str]:
        """Active integrations that have no calendar row yet (just connected)."""
        query = (
            select(integrations.c.id)
            .where(
                integrations.c.status == "active",
                not_(exists().where(calendars.c.integration_id == integrations.c.id)),
            )
            .order_by(integrations.c.created_at, integrations.c.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def claim_due(
        self,
        owner: str,
        now: datetime,
        *,
        lease_until: datetime,
        limit: int,
        busy_integrations: Iterable[str] = (),
    ) -> list[CalendarRow]:
        """Claim up to `limit` due calendars for `owner` until `lease_until`, at most one per
        integration, none of `busy_integrations` (already syncing here) nor of an integration
        another process is syncing. Claiming clears `sync_requested_at`.

        Due: the integration is active; a sync was requested, or the next poll is due, or
        there is no complete copy yet; no backoff pending; no live lease. Requests go first,
        then the most overdue. PostgreSQL locks the candidates with FOR UPDATE SKIP LOCKED, so
        concurrent claimers pass each other; every claim is also a guarded UPDATE (the lease
        must still be free), which is all SQLite needs with its single writer.
        """
        if limit < 1:
            return []
        other = calendars.alias("other")
        leased = or_(calendars.c.lease_until.is_(None), calendars.c.lease_until < now)
        query = (
            select(calendars.c.id, calendars.c.integration_id)
            .join(integrations, integrations.c.id == calendars.c.integration_id)
            .where(
                integrations.c.status == "active",
                or_(
                    calendars.c.sync_requested_at.is_not(None),
                    calendars.c.next_poll_at.is_(None),
                    calendars.c.next_poll_at <= now,
                    calendars.c.active_generation.is_(None),
                ),
                or_(calendars.c.backoff_until.is_(None), calendars.c.backoff_until <= now),
                leased,
                # One sync per Google account at a time, across processes.
                not_(
                    exists().where(
                        other.c.integration_id == calendars.c.integration_id,
                        other.c.id != calendars.c.id,
                        other.c.lease_until >= now,
                    )
                ),
            )
            .order_by(
                calendars.c.sync_requested_at.is_(None),
                calendars.c.next_poll_at.is_not(None),
                calendars.c.next_poll_at,
                calendars.c.id,
            )
            # More than `limit`: some may belong to the same integration.
            .limit(limit * 2)
        )
        busy = list(busy_integrations)
        if busy:
            query = query.where(calendars.c.integration_id.not_in(busy))
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=calendars)
        claimed: list[str] = []
        async with self.engine.begin() as conn:
            seen: set[str] = set()
            for calendar_id, integration_id in (await conn.execute(query)).all():
                if integration_id in seen or len(claimed) >= limit:
                    continue
                got = await conn.execute(
                    update(calendars)
                    .where(calendars.c.id == calendar_id, leased)
                    # The request is consumed, so if this process dies mid-sync the calendar
                    # must come due again by itself: at the end of the lease (a finished
                    # sync's release sets the real next poll).
                    .values(
                        lease_owner=owner,
                        lease_until=lease_until,
                        sync_requested_at=None,
                        next_poll_at=lease_until,
                    )
                )
                if got.rowcount == 1:
                    seen.add(integration_id)
                    claimed.append(calendar_id)
            await bump_calendars(conn, claimed)
            rows: list[RowMapping] = []
            for chunk in _chunks(claimed):
                rows.extend(
                    (await conn.execute(select(calendars).where(calendars.c.id.in_(chunk))))
                    .mappings()
                    .all()
                )
        return [_calendar(r) for r in rows]

    def _held(self, calendar_id: str, owner: str) -> ColumnElement[bool]:
        return and_(calendars.c.id == calendar_id, calendars.c.lease_owner == owner)

    async def extend_lease(self, calendar_id: str, owner: str, lease_until: datetime) -> bool:
        """Push the lease on; False if `owner` no longer holds it (it ran out and another
        process claimed the calendar)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(calendars)
                .where(self._held(calendar_id, owner))
                .values(lease_until=lease_until)
            )
        return bool(result.rowcount == 1)

    async def release_synced(
        self,
        calendar_id: str,
        owner: str,
        now: datetime,
        *,
        poll_interval_s: float,
        safety_poll_interval_s: float,
    ) -> bool:
        """Release the lease after a successful sync and plan the next poll: soon without a
        live push channel, the slow safety poll with one. False if the lease was lost."""
        live = exists().where(
            watch_channels.c.calendar_id == calendar_id,
            watch_channels.c.state == "active",
            watch_channels.c.expires_at > now,
        )
        async with self.engine.begin() as conn:
            push = bool((await conn.execute(select(live))).scalar())
            interval = safety_poll_interval_s if push else poll_interval_s
            result = await conn.execute(
                update(calendars)
                .where(self._held(calendar_id, owner))
                .values(
                    lease_owner=None,
                    lease_until=None,
                    next_poll_at=now + timedelta(seconds=interval),
                )
            )
        return bool(result.rowcount == 1)

    async def release_failed(
        self,
        calendar_id: str,
        owner: str,
        now: datetime,
        delay_s: Callable[[str, int], float],
    ) -> datetime | None:
        """Release the lease after a failed sync (already recorded by `record_failure`) and
        back off for `delay_s(state, attempts)` seconds (state `backoff` for a transient
        failure, else `error`); the calendar is due again then. Returns the end of the
        backoff, or None if the lease was lost."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(calendars.c.state, calendars.c.attempts).where(
                        self._held(calendar_id, owner)
                    )
                )
            ).first()
            if row is None:
                return None
            until = now + timedelta(seconds=delay_s(str(row.state), int(row.attempts)))
            await conn.execute(
                update(calendars)
                .where(self._held(calendar_id, owner))
                .values(lease_owner=None, lease_until=None, backoff_until=until, next_poll_at=until)
            )
            await bump_calendars(conn, [calendar_id])
        return until

    async def release(self, calendar_id: str, owner: str, now: datetime, *, again: bool) -> bool:
        """Release the lease without a verdict (the integration went inactive, or this process
        stops); `again` re-requests the sync so the next claimer does it at once."""
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if again:
            values["sync_requested_at"] = func.coalesce(calendars.c.sync_requested_at, now)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(calendars).where(self._held(calendar_id, owner)).values(**values)
            )
            if again:
                await bump_calendars(conn, [calendar_id])
        return bool(result.rowcount == 1)

    # -- purge --------------------------------------------------------------------------------

    async def purge_integration(self, integration_id: str) -> int:
        """Delete every calendar, record and block of the integration (idempotent); returns
        how many calendars and event records were deleted."""
        async with self.engine.begin() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(calendars.c.id).where(calendars.c.integration_id == integration_id)
                    )
                ).scalars()
            )
            # Told before the rows go: every cache drops them, and nothing reloads them.
            await bump_calendars(conn, ids)
            await bump_integration(conn, integration_id)
            purged = 0
            for chunk in _chunks(ids):
                await conn.execute(delete(busy_blocks).where(busy_blocks.c.calendar_id.in_(chunk)))
                result = await conn.execute(
                    delete(calendar_events).where(calendar_events.c.calendar_id.in_(chunk))
                )
                purged += result.rowcount
            result = await conn.execute(
                delete(calendars).where(calendars.c.integration_id == integration_id)
            )
            return purged + result.rowcount


def _success(now: datetime) -> dict[str, Any]:
    return {
        "state": "synced",
        "last_success_at": now,
        "last_attempt_at": now,
        "last_error": None,
        "attempts": 0,
        "backoff_until": None,
        "updated_at": now,
    }
