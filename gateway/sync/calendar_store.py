"""SQL of the synced calendars' rows: found or created for an integration, a failed attempt
recorded, and every row of an integration purged (with its records and blocks).

SQLAlchemy Core only, the same statements on SQLite and PostgreSQL. The copy itself (records,
blocks, generations) is `gateway.sync.copy_store`; leases and sync requests are
`gateway.sync.lease_store`; what availability reads is `gateway.sync.read_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    and_,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.bulk import chunks, defer_write
from gateway.db.direct import Direct, execute
from gateway.db.notify import bump_calendars, bump_integration
from gateway.db.schema import (
    busy_blocks,
    calendar_events,
    calendars,
)
from gateway.db.values import as_utc
from gateway.sync.model import Horizon

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_NEW = {
    name: bindparam(f"new_{name}", type_=calendars.c[name].type)
    for name in ("id", "integration_id", "tenant_id", "google_calendar_id", "time_zone")
}
_NEW_AT = bindparam("new_at", type_=calendars.c.created_at.type)
# A discovered calendar's row, for `defer_write` (built once: its SQL is compiled once).
_INSERT_NEW = insert(calendars).values(
    **_NEW, state="initial", attempts=0, created_at=_NEW_AT, updated_at=_NEW_AT
)
# The statements of every new calendar's discovery and of its syncs' reads, run by asyncpg
# itself on PostgreSQL (gateway.db.direct).
_INSERT_NEW_RETURNING = Direct(_INSERT_NEW.returning(calendars))
_BY_ID = Direct(select(calendars).where(calendars.c.id == bindparam("calendar_id")))
_OF_INTEGRATION = Direct(
    select(calendars)
    .where(calendars.c.integration_id == bindparam("of_integration"))
    .order_by(calendars.c.created_at, calendars.c.id)
)


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
    # `calendars_of` lists by creation, then id.
    created_at: datetime | None = None

    @property
    def horizon(self) -> Horizon | None:
        if self.horizon_start is None or self.horizon_end is None:
            return None
        return Horizon(self.horizon_start, self.horizon_end)

    def __repr__(self) -> str:
        # The calendar id is usually the owner's address: not for logs.
        return f"CalendarRow(id={self.id!r}, state={self.state!r})"


def calendar_row(row: RowMapping) -> CalendarRow:
    """A `calendars` row as the sync code uses it."""
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
        created_at=as_utc(row["created_at"]),
    )


def _listed_order(row: CalendarRow) -> tuple[datetime, str]:
    """`calendars_of`'s order."""
    return (row.created_at or _EPOCH, row.id)


