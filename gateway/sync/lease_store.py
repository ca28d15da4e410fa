"""SQL of sync scheduling (gateway.sync.scheduler): sync requests, claims of due calendars
and the leases that keep one process per calendar (and per Google account) at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    Update,
    and_,
    bindparam,
    case,
    exists,
    func,
    not_,
    null,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import ReturningUpdate
from sqlalchemy.sql.elements import ColumnElement

from gateway.db.bulk import chunks
from gateway.db.direct import Direct, any_of, execute, none_of
from gateway.db.engine import single_statement_reads
from gateway.db.notify import CALENDAR_CHANGE, bump_calendars, calendar_bump, publish_calendars
from gateway.db.schema import (
    calendars,
    integrations,
    watch_channels,
)
from gateway.db.transactions import commit_if_changed
from gateway.sync.calendar_store import CalendarRow, calendar_row


@dataclass(frozen=True)
class LeaseRelease:
    """How a successful sync hands its calendar back: the lease `owner` held it under and the
    next poll to plan (`poll_interval_s`, or `safety_poll_interval_s` with a live push
    channel). The sync's last transaction applies it (`LEASE_RELEASE_VALUES`), so storing the
    result and releasing the calendar take one write instead of two."""

    owner: str
    poll_interval_s: float
    safety_poll_interval_s: float
    # Called right after the transaction that released the lease committed (the scheduler's
    # heartbeat then knows the lease is gone because the sync is done, not lost).
    on_released: Callable[[], None] | None = field(default=None, compare=False)


# The release's values, built once: a sync's last UPDATE binds them per calendar
# (`lease_release_params`). Building this CASE with its EXISTS anew for every sync was ~3% of
# an ingest's CPU; these names are no column's, so SQLAlchemy binds them and sets nothing else.
_channel = watch_channels.c
_RELEASE_OWNER = bindparam("release_owner", type_=calendars.c.lease_owner.type)
_LIVE_CHANNEL = exists().where(
    _channel.calendar_id == bindparam("release_calendar", type_=_channel.calendar_id.type),
    _channel.state == "active",
    _channel.expires_at > bindparam("release_now", type_=_channel.expires_at.type),
)
_NEXT_POLL = case(
    (_LIVE_CHANNEL, bindparam("release_safety_poll_at", type_=calendars.c.next_poll_at.type)),
    else_=bindparam("release_poll_at", type_=calendars.c.next_poll_at.type),
)
_HELD = calendars.c.lease_owner == _RELEASE_OWNER
LEASE_RELEASE_VALUES: Mapping[str, Any] = MappingProxyType(
    {
        "lease_owner": case((_HELD, null()), else_=calendars.c.lease_owner),
        "lease_until": case((_HELD, null()), else_=calendars.c.lease_until),
        "next_poll_at": case((_HELD, _NEXT_POLL), else_=calendars.c.next_poll_at),
    }
)
"""The `calendars` values that release the lease as `LeaseStore.release_synced` does, for
the UPDATE of the transaction that stores a sync's result (executed with
`lease_release_params`). Only if the release's owner still holds the lease (else the row
keeps its lease: it ran out and another process holds it now); the UPDATE returns
`lease_owner`, None when released. Whether a push channel is live is asked inside the UPDATE:
no read before it."""


def lease_release_params(
    calendar_id: str, release: LeaseRelease | None, now: datetime
) -> dict[str, Any]:
    """The parameters of `LEASE_RELEASE_VALUES` for one calendar's release (none without one:
    the statement then releases nothing)."""
    if release is None:
        return {}
    return {
        "release_owner": release.owner,
        "release_calendar": calendar_id,
        "release_now": now,
        "release_safety_poll_at": now + timedelta(seconds=release.safety_poll_interval_s),
        "release_poll_at": now + timedelta(seconds=release.poll_interval_s),
    }


@dataclass(frozen=True)
class ClaimOffer:
    """A free sync slot of a scheduler, offered to the push webhook: a notification's
    transaction may lease its calendar to `owner` until `lease_until` right away (when the
    calendar may be claimed at all, as `LeaseStore.claim_due` would), instead of requesting a
    sync for the scheduler's next claim. `busy` are the integrations the scheduler syncs now."""

    owner: str
    lease_until: datetime
    busy: frozenset[str] = frozenset()


