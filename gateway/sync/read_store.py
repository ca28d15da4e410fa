"""SQL of what availability reads from the synced copy: busy blocks in a window, each
calendar's freshness, the free/busy hot path's combined view, and the availability index's
loads. Reads only look at each calendar's `active_generation` (gateway.sync.copy_store).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    String,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    null,
    or_,
    select,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from gateway.db.bulk import chunks
from gateway.db.direct import Direct, any_of, execute
from gateway.db.engine import single_statement_reads
from gateway.db.schema import (
    busy_blocks,
    calendars,
    integrations,
    watch_channels,
)
from gateway.db.values import as_utc, epoch_ceil, epoch_floor
from gateway.sync.calendar_store import CalendarRow, calendar_row
from gateway.sync.freshness import DEFAULT_PUSH_TRUST_S, copy_as_of


@dataclass(frozen=True)
class CalendarFreshness:
    """How far a calendar's local copy can be trusted, for availability answers.

    as_of         the instant up to which the copy is known to match Google, or None when
                  there is no complete copy yet (`gateway.sync.freshness.copy_as_of`: with a
                  live push channel, no notification waiting and a sign of life within
                  GATEWAY_PUSH_TRUST_S, now; otherwise the last successful sync)
    push_active   an `active` watch channel that has not expired
    last_push_at  the last notification of such a channel, or None
    sync_pending  a push notification or request is waiting for its sync, or a sync is
                  running (its claim consumed the request; until it stores its result and
                  releases the calendar, the copy is no newer than its last sync)
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
    together (`ReadStore.cached_view`); blocks are UTC, sorted, not merged."""

    calendars: list[CalendarRow]
    freshness: dict[str, CalendarFreshness]
    blocks: dict[str, list[tuple[datetime, datetime]]]


@dataclass(frozen=True)
class CalendarSnapshot:
    """A calendar as the availability index loads it (`ReadStore.index_calendars`)."""

    row: CalendarRow
    version: int
    sync_requested_at: datetime | None
    syncing: bool  # a sync holds the calendar (its lease)
    backoff_until: datetime | None
    push_until: datetime | None  # the latest expiry of an active channel
    push_forever: bool  # an active channel without an expiry
    push_heard_at: datetime | None  # the last sign of life of its active channels
    push_error: str | None
    blocks_version: int
    # Epoch seconds (start floored, end ceiled), any order; None: not read, because the
    # caller holds the blocks of this blocks_version already.
    blocks: list[tuple[int, int]] | None

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
    pending = row["sync_requested_at"] is not None or row["lease_owner"] is not None
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
# Busy blocks of each calendar's active generation (the copy a reader may see).
_ACTIVE_BLOCKS = select(
    busy_blocks.c.calendar_id, busy_blocks.c.start_at, busy_blocks.c.end_at
).join(
    calendars,
    and_(
        calendars.c.id == busy_blocks.c.calendar_id,
        calendars.c.active_generation == busy_blocks.c.generation,
    ),
)


@functools.cache
def _packed_epochs(dialect: str) -> ColumnElement[str | None]:
    """Every block of the calendar row's active generation as one text of whole epoch seconds,
    `start,end,start,end,...` (any order; NULL for none), for the index's loads
    (`_unpack_epochs`). One value per calendar, not a row per block: sqlite3 releases the GIL
    around each row it steps to and must win it back after, which beside a busy thread costs
    up to its switch interval (5 ms) a row (a calendar's thousand blocks as rows took 40-50
    ms of the connection's thread on a loaded gateway); PostgreSQL sends one value instead of
    a thousand rows."""
    # Stored as epoch seconds (`EpochSeconds`): nothing to convert.
    lo, hi = busy_blocks.c.start_at, busy_blocks.c.end_at
    pair = func.printf("%d,%d", lo, hi) if dialect == "sqlite" else func.concat(lo, ",", hi)
    joined = func.group_concat(pair, ",") if dialect == "sqlite" else func.string_agg(pair, ",")
    return (
        select(joined)
        .where(
            busy_blocks.c.calendar_id == calendars.c.id,
            busy_blocks.c.generation == calendars.c.active_generation,
        )
        .scalar_subquery()
    )


def _unpack_epochs(packed: str | None) -> list[tuple[int, int]]:
    """The (start, end) seconds of `_packed_epochs`."""
    if not packed:
        return []
    bounds = iter(map(int, packed.split(",")))
    return list(zip(bounds, bounds, strict=True))


@functools.cache
def _index_calendars(dialect: str) -> Direct:
    """The index's load (`ReadStore.index_calendars`), built once: each calendar's row, push
    state and packed blocks. `known` is text `,id:blocks_version,...,` of the calendars whose
    blocks the caller holds: theirs are not read while still at that blocks_version. On
    PostgreSQL the ids are an array (no IN list: asyncpg runs it itself, gateway.db.direct)."""
    w = watch_channels.c
    active = and_(w.calendar_id == calendars.c.id, w.state == "active")
    push_until = select(func.max(w.expires_at)).where(active).scalar_subquery()
    push_forever = exists().where(active, w.expires_at.is_(None))
    push_heard_at = select(func.max(_heard_at())).where(active).scalar_subquery()
    key = "," + calendars.c.id + ":" + cast(calendars.c.blocks_version, String) + ","
    find = func.instr if dialect == "sqlite" else func.strpos
    held = find(bindparam("known", type_=String), key) > 0
    ids = (
        calendars.c.id.in_(bindparam("ids", expanding=True))
        if dialect == "sqlite"
        else any_of(calendars.c.id, "ids")
    )
    return Direct(
        select(
            calendars,
            push_until.label("push_until"),
            push_forever.label("push_forever"),
            push_heard_at.label("push_heard_at"),
            case((held, null()), else_=_packed_epochs(dialect)).label("index_blocks"),
        ).where(ids)
    )


_VIEW_BLOCKS = _ACTIVE_BLOCKS.where(
    calendars.c.integration_id == bindparam("integration_id"),
    busy_blocks.c.start_at < bindparam("end"),
    busy_blocks.c.end_at > bindparam("start"),
).order_by(busy_blocks.c.calendar_id, busy_blocks.c.start_at, busy_blocks.c.end_at)


# The availability index's read of an integration (every first request for it, and after
# every change to it): on PostgreSQL by asyncpg itself (gateway.db.direct).
_INDEX_INTEGRATION = Direct(
    select(integrations, calendars.c.id.label("index_calendar_id"))
    .select_from(integrations.outerjoin(calendars, calendars.c.integration_id == integrations.c.id))
    .where(integrations.c.id == bindparam("index_integration"))
    .order_by(calendars.c.created_at, calendars.c.id)
)


class ReadStore:
    """The statements availability answers are read with."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @functools.cached_property
    def _reads(self) -> AsyncEngine:
        # A property: SyncStore, which mixes this class in, runs another base's __init__.
        return single_statement_reads(self.engine)

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
                busy_blocks.c.start_at < epoch_ceil(end),
                busy_blocks.c.end_at > epoch_floor(start),
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
            for chunk in chunks(list(integration_ids)):
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
            cal = calendar_row(row)
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
            "start": epoch_floor(start),
            "end": epoch_ceil(end),
        }
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_VIEW_CALENDARS, params)).mappings().all()
            found = (await conn.execute(_VIEW_BLOCKS, params)).all() if rows else []
        view = CachedView([], {}, {})
        for row in rows:
            cal = calendar_row(row)
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
        async with self._reads.connect() as conn:
            found = await execute(conn, _INDEX_INTEGRATION, {"index_integration": integration_id})
            rows = found.mappings().all()
        if not rows:
            return None
        ids = [r["index_calendar_id"] for r in rows if r["index_calendar_id"] is not None]
        return rows[0], int(rows[0]["version"]), ids

    async def index_calendars(
        self, calendar_ids: Sequence[str], *, known: Mapping[str, int] | None = None
    ) -> list[CalendarSnapshot]:
        """For the availability index: each calendar's row, version, sync request, backoff,
        live push channels and every block of its active generation, read by one statement
        (so from one snapshot on either database; one round trip, one hop on SQLite).

        `known` maps calendar ids to the `blocks_version` whose blocks the caller holds: a
        calendar still at that blocks_version (only its freshness changed since) comes back
        with `blocks=None`, and its blocks are not read."""
        known = known or {}
        held = "," + ",".join(f"{c}:{v}" for c, v in known.items()) + ","
        async with self._reads.connect() as conn:
            # One statement: its rows and blocks are of one snapshot on either database.
            query = _index_calendars(conn.dialect.name)
            result = await execute(conn, query, {"ids": list(calendar_ids), "known": held})
            rows = result.mappings().all()
        return [
            CalendarSnapshot(
                row=calendar_row(r),
                version=int(r["version"]),
                sync_requested_at=as_utc(r["sync_requested_at"]),
                syncing=r["lease_owner"] is not None,
                backoff_until=as_utc(r["backoff_until"]),
                push_until=as_utc(r["push_until"]),
                push_forever=bool(r["push_forever"]),
                push_heard_at=as_utc(r["push_heard_at"]),
                push_error=r["push_error"],
                blocks_version=int(r["blocks_version"]),
                blocks=None
                if known.get(r["id"]) == r["blocks_version"]
                else _unpack_epochs(r["index_blocks"]),
            )
            for r in rows
        ]