class CalendarStore:
    """The statements on `calendars` rows themselves."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, calendar_id: str) -> CalendarRow | None:
        async with self.engine.connect() as conn:
            found = await execute(conn, _BY_ID, {"calendar_id": calendar_id})
            row = found.mappings().first()
        return calendar_row(row) if row is not None else None

    async def calendars_of(self, integration_id: str) -> list[CalendarRow]:
        async with self.engine.connect() as conn:
            return await self._calendars_of(conn, integration_id)

    @staticmethod
    async def _calendars_of(conn: AsyncConnection, integration_id: str) -> list[CalendarRow]:
        rows = (await execute(conn, _OF_INTEGRATION, {"of_integration": integration_id})).mappings()
        return [calendar_row(r) for r in rows]

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
        changed time zone is updated (it decides where all-day events fall), and the copy is
        then built again by the next sync, a full one."""
        found = await self.ensure_listed(
            new_id=new_id,
            integration_id=integration_id,
            tenant_id=tenant_id,
            google_calendar_id=google_calendar_id,
            time_zone=time_zone,
            now=now,
        )
        return next(r for r in found if r.google_calendar_id == google_calendar_id)

    async def ensure_listed(
        self,
        *,
        new_id: str,
        integration_id: str,
        tenant_id: str,
        google_calendar_id: str,
        time_zone: str,
        now: datetime,
    ) -> list[CalendarRow]:
        """`ensure_calendar`, answered with all of the integration's calendars as
        `calendars_of` lists them afterwards: discovery needs the list, and this is one read
        of it instead of two (the calendar's own, then the list's)."""

        new_params = {
            "new_id": new_id,
            "new_integration_id": integration_id,
            "new_tenant_id": tenant_id,
            "new_google_calendar_id": google_calendar_id,
            "new_time_zone": time_zone,
            "new_at": now,
        }

        async def attempt() -> list[CalendarRow]:
            async with self.engine.begin() as conn:
                listed = await self._calendars_of(conn, integration_id)
                row = next((r for r in listed if r.google_calendar_id == google_calendar_id), None)
                if row is None:
                    if await defer_write(conn, _INSERT_NEW, new_params):
                        # SQLite: the INSERT runs in the bump's hop below, which commits both:
                        # one hop holding the one writer, not two (~3 ms each during a burst of
                        # new calendars). Its row is what was inserted (a CalendarRow's fields
                        # are those values or NULL); a duplicate (IntegrityError) is raised by
                        # the bump.
                        new = CalendarRow(
                            id=new_id,
                            integration_id=integration_id,
                            tenant_id=tenant_id,
                            google_calendar_id=google_calendar_id,
                            time_zone=time_zone,
                            sync_token=None,
                            active_generation=None,
                            state="initial",
                            last_success_at=None,
                            last_attempt_at=None,
                            last_error=None,
                            horizon_start=None,
                            horizon_end=None,
                            created_at=now,
                        )
                    else:
                        # The new row as stored, without reading it again.
                        created = await execute(conn, _INSERT_NEW_RETURNING, new_params)
                        new = calendar_row(created.mappings().one())
                    # The last statement: on SQLite it commits with it.
                    await bump_integration(conn, integration_id, last=True)
                    # Created now: it sorts last (`calendars_of` orders by creation, then id).
                    return sorted([*listed, new], key=_listed_order)
                if row.time_zone != time_zone:
                    key = and_(
                        calendars.c.integration_id == integration_id,
                        calendars.c.google_calendar_id == google_calendar_id,
                    )
                    # Without its sync token the next sync is a full one, which builds the
                    # copy again in the new zone (an incremental one would compare the listing's
                    # zone with this new one and find nothing to rebuild).
                    await conn.execute(
                        update(calendars)
                        .where(key)
                        .values(time_zone=time_zone, sync_token=None, updated_at=now)
                    )
                    await bump_calendars(conn, [row.id])
                    listed = await self._calendars_of(conn, integration_id)
            return listed

        try:
            return await attempt()
        except IntegrityError:
            # Two first calls at once (a booking and a free/busy, two processes): the other
            # one created it; this one now finds it.
            return await attempt()

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
            await bump_calendars(conn, [calendar_id], blocks=False)

    async def purge_integration(self, integration_id: str) -> int:
        """Delete every calendar, record and block of the integration (idempotent); returns
        how many calendars and event records were deleted."""
        async with self.engine.begin() as conn:
            # Locked first (PostgreSQL): a sync writing a page meanwhile either commits before
            # (its records are deleted here) or finds the calendar gone and rolls back
            # (copy_store._still_there).
            ids = list(
                (
                    await conn.execute(
                        select(calendars.c.id)
                        .where(calendars.c.integration_id == integration_id)
                        .with_for_update()
                    )
                ).scalars()
            )
            # Told before the rows go: every cache drops them, and nothing reloads them.
            await bump_calendars(conn, ids)
            await bump_integration(conn, integration_id)
            purged = 0
            for chunk in chunks(ids):
                await conn.execute(delete(busy_blocks).where(busy_blocks.c.calendar_id.in_(chunk)))
                result = await conn.execute(
                    delete(calendar_events).where(calendar_events.c.calendar_id.in_(chunk))
                )
                purged += result.rowcount
            result = await conn.execute(
                delete(calendars).where(calendars.c.integration_id == integration_id)
            )
            return purged + result.rowcount