# The claims' statements, built once (their CASEs and EXISTS were rebuilt for every claim and
# every notification); values are bound per call (`_claim_params`). Names are no column's.
_c = calendars.c
_NOW = bindparam("claim_at", type_=_c.lease_until.type)
_NOT_LEASED = or_(_c.lease_until.is_(None), _c.lease_until < _NOW)
_other = calendars.alias("other")
# Beyond being due: no backoff pending, no live lease, and no other calendar of the same
# Google account leased (one sync per account at a time, across processes).
_CLAIMABLE = and_(
    or_(_c.backoff_until.is_(None), _c.backoff_until <= _NOW),
    _NOT_LEASED,
    not_(
        exists().where(
            _other.c.integration_id == _c.integration_id,
            _other.c.id != _c.id,
            _other.c.lease_until >= _NOW,
        )
    ),
)
# Integrations the claiming scheduler syncs already (an empty list excludes none).
_NOT_BUSY = _c.integration_id.not_in(bindparam("claim_busy", expanding=True))
# The same on PostgreSQL, as an array: no IN list, so the statements that hold it run as
# `Direct` statements (gateway.db.direct), and their SQL is the same for any number of ids.
_NOT_BUSY_ARRAY = none_of(_c.integration_id, "claim_busy")
# The request is consumed, so if this process dies mid-sync the calendar must come due again
# by itself: at the end of the lease (a finished sync's release sets the real next poll).
_LEASE_UNTIL = bindparam("claim_lease_until", type_=_c.lease_until.type)
_CLAIM_VALUES: Mapping[str, Any] = MappingProxyType(
    {
        "lease_owner": bindparam("claim_owner", type_=_c.lease_owner.type),
        "lease_until": _LEASE_UNTIL,
        "sync_requested_at": None,
        "next_poll_at": _LEASE_UNTIL,
        **calendar_bump(blocks=False),
    }
)
_ACTIVE = exists().where(integrations.c.id == _c.integration_id, integrations.c.status == "active")


def _claim(where: ColumnElement[bool], *also: ColumnElement[bool]) -> ReturningUpdate[Any]:
    """A claim of the calendars `where` selects, guarded by `also`; returns the rows claimed."""
    return update(calendars).where(where, *also).values(**_CLAIM_VALUES).returning(*_c)


# One calendar, for a notification's transaction (`claim_notified`); PostgreSQL's with the
# busy integrations as an array.
_CLAIM_CALENDAR = _c.id == bindparam("claim_calendar", type_=_c.id.type)
_CLAIM_ONE = _claim(_CLAIM_CALENDAR, _ACTIVE, _CLAIMABLE, _NOT_BUSY)
_CLAIM_ONE_POSTGRES = Direct(_claim(_CLAIM_CALENDAR, _ACTIVE, _CLAIMABLE, _NOT_BUSY_ARRAY))
# `_CLAIM_ONE` only if the transaction's previous statement changed one row: SQLite's
# `changes()` (the notification's channel UPDATE, run in the same hop: `claim_notified`).
_CLAIM_ONE_AFTER_ONE_CHANGE = _CLAIM_ONE.where(func.changes() == 1)
# Why a calendar is due, each reason read through an index of its own (schema: the two partial
# ones, and ix_calendars_next_poll_at), so a scan reads the due rows, not every calendar. As one
# WHERE with ORs, both databases read the whole table: on SQLite 2 ms of CPU per scan at 1,000
# calendars and 12 ms at 10,000 (now 0.8-0.9 ms at either, SQLAlchemy's own cost), and the
# scheduler scans every tick and after every finished sync. The due ids come first in FROM: as
# `id IN (...)`, SQLite still walked every active integration to test it.
_DUE_IDS = union(
    select(_c.id.label("id")).where(_c.sync_requested_at.is_not(None)),
    select(_c.id).where(_c.next_poll_at.is_(None)),
    select(_c.id).where(_c.next_poll_at <= _NOW),
    select(_c.id).where(_c.active_generation.is_(None)),
).subquery("due")


