"""Every statement booking runs: the `bookings` table and the cross-process slot lock.

One row per (tenant, integration, Idempotency-Key). Its life:

    (none) --claim--> pending --created--> created --deleted--> deleted
                         |
                         +--forget--> (none)    Google certainly did not create the event

`pending` is written (and committed) BEFORE Google is asked, so a process that dies after
Google's success leaves a row saying "this event id may exist": the retry looks the event up
instead of booking blind. A row is forgotten only when Google certainly created nothing (the
slot was busy, Google refused the request).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import bookings
from gateway.db.values import as_utc

PENDING, CREATED, DELETED = "pending", "created", "deleted"
_LOCK_DOMAIN = b"calendar-gateway/booking-slot-lock/v1\x00"


@dataclass(frozen=True)
class BookingRow:
    tenant_id: str
    integration_id: str
    google_event_id: str
    google_calendar_id: str
    body_sha256: str
    state: str
    response: dict[str, Any] | None
    created_at: datetime

    def __repr__(self) -> str:
        # The calendar id is usually the owner's address: not for logs.
        return f"BookingRow(event={self.google_event_id!r}, state={self.state!r})"


def _row(row: RowMapping) -> BookingRow:
    created_at = as_utc(row["created_at"])
    assert created_at is not None
    return BookingRow(
        tenant_id=row["tenant_id"],
        integration_id=row["integration_id"],
        google_event_id=row["google_event_id"],
        google_calendar_id=row["google_calendar_id"],
        body_sha256=row["body_sha256"],
        state=row["state"],
        response=json.loads(row["response"]) if row["response"] else None,
        created_at=created_at,
    )


def _lock_id(integration_id: str) -> int:
    """A signed 64-bit advisory lock id for the integration (PostgreSQL's lock key type)."""
    digest = hashlib.sha256(_LOCK_DOMAIN + integration_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class BookingStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def _key(self, tenant_id: str, integration_id: str, key: str) -> Any:
        return and_(
            bookings.c.tenant_id == tenant_id,
            bookings.c.integration_id == integration_id,
            bookings.c.idempotency_key == key,
        )

    async def get(self, tenant_id: str, integration_id: str, key: str) -> BookingRow | None:
        async with self.engine.connect() as conn:
            query = select(bookings).where(self._key(tenant_id, integration_id, key))
            row = (await conn.execute(query)).mappings().first()
        return _row(row) if row is not None else None

    async def claim(
        self,
        *,
        tenant_id: str,
        integration_id: str,
        key: str,
        google_event_id: str,
        google_calendar_id: str,
        body_sha256: str,
        now: datetime,
    ) -> tuple[BookingRow, bool]:
        """The row for this key: (new pending row, True), or (the existing row, False) when
        the key was used before (by this request's earlier attempt, or concurrently)."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(bookings).values(
                        tenant_id=tenant_id,
                        integration_id=integration_id,
                        idempotency_key=key,
                        google_event_id=google_event_id,
                        google_calendar_id=google_calendar_id,
                        body_sha256=body_sha256,
                        state=PENDING,
                        response=None,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            existing = await self.get(tenant_id, integration_id, key)
            if existing is None:  # forgotten in between: claim again
                return await self.claim(
                    tenant_id=tenant_id,
                    integration_id=integration_id,
                    key=key,
                    google_event_id=google_event_id,
                    google_calendar_id=google_calendar_id,
                    body_sha256=body_sha256,
                    now=now,
                )
            return existing, False
        found = await self.get(tenant_id, integration_id, key)
        assert found is not None
        return found, True

    async def mark_created(
        self, tenant_id: str, integration_id: str, key: str, response: dict[str, Any], now: datetime
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(bookings)
                .where(self._key(tenant_id, integration_id, key))
                .values(state=CREATED, response=json.dumps(response), updated_at=now)
            )

    async def forget(self, tenant_id: str, integration_id: str, key: str) -> None:
        """Drop a pending row whose event Google certainly did not create."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(bookings).where(
                    self._key(tenant_id, integration_id, key), bookings.c.state == PENDING
                )
            )

    async def by_event(
        self, tenant_id: str, integration_id: str, google_event_id: str
    ) -> BookingRow | None:
        """The booking that made this event (the proof the gateway created it), if any."""
        async with self.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(bookings).where(
                            bookings.c.integration_id == integration_id,
                            bookings.c.google_event_id == google_event_id,
                            bookings.c.tenant_id == tenant_id,
                        )
                    )
                )
                .mappings()
                .first()
            )
        return _row(row) if row is not None else None

    async def mark_event(
        self, integration_id: str, google_event_id: str, state: str, now: datetime
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(bookings)
                .where(
                    bookings.c.integration_id == integration_id,
                    bookings.c.google_event_id == google_event_id,
                )
                .values(state=state, updated_at=now)
            )

    async def purge_integration(self, integration_id: str) -> int:
        """Disconnect hook: every booking row of the integration (idempotent)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(bookings).where(bookings.c.integration_id == integration_id)
            )
        return int(result.rowcount or 0)

    @asynccontextmanager
    async def slot_lock(self, integration_id: str) -> AsyncIterator[None]:
        """Held while one booking of the integration checks its slot and books it, across
        processes: a transaction-scoped advisory lock on PostgreSQL. SQLite serves one process,
        whose in-process lock (the service's) is enough."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        async with self.engine.connect() as conn, conn.begin():
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": _lock_id(integration_id)}
            )
            yield
