"""SQL of push channels: the `watch_channels` rows (a verified notification's sync request is
`LeaseStore.request_sync`, made in the same transaction).

A channel row moves through these states (`gateway.sync.channels` drives them):

    opening   claimed and (being) opened at Google; no notification verified yet
    active    at least one notification with the right token arrived: Google delivers to us
    stopping  replaced or its integration went away; `channels.stop` at Google is pending
    stopped   nothing more to do; its notifications are refused (404)

A calendar needs a new channel when it has no HEALTHY one: an `opening` channel younger than
the silence threshold, or an `active` one that does not expire within the renewal margin. The
claim that inserts a new `opening` row re-checks that condition in the INSERT itself, under a
`FOR UPDATE SKIP LOCKED` lock of the calendar row on PostgreSQL (SQLite runs one statement at
a time, which makes the guarded INSERT atomic by itself), so two gateway processes never open
two channels for one calendar; the only overlap is a renewal's (new first, then the old stops).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    String,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import ColumnElement

from gateway.db.bulk import defer_write
from gateway.db.direct import Direct, execute
from gateway.db.engine import single_statement_reads, single_statement_writes
from gateway.db.notify import (
    CALENDAR_CHANGE,
    bump_calendars,
    calendar_bump,
    publish_calendars,
)
from gateway.db.schema import calendars, integrations, watch_channels
from gateway.db.transactions import commit_if_changed, ended_unchanged
from gateway.db.values import as_utc
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.lease_store import ClaimOffer, LeaseStore

OPENING, ACTIVE, STOPPING, STOPPED = "opening", "active", "stopping", "stopped"
LIVE = (OPENING, ACTIVE)

# `last_message_number` is a 32-bit INTEGER on PostgreSQL; a larger number (Google's are not
# documented to stay below it) is accepted without the ordering check rather than refused.
MAX_STORED_MESSAGE_NUMBER = 2**31 - 1


@dataclass(frozen=True)
class ChannelRow:
    """One watch channel as stored (the token is only ever its SHA-256)."""

    id: str
    calendar_id: str
    integration_id: str
    resource_id: str | None
    token_sha256: bytes = field(repr=False)
    state: str
    expires_at: datetime | None
    created_at: datetime
    last_message_at: datetime | None
    last_message_number: int | None
    # Whether its calendar had a complete copy when the row was read (`ChannelStore.get`
    # only; None elsewhere): which way `accept_message` records a `sync` message.
    calendar_copied: bool | None = None


@dataclass(frozen=True)
class Acceptance:
    """What `ChannelStore.accept_message` did: recorded the message (and requested a sync:
    `requested`, or leased the calendar to the offering scheduler: `claimed`), or nothing."""

    accepted: bool
    claimed: CalendarRow | None = None
    requested: bool = False


@dataclass(frozen=True)
class WatchTarget:
    """A synced calendar of an active integration that needs a (new) channel."""

    calendar_id: str
    integration_id: str
    google_calendar_id: str

    def __repr__(self) -> str:
        # The Google calendar id is usually the owner's address: not for logs.
        return f"WatchTarget(calendar_id={self.calendar_id!r})"


def _row(row: RowMapping) -> ChannelRow:
    created_at = as_utc(row["created_at"])
    assert created_at is not None  # NOT NULL column
    return ChannelRow(
        id=row["id"],
        calendar_id=row["calendar_id"],
        integration_id=row["integration_id"],
        resource_id=row["resource_id"],
        token_sha256=bytes(row["token_sha256"]),
        state=row["state"],
        expires_at=as_utc(row["expires_at"]),
        created_at=created_at,
        last_message_at=as_utc(row["last_message_at"]),
        last_message_number=row["last_message_number"],
    )


_w = watch_channels.c
# A channel that makes a new one unnecessary (see the module doc), with its bounds bound per
# statement (`_healthy_params`). This and the statements below are built once: the claim's
# INSERT ... SELECT was the largest statement a calendar's onboarding built.
_HEALTHY = or_(
    and_(
        _w.state == OPENING,
        _w.created_at > bindparam("healthy_opened_after", type_=_w.created_at.type),
    ),
    and_(
        _w.state == ACTIVE,
        or_(
            _w.expires_at.is_(None),
            _w.expires_at > bindparam("healthy_expires_after", type_=_w.expires_at.type),
        ),
    ),
)


def _healthy_params(now: datetime, renew_before: timedelta, silence: timedelta) -> dict[str, Any]:
    return {"healthy_opened_after": now - silence, "healthy_expires_after": now + renew_before}


def _eligible(*, copied: bool = True) -> ColumnElement[bool]:
    """A calendar with a complete copy (unless `copied` is false), of an active integration."""
    active = exists().where(
        integrations.c.id == calendars.c.integration_id, integrations.c.status == "active"
    )
    return and_(calendars.c.active_generation.is_not(None), active) if copied else active


_BY_ID = Direct(
    select(
        watch_channels,
        exists()
        .where(calendars.c.id == _w.calendar_id, calendars.c.active_generation.is_not(None))
        .label("calendar_copied"),
    ).where(_w.id == bindparam("channel_id"))
)


@functools.cache
def _accept_statement(*, numbered: bool) -> Update:
    """A verified message's UPDATE of its channel (`ChannelStore.accept_message`), built once
    per shape (and compiled once where `defer_write` takes it): the channel becomes active,
    with the resource the message names if it had none yet (Google may deliver `sync` before
    answering events.watch); `numbered`: the message number is stored, and only a later one
    than stored is accepted. OR, not IN: the statement may be deferred on SQLite
    (`defer_write`), which takes no IN list."""
    values: dict[str, Any] = {
        "last_message_at": bindparam("accept_at", type_=_w.last_message_at.type),
        "state": ACTIVE,
        "resource_id": func.coalesce(
            _w.resource_id, bindparam("accept_resource", type_=String(255))
        ),
    }
    where = and_(
        _w.id == bindparam("accept_channel", type_=_w.id.type),
        or_(*(_w.state == state for state in LIVE)),
    )
    if numbered:
        number = bindparam("accept_number", type_=_w.last_message_number.type)
        values["last_message_number"] = number
        where = and_(where, or_(_w.last_message_number.is_(None), _w.last_message_number < number))
    return update(watch_channels).where(where).values(**values)


@functools.cache
def _accept_direct(*, numbered: bool) -> Direct:
    """`_accept_statement` for PostgreSQL, run by asyncpg itself (gateway.db.direct)."""
    return Direct(_accept_statement(numbered=numbered))


@functools.cache
def _accept_uncopied(*, numbered: bool) -> Direct:
    """`_accept_statement` only while the channel's calendar has no complete copy: Google's
    `sync` message then requests no sync (`ChannelStore.accept_message`) and the calendar's
    version need not move (its first copy's switch moves it, and with it the index reads the
    channel as it is then). Decided in the UPDATE itself, so a copy committed meanwhile is
    seen. Run by asyncpg itself on PostgreSQL (gateway.db.direct)."""
    uncopied = exists().where(
        calendars.c.id == _w.calendar_id, calendars.c.active_generation.is_(None)
    )
    return Direct(_accept_statement(numbered=numbered).where(uncopied))


_CLAIM_CALENDAR = bindparam("claim_calendar", type_=_w.calendar_id.type)


def _claim_statement(*, copied: bool) -> Insert:
    return insert(watch_channels).from_select(
        ["id", "calendar_id", "integration_id", "token_sha256", "state", "created_at"],
        select(
            bindparam("claim_id", type_=_w.id.type),
            _CLAIM_CALENDAR,
            bindparam("claim_integration", type_=_w.integration_id.type),
            bindparam("claim_token_sha256", type_=_w.token_sha256.type),
            literal(OPENING, String(16)),
            bindparam("claim_now", type_=_w.created_at.type),
        ).where(
            # Re-checked here, in the statement that inserts: the listing is stale by now.
            exists().where(calendars.c.id == _CLAIM_CALENDAR, _eligible(copied=copied)),
            ~exists().where(_w.calendar_id == _CLAIM_CALENDAR, _HEALTHY),
        ),
    )


_CLAIM = Direct(_claim_statement(copied=True))
# A calendar's first channel, opened before its first full sync lists it (no copy yet).
_CLAIM_FIRST = Direct(_claim_statement(copied=False))
# PostgreSQL: the calendar's row, unless another process holds it (`ChannelStore.claim`).
_CLAIM_LOCK = Direct(
    select(calendars.c.id)
    .where(calendars.c.id == _CLAIM_CALENDAR)
    .with_for_update(skip_locked=True)
)

_OPENED_ID = bindparam("opened_id", type_=_w.id.type)
_OPENED_CALENDAR = bindparam("opened_calendar", type_=_w.calendar_id.type)
_IS_OPENED = _w.id == _OPENED_ID
_OPENED_LIVE = watch_channels.alias("opened")
# Google's answer for the channel, and its calendar's other live channels moved to `stopping`,
# in ONE statement (one turn of SQLite's writer, not two), all only while that channel is
# still live; it returns every row it changed (the opened one keeps its state).
# OR, not IN: an IN list is expanded at execution, which `Direct` (PostgreSQL's path for it
# in `record_opened`) does not do.
_OPENED = (
    update(watch_channels)
    .where(
        _w.calendar_id == _OPENED_CALENDAR,
        or_(*(_w.state == state for state in LIVE)),
        exists().where(
            _OPENED_LIVE.c.id == _OPENED_ID, or_(*(_OPENED_LIVE.c.state == state for state in LIVE))
        ),
    )
    .values(
        resource_id=case(
            (_IS_OPENED, bindparam("opened_resource", type_=_w.resource_id.type)),
            else_=_w.resource_id,
        ),
        expires_at=case(
            (_IS_OPENED, bindparam("opened_expires_at", type_=_w.expires_at.type)),
            else_=_w.expires_at,
        ),
        state=case((_IS_OPENED, _w.state), else_=literal(STOPPING, String(16))),
    )
    .returning(watch_channels)
)
_PUSH_ACCEPTED_SET = (
    update(calendars)
    .where(calendars.c.id == _OPENED_CALENDAR)
    .values(push_error=None, **calendar_bump(blocks=False))
)
_PUSH_ACCEPTED = Direct(_PUSH_ACCEPTED_SET.returning(*CALENDAR_CHANGE))
# PostgreSQL's `record_opened`: the same statements, run by asyncpg itself.
_OPENED_DIRECT = Direct(_OPENED)
# On SQLite `_PUSH_ACCEPTED_SET` runs first, deferred into this statement's hop, and this one
# returns what `publish_calendars` needs of the calendar with the channels (a subquery in
# RETURNING sees the transaction's own bump).
_OPENED_AFTER_BUMP = _OPENED.returning(
    *(
        select(calendars.c[name])
        .where(calendars.c.id == _OPENED_CALENDAR)
        .scalar_subquery()
        .label(f"bumped_{name}")
        for name in ("integration_id", "version")
    )
)

# `_OPENED` only while the calendar has no complete copy and no push error: a first channel,
# opened before the calendar's first listing. Nothing of the calendar row changes then (its
# first copy's switch moves its version), so the answer is this statement alone, committed by
# itself (`single_statement_writes`: on PostgreSQL no BEGIN or COMMIT, on SQLite one hop).
_OPENED_UNCOPIED = Direct(
    _OPENED.where(
        exists().where(
            calendars.c.id == _OPENED_CALENDAR,
            calendars.c.active_generation.is_(None),
            calendars.c.push_error.is_(None),
        )
    )
)


class ChannelStore:
    """Every statement about push channels."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._reads = single_statement_reads(engine)
        self._writes = single_statement_writes(engine)
        self._locks_rows = engine.dialect.name == "postgresql"

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, channel_id: str) -> ChannelRow | None:
        async with self._reads.connect() as conn:
            found = await execute(conn, _BY_ID, {"channel_id": channel_id})
            row = found.mappings().first()
        if row is None:
            return None
        return replace(_row(row), calendar_copied=bool(row["calendar_copied"]))

    async def channels_of_calendar(self, calendar_id: str) -> list[ChannelRow]:
        """Every row of the calendar, oldest first."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(watch_channels)
                    .where(watch_channels.c.calendar_id == calendar_id)
                    .order_by(watch_channels.c.created_at, watch_channels.c.id)
                )
            ).mappings()
            return [_row(r) for r in rows]

    async def channels_in_state(
        self, state: str, *, integration_id: str | None = None, limit: int = 500
    ) -> list[ChannelRow]:
        query = select(watch_channels).where(watch_channels.c.state == state)
        if integration_id is not None:
            query = query.where(watch_channels.c.integration_id == integration_id)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(query.order_by(watch_channels.c.created_at).limit(limit))
            ).mappings()
            return [_row(r) for r in rows]

    async def targets(
        self, now: datetime, *, renew_before: timedelta, silence: timedelta, limit: int
    ) -> list[WatchTarget]:
        """Calendars that need a channel: eligible and without a healthy one."""
        c = calendars.c
        query = (
            select(c.id, c.integration_id, c.google_calendar_id)
            .where(_eligible(), ~exists().where(watch_channels.c.calendar_id == c.id, _HEALTHY))
            .order_by(c.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            found = await conn.execute(query, _healthy_params(now, renew_before, silence))
            rows = found.all()
        return [WatchTarget(r[0], r[1], r[2]) for r in rows]

    # -- the claim and the answer of events.watch ------------------------------------------------

    async def claim(
        self,
        target: WatchTarget,
        *,
        channel_id: str,
        token_sha256: bytes,
        now: datetime,
        renew_before: timedelta,
        silence: timedelta,
        first: bool = False,
    ) -> bool:
        """Insert an `opening` row for the calendar if it still needs one; False when another
        process holds the calendar or already claimed a healthy channel for it. A calendar
        needs a complete copy, except for its `first` channel (opened before its first full
        sync lists it, `ChannelManager.open_before_first_sync`)."""
        async with self.engine.begin() as conn:
            if self._locks_rows:
                locked = await execute(conn, _CLAIM_LOCK, {"claim_calendar": target.calendar_id})
                if locked.first() is None:
                    return False
            params = {
                "claim_id": channel_id,
                "claim_calendar": target.calendar_id,
                "claim_integration": target.integration_id,
                "claim_token_sha256": token_sha256,
                "claim_now": now,
                **_healthy_params(now, renew_before, silence),
            }
            result = await commit_if_changed(conn, _CLAIM_FIRST if first else _CLAIM, params)
            return result.rowcount == 1

    async def record_opened(
        self,
        channel_id: str,
        resource_id: str,
        expires_at: datetime,
        *,
        calendar_id: str,
        uncopied: bool = False,
    ) -> list[ChannelRow]:
        """Google's answer to events.watch, in one transaction: the channel's resource and
        expiry (its state is left alone: a notification may have verified it already, Google
        can send `sync` before answering); if it is still live, the calendar's other live
        channels move to `stopping` (new first, then the old: no moment without a channel
        during a renewal) and are returned for `channels.stop`; the calendar's `push_error` is
        cleared (Google accepted a channel) and its version bumped, in one UPDATE.

        `uncopied`: the calendar is thought to have no copy yet (a first channel, opened before
        its first listing). While that holds and it has no push error either, the channels'
        UPDATE is then the whole transaction (`_OPENED_UNCOPIED`): one statement committed
        alone, no calendar row written; otherwise the transaction above."""
        params = {
            "opened_id": channel_id,
            "opened_calendar": calendar_id,
            "opened_resource": resource_id,
            "opened_expires_at": expires_at,
        }
        if uncopied:
            async with self._writes.begin() as conn:
                alone = await commit_if_changed(conn, _OPENED_UNCOPIED, params)
                opened = [_row(r) for r in alone.mappings()]
            if opened:
                return [r for r in opened if r.id != channel_id]
        async with self.engine.begin() as conn:
            if await defer_write(conn, _PUSH_ACCEPTED_SET, params):
                return await self._record_opened_after_bump(conn, channel_id, calendar_id, params)
            changed = await execute(conn, _OPENED_DIRECT, params)
            replaced = [_row(r) for r in changed.mappings() if r["id"] != channel_id]
            bumped = await commit_if_changed(conn, _PUSH_ACCEPTED, params)
            await publish_calendars(conn, bumped.all())
        return replaced

    @staticmethod
    async def _record_opened_after_bump(
        conn: AsyncConnection, channel_id: str, calendar_id: str, params: dict[str, Any]
    ) -> list[ChannelRow]:
        """`record_opened` on SQLite in ONE hop to the connection's thread: the calendar's bump
        deferred (`defer_write`) before the channels' UPDATE, which commits both and returns
        the calendar's new version with its rows. Every new calendar's first channel is
        recorded while first syncs queue for SQLite's one writer, and the second hop held it
        ~3 ms more. The channel no longer live: no row comes back, the bump alone changed the
        calendar and is read here (the transaction still open); the calendar gone: nothing."""
        opened = (await commit_if_changed(conn, _OPENED_AFTER_BUMP, params)).mappings().all()
        if opened:
            first = opened[0]
            if first["bumped_version"] is not None:  # None: the calendar is gone
                bumped = (calendar_id, first["bumped_integration_id"], first["bumped_version"])
                await publish_calendars(conn, [bumped])
            return [_row(r) for r in opened if r["id"] != channel_id]
        if await ended_unchanged(conn):
            return []
        found = await conn.execute(select(*CALENDAR_CHANGE).where(calendars.c.id == calendar_id))
        await publish_calendars(conn, found.all())
        return []

    async def record_push_error(self, calendar_id: str, reason: str) -> None:
        """Why the calendar has no channel (`push_refused: ...`), for its status."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(calendars).where(calendars.c.id == calendar_id).values(push_error=reason)
            )
            # Its status is part of what the availability index holds.
            await bump_calendars(conn, [calendar_id], blocks=False)

    async def forget(self, channel_id: str) -> None:
        """Delete a row whose events.watch failed (Google has no such channel; should it have
        made one after all, its notifications find no row and are refused)."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(watch_channels).where(watch_channels.c.id == channel_id))

    # -- stopping ---------------------------------------------------------------------------------

    async def stop_integration(self, integration_id: str, state: str) -> list[ChannelRow]:
        """Move every channel of the integration that is not stopped to `state` (`stopping`
        when Google can still be asked to stop them, else `stopped`); returns them."""
        w = watch_channels.c
        where = and_(w.integration_id == integration_id, w.state != STOPPED)
        if state == STOPPING:
            where = and_(where, w.state != STOPPING)
        return await self._move(where, state)

    async def delete_integration(self, integration_id: str) -> int:
        """Delete every row of the integration; returns how many were not stopped yet."""
        w = watch_channels.c
        async with self.engine.begin() as conn:
            live = await conn.execute(
                delete(watch_channels)
                .where(w.integration_id == integration_id, w.state != STOPPED)
                .returning(w.id)
            )
            count = len(live.all())
            await conn.execute(delete(watch_channels).where(w.integration_id == integration_id))
        return count

    async def _move(self, where: ColumnElement[bool], state: str) -> list[ChannelRow]:
        # One UPDATE ... RETURNING: a row another process moved meanwhile is not taken twice.
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(watch_channels).where(where).values(state=state).returning(watch_channels)
            )
            moved = [_row(r) for r in result.mappings()]
            await bump_calendars(conn, [r.calendar_id for r in moved], blocks=False, last=True)
            return moved

    async def mark_stopped(self, channel_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(watch_channels)
                .where(watch_channels.c.id == channel_id)
                .values(state=STOPPED)
            )

    async def expire(self, now: datetime) -> int:
        """Channels past their expiration are over at Google: mark them stopped."""
        w = watch_channels.c
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(watch_channels)
                .where(w.state != STOPPED, w.expires_at.is_not(None), w.expires_at <= now)
                .values(state=STOPPED)
            )
            return int(result.rowcount)

    async def stop_orphans(self) -> int:
        """Mark stopped every channel whose calendar is gone or whose integration is not active
        (the safety net behind the reauth and disconnect hooks, which may have failed or run
        in another process): nothing may be asked of Google for them."""
        w = watch_channels.c
        active_calendar = exists().where(
            calendars.c.id == w.calendar_id,
            integrations.c.id == calendars.c.integration_id,
            integrations.c.status == "active",
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(watch_channels)
                .where(w.state != STOPPED, ~active_calendar)
                .values(state=STOPPED)
            )
            return int(result.rowcount)

    async def delete_finished(self, now: datetime, *, keep: timedelta) -> int:
        """Delete stopped rows that expired `keep` ago, and stopped rows Google never answered
        for (no expiry) older than that: their notifications are refused without a row too."""
        w = watch_channels.c
        cutoff = now - keep
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(watch_channels).where(
                    w.state == STOPPED,
                    or_(
                        w.expires_at <= cutoff,
                        and_(w.expires_at.is_(None), w.created_at <= cutoff),
                    ),
                )
            )
            return int(result.rowcount)

    # -- notifications -----------------------------------------------------------------------------

    async def accept_message(
        self,
        channel: ChannelRow,
        *,
        resource_id: str,
        message_number: int,
        now: datetime,
        offer: ClaimOffer | None = None,
        sync_message: bool = False,
    ) -> Acceptance:
        """Record a verified notification and request one sync of its calendar, in one
        transaction. Not accepted (and nothing written) when the channel saw this message
        number or a later one already, or stopped meanwhile: duplicates and stragglers do no
        work. With a scheduler's `offer` of a free slot, the calendar is leased to it in the
        same transaction when it may be claimed (`LeaseStore.claim_notified`): `claimed` is
        then its row, and that scheduler starts the sync at once.

        The first verified message makes the channel `active` (Google delivers to us).
        Google's `sync` message (`sync_message`, a new channel's first) requests a sync only
        for a calendar with a complete copy: that copy was listed before the channel opened,
        and what changed in between was notified to nobody. A calendar without one gets its
        first copy from a full sync that lists it after its first channel opened
        (`ChannelManager.open_before_first_sync`): there is no gap to close, and when
        `channel` was read without a copy (`get`), the message is the channel's UPDATE alone
        (`_accept_uncopied`, committed by itself: `single_statement_writes`; no
        calendar row written: its first copy's switch moves its version), falling back to
        the path below if a copy committed meanwhile.
        """
        numbered = message_number <= MAX_STORED_MESSAGE_NUMBER
        record = _accept_statement(numbered=numbered)
        params: dict[str, Any] = {
            "accept_channel": channel.id,
            "accept_at": now,
            "accept_resource": resource_id,
        }
        if numbered:
            params["accept_number"] = message_number
        leases = LeaseStore(self.engine)
        if sync_message and channel.calendar_copied is False:
            # Most `sync` messages come while the calendar's first full sync runs: then the
            # channel's UPDATE is the whole transaction, one statement committed alone (no
            # BEGIN, no COMMIT, no calendar row): on SQLite while its one writer is busiest,
            # on PostgreSQL three round trips fewer for every new calendar.
            async with self._writes.begin() as conn:
                alone = _accept_uncopied(numbered=numbered)
                if (await commit_if_changed(conn, alone, params)).rowcount == 1:
                    return Acceptance(accepted=True)
            # A copy committed since the channel was read, or a repeated message: as below.
        async with self.engine.begin() as conn:
            if sync_message and await defer_write(conn, record, params):
                return await self._accept_sync_message(conn, leases, channel, now)
            if offer is not None and not sync_message and await defer_write(conn, record, params):
                return await self._accept_and_claim(conn, leases, channel, offer, now)
            result = await execute(conn, _accept_direct(numbered=numbered), params)
            if result.rowcount != 1:
                return Acceptance(accepted=False)
            if offer is not None and not sync_message:
                claimed = await leases.claim_notified(
                    conn, channel.calendar_id, offer, now, last=True
                )
                if claimed is not None:
                    return Acceptance(accepted=True, claimed=claimed)
            requested = await leases.request_sync(
                channel.calendar_id, now, conn=conn, last=True, if_copied=sync_message
            )
        return Acceptance(accepted=True, requested=requested)

    @staticmethod
    async def _accept_and_claim(
        conn: AsyncConnection,
        leases: LeaseStore,
        channel: ChannelRow,
        offer: ClaimOffer,
        now: datetime,
    ) -> Acceptance:
        """`accept_message` with an offer on SQLite, the channel's UPDATE deferred (`defer_write`)
        into the claim's hop: the message recorded, the calendar leased and the COMMIT in ONE
        hop to the connection's thread, which holds SQLite's one writer across one return to
        the event loop instead of two (in a push burst the writer was busy all the time and a
        notification waited ~26 ms for it). The claim runs only if the UPDATE changed the
        channel (SQLite's `changes()`), so a repeated message claims nothing; if neither
        changed a row, the transaction ended with the claim (`ended_unchanged`): not accepted.
        If only the UPDATE did (the calendar may not be claimed now), a sync is requested."""
        claimed = await leases.claim_notified(
            conn, channel.calendar_id, offer, now, last=True, after_one_change=True
        )
        if claimed is not None:
            return Acceptance(accepted=True, claimed=claimed)
        if await ended_unchanged(conn):
            return Acceptance(accepted=False)
        requested = await leases.request_sync(channel.calendar_id, now, conn=conn, last=True)
        return Acceptance(accepted=True, requested=requested)

    @staticmethod
    async def _accept_sync_message(
        conn: AsyncConnection, leases: LeaseStore, channel: ChannelRow, now: datetime
    ) -> Acceptance:
        """`accept_message` for Google's `sync` message on SQLite: the channel's UPDATE deferred
        (`defer_write`) into the request's hop, which runs only if that UPDATE changed the
        channel (`changes()`), so the message, the request and the COMMIT take one hop to the
        connection's thread instead of two (a renewed channel's first message, a new one's
        whose calendar got its copy first; one whose calendar has none takes one statement
        alone, `accept_message`). Nothing changed: not accepted."""
        requested = await leases.request_sync(
            channel.calendar_id, now, conn=conn, last=True, if_copied=True, after_one_change=True
        )
        if await ended_unchanged(conn):
            return Acceptance(accepted=False)
        return Acceptance(accepted=True, requested=requested)

    async def count_live(self, calendar_ids: Sequence[str]) -> dict[str, int]:
        """Live (opening or active) channels per calendar."""
        w = watch_channels.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(w.calendar_id, func.count())
                    .where(w.calendar_id.in_(list(calendar_ids)), w.state.in_(LIVE))
                    .group_by(w.calendar_id)
                )
            ).all()
        return {r[0]: int(r[1]) for r in rows}