# Due calendars (`claim_due`): requests first, then the most overdue; more than the scheduler
# takes (some may belong to one integration).
def _due(not_busy: ColumnElement[bool]) -> Select[str, str]:
    return (
        select(_c.id, _c.integration_id)
        .select_from(
            _DUE_IDS.join(calendars, _c.id == _DUE_IDS.c.id).join(
                integrations, integrations.c.id == _c.integration_id
            )
        )
        .where(integrations.c.status == "active", _CLAIMABLE, not_busy)
        .order_by(
            _c.sync_requested_at.is_(None), _c.next_poll_at.is_not(None), _c.next_poll_at, _c.id
        )
        .limit(bindparam("claim_candidates", type_=Integer()))
    )


_DUE = _due(_NOT_BUSY)
# PostgreSQL's: its claimers pass each other by the rows' locks.
_DUE_LOCKED = Direct(_due(_NOT_BUSY_ARRAY).with_for_update(skip_locked=True, of=calendars))
# The claim of the chosen ones: the lease must still be free (on SQLite another process may
# have claimed one since the SELECT); returns the rows it claimed.
_CLAIM_CHOSEN = _claim(_c.id.in_(bindparam("claim_ids", expanding=True)), _NOT_LEASED)
_CLAIM_CHOSEN_POSTGRES = Direct(_claim(any_of(_c.id, "claim_ids"), _NOT_LEASED))


def _claim_params(
    owner: str, lease_until: datetime, now: datetime, busy: Iterable[str] = ()
) -> dict[str, Any]:
    return {
        "claim_owner": owner,
        "claim_lease_until": lease_until,
        "claim_at": now,
        "claim_busy": list(busy),
    }


# Discovery's candidates and claim (`LeaseStore.claim_discovery`), built once.
_i = integrations.c
_DISCOVERY_NOW = bindparam("discovery_now", type_=_i.discovery_until.type)
_UNDISCOVERED = and_(
    _i.status == "active",
    or_(_i.discovery_until.is_(None), _i.discovery_until <= _DISCOVERY_NOW),
    not_(exists().where(calendars.c.integration_id == _i.id)),
)
_DISCOVERABLE = (
    select(_i.id)
    .where(_UNDISCOVERED)
    .order_by(_i.created_at, _i.id)
    .limit(bindparam("discovery_limit", type_=Integer))
)
_CLAIM_DISCOVERY = (
    update(integrations)
    .where(_i.id.in_(bindparam("discovery_ids", expanding=True)), _UNDISCOVERED)
    .values(discovery_until=bindparam("discovery_claim", type_=_i.discovery_until.type))
    .returning(_i.id)
)


@functools.cache
def _request_statement(*, if_copied: bool, after_one_change: bool) -> Direct:
    """`LeaseStore.request_sync`'s UPDATE, built once per shape (run by asyncpg itself on
    PostgreSQL: gateway.db.direct)."""
    at = bindparam("request_at", type_=calendars.c.sync_requested_at.type)
    requested: ColumnElement[Any] = func.coalesce(calendars.c.sync_requested_at, at)
    if if_copied:
        requested = case(
            (calendars.c.active_generation.is_(None), calendars.c.sync_requested_at),
            else_=requested,
        )
    statement = (
        update(calendars)
        .where(calendars.c.id == bindparam("request_calendar", type_=calendars.c.id.type))
        .values(sync_requested_at=requested, **calendar_bump(blocks=False))
        .returning(*CALENDAR_CHANGE, calendars.c.active_generation)
    )
    if after_one_change:
        statement = statement.where(func.changes() == 1)
    return Direct(statement)


class LeaseStore:
    """The statements that request, claim, extend and release calendar syncs."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def request_sync(
        self,
        calendar_id: str,
        now: datetime,
        *,
        conn: AsyncConnection | None = None,
        last: bool = False,
        if_copied: bool = False,
        after_one_change: bool = False,
    ) -> bool:
        """Ask for one more sync of the calendar (a push notification, a booking). Requests
        coalesce: the earliest unclaimed one is kept, and the scheduler clears it when it
        claims the calendar, so a request arriving during a sync causes one sync after it.
        Within the caller's transaction when `conn` is given (the webhook records the message
        and the request together); `last` when it is that transaction's last statement
        (`commit_if_changed`). `if_copied`: only if the calendar has a complete copy (its
        version is bumped either way). `after_one_change` (SQLite only): only if the statement
        before it in the transaction changed exactly one row (`changes()`, as for
        `claim_notified`). False if there is no such calendar, or no request was made."""
        statement = _request_statement(if_copied=if_copied, after_one_change=after_one_change)
        params = {"request_calendar": calendar_id, "request_at": now}
        if conn is not None:
            changed = (await commit_if_changed(conn, statement, params, last=last)).all()
            await publish_calendars(conn, [r[: len(CALENDAR_CHANGE)] for r in changed])
        else:
            async with self.engine.begin() as own:
                changed = (await commit_if_changed(own, statement, params)).all()
                await publish_calendars(own, [r[: len(CALENDAR_CHANGE)] for r in changed])
        return len(changed) == 1 and not (if_copied and changed[0].active_generation is None)

    async def claim_notified(
        self,
        conn: AsyncConnection,
        calendar_id: str,
        offer: ClaimOffer,
        now: datetime,
        *,
        last: bool = False,
        after_one_change: bool = False,
    ) -> CalendarRow | None:
        """Within the caller's transaction (a push notification's): lease the calendar to the
        offer's owner if it may be claimed now (active integration, no backoff, no live lease,
        no other calendar of its account leased here or elsewhere); its sync then starts at
        once, with no request to record and no claim to wait for. `last`: a claim is the
        transaction's last statement (`commit_if_changed`). None (nothing written) when it may
        not: the caller requests a sync instead. `after_one_change` (SQLite only): only if the
        statement before it in the transaction changed exactly one row (`changes()`)."""
        params = _claim_params(offer.owner, offer.lease_until, now, offer.busy)
        params["claim_calendar"] = calendar_id
        statement: Direct | Update = _CLAIM_ONE_AFTER_ONE_CHANGE if after_one_change else _CLAIM_ONE
        if self.engine.dialect.name == "postgresql":
            statement = _CLAIM_ONE_POSTGRES
        claimed = await commit_if_changed(conn, statement, params, last=last)
        row = claimed.mappings().first()
        if row is None:
            return None
        await publish_calendars(conn, [(row["id"], row["integration_id"], row["version"])])
        return calendar_row(row)

    async def claim_discovery(
        self, now: datetime, *, until: datetime, limit: int, skip: Iterable[str] = ()
    ) -> list[str]:
        """Claim up to `limit` active integrations that have no calendar row yet (just
        connected) for discovering their calendars, until `until`: another process looking
        meanwhile does not get them, so one process asks Google, not each (migration 0017).
        Passed over: those under another claim or a failed discovery's backoff
        (`defer_discovery`), and `skip` (being discovered by this process now).

        A read finds candidates (so a pass with nothing new writes nothing: on SQLite it would
        take the one writer every tick); one guarded UPDATE claims them. On PostgreSQL two
        processes that read the same candidates both try: the second's UPDATE waits for the
        first's row locks, finds the claim and changes nothing."""
        if limit < 1:
            return []
        passed = set(skip)
        params = {"discovery_now": now, "discovery_limit": limit + len(passed)}
        # Every tick of every process: one statement, so no BEGIN and ROLLBACK around it.
        async with single_statement_reads(self.engine).connect() as conn:
            found = list((await conn.execute(_DISCOVERABLE, params)).scalars())
        wanted = [i for i in found if i not in passed][:limit]
        if not wanted:
            return []
        async with self.engine.begin() as conn:
            claimed = await commit_if_changed(
                conn,
                _CLAIM_DISCOVERY,
                {"discovery_now": now, "discovery_claim": until, "discovery_ids": wanted},
            )
            taken = set(claimed.scalars())
        return [i for i in wanted if i in taken]

    async def defer_discovery(self, integration_id: str, until: datetime) -> None:
        """No process discovers the integration's calendars before `until` (a failed
        discovery's backoff, or a calendar list without a primary: look again later)."""
        async with self.engine.begin() as conn:
            await commit_if_changed(
                conn,
                update(integrations)
                .where(integrations.c.id == integration_id)
                .values(discovery_until=until),
            )

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
        params = _claim_params(owner, lease_until, now, busy_integrations)
        postgres = self.engine.dialect.name == "postgresql"
        query = _DUE_LOCKED if postgres else _DUE
        claim = _CLAIM_CHOSEN_POSTGRES if postgres else _CLAIM_CHOSEN
        async with self.engine.begin() as conn:
            chosen: list[str] = []
            seen: set[str] = set()
            candidates = await execute(conn, query, {**params, "claim_candidates": limit * 2})
            for calendar_id, integration_id in candidates.all():
                if integration_id not in seen and len(chosen) < limit:
                    seen.add(integration_id)
                    chosen.append(calendar_id)
            rows: list[RowMapping] = []
            parts = list(chunks(chosen))
            for n, chunk in enumerate(parts):
                # One guarded UPDATE for all of them; the last is the transaction's last
                # statement.
                done = await commit_if_changed(
                    conn,
                    claim,
                    {**params, "claim_ids": list(chunk)},
                    last=n == len(parts) - 1,
                )
                rows.extend(done.mappings().all())
            await publish_calendars(
                conn, [(r["id"], r["integration_id"], r["version"]) for r in rows]
            )
        order = {calendar_id: n for n, calendar_id in enumerate(chosen)}
        rows.sort(key=lambda r: order[r["id"]])
        return [calendar_row(r) for r in rows]

    def _held(self, calendar_id: str, owner: str) -> ColumnElement[bool]:
        return and_(calendars.c.id == calendar_id, calendars.c.lease_owner == owner)

    async def extend_lease(self, calendar_id: str, owner: str, lease_until: datetime) -> bool:
        """Push the lease on; False if `owner` no longer holds it (it ran out and another
        process claimed the calendar)."""
        async with self.engine.begin() as conn:
            result = await commit_if_changed(
                conn,
                update(calendars)
                .where(self._held(calendar_id, owner))
                .values(lease_until=lease_until),
            )
        return bool(result.rowcount == 1)

    async def lease_owner(self, calendar_id: str) -> str | None:
        """Who holds the calendar's lease now (None: nobody, or no such calendar)."""
        async with self.engine.connect() as conn:
            return await conn.scalar(
                select(calendars.c.lease_owner).where(calendars.c.id == calendar_id)
            )

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
        live push channel, the slow safety poll with one (as a sync's last transaction does
        with `LeaseRelease`). False if the lease was lost."""
        release = LeaseRelease(owner, poll_interval_s, safety_poll_interval_s)
        async with self.engine.begin() as conn:
            changed = await commit_if_changed(
                conn,
                update(calendars)
                .where(self._held(calendar_id, owner))
                # The sync no longer counts as pending (gateway.sync.read_store): a new version.
                .values(**LEASE_RELEASE_VALUES, **calendar_bump(blocks=False))
                .returning(*CALENDAR_CHANGE),
                lease_release_params(calendar_id, release, now),
            )
            rows = changed.all()
            await publish_calendars(conn, rows)
        return len(rows) == 1

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
            await bump_calendars(conn, [calendar_id], blocks=False)
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
            if result.rowcount == 1:  # pending or not, freshness changed
                await bump_calendars(conn, [calendar_id], blocks=False)
        return bool(result.rowcount == 1)
