"""Storage of wrapped data keys (DEKs): the one table the vault owns, and `SqlDekStore`.

The table is defined on a MetaData passed in, so the gateway's schema (and its Alembic
migrations) include it without the vault importing the gateway. `SqlDekStore` uses SQLAlchemy
Core only, so the same statements run on SQLite (aiosqlite) and PostgreSQL (asyncpg).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine


def data_keys_table(metadata: MetaData) -> Table:
    """`vault_data_keys`: one row per integration; the DEK only ever stored wrapped.

    Destroying an integration's key deletes its row (no soft delete): that is the crypto-shred.
    """
    return Table(
        "vault_data_keys",
        metadata,
        Column("dek_id", String(32), primary_key=True),  # 128 random bits, hex
        Column("tenant_id", String(64), nullable=False),
        Column("integration_id", String(64), nullable=False, unique=True),
        Column("kek_id", String(200), nullable=False),
        Column("kek_version", Integer, nullable=False, index=True),
        Column("wrapped", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("rewrapped_at", DateTime(timezone=True), nullable=True),
    )


@dataclass(frozen=True, slots=True)
class DekRow:
    """One `vault_data_keys` row. `wrapped` is the DEK under a KEK, never the DEK itself."""

    dek_id: str  # 32 hex chars
    tenant_id: str
    integration_id: str
    kek_id: str
    kek_version: int
    wrapped: bytes
    created_at: datetime
    rewrapped_at: datetime | None = None

    def __repr__(self) -> str:
        return (
            f"DekRow(dek_id={self.dek_id!r}, integration_id={self.integration_id!r}, "
            f"kek_id={self.kek_id!r}, kek_version={self.kek_version})"
        )


class KeyRef(NamedTuple):
    """What rewrapping needs of a row: its binding and its wrapped DEK. A NamedTuple without
    timestamps because rewrap builds 20,000 of these a second and dataclass construction and
    SQLite datetime parsing showed up in the profile."""

    dek_id: str
    tenant_id: str
    integration_id: str
    kek_id: str
    kek_version: int
    wrapped: bytes

    def __repr__(self) -> str:  # the wrapped bytes are noise in a log line
        return f"KeyRef(dek_id={self.dek_id!r}, kek_version={self.kek_version})"


class Rewrapped(NamedTuple):
    """A DEK newly wrapped, to be written only if the row is still at `old_kek_version`."""

    dek_id: str
    old_kek_version: int
    kek_id: str
    kek_version: int
    wrapped: bytes


_READBACK_CHUNK = 5_000


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class SqlDekStore:
    """The vault's data-key rows over an SQLAlchemy AsyncEngine (Core only, so SQLite and
    PostgreSQL behave the same). Every method is its own short transaction."""

    def __init__(self, engine: AsyncEngine, table: Table) -> None:
        self._engine = engine
        # `get` is one statement: on PostgreSQL in AUTOCOMMIT, so the driver sends no BEGIN
        # before it and no ROLLBACK after it (two of its three round trips; a sync loads a
        # key once per integration and process). SQLite opens no transaction for a read.
        self._reads = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )
        self._t = table
        t = table
        self._get = select(t).where(t.c.integration_id == bindparam("integration_id"))
        # The optimistic guard: a row destroyed or rewrapped by someone else since we read it
        # is left alone (and a later run picks it up if it still needs rewrapping).
        self._update = (
            update(t)
            .where(t.c.dek_id == bindparam("b_dek_id"))
            .where(t.c.kek_version == bindparam("b_old_version"))
            .values(
                kek_id=bindparam("b_kek_id"),
                kek_version=bindparam("b_kek_version"),
                wrapped=bindparam("b_wrapped"),
                rewrapped_at=bindparam("b_now"),
            )
        )

    @property
    def table(self) -> Table:
        """The `vault_data_keys` table this store uses."""
        return self._t

    @staticmethod
    def _row(row: Any) -> DekRow:
        return DekRow(
            dek_id=row.dek_id,
            tenant_id=row.tenant_id,
            integration_id=row.integration_id,
            kek_id=row.kek_id,
            kek_version=row.kek_version,
            wrapped=bytes(row.wrapped),
            created_at=_aware(row.created_at) or row.created_at,
            rewrapped_at=_aware(row.rewrapped_at),
        )

    async def get(self, integration_id: str) -> DekRow | None:
        """The integration's key row, or None."""
        async with self._reads.connect() as conn:
            result = await conn.execute(self._get, {"integration_id": integration_id})
            row = result.first()
        return None if row is None else self._row(row)

    async def insert(self, row: DekRow) -> DekRow:
        """Insert `row`, or return the row already there for its integration.

        Two processes creating the same integration's key at once both get the winner's row,
        so there is only ever one key per integration.
        """
        values = {
            "dek_id": row.dek_id,
            "tenant_id": row.tenant_id,
            "integration_id": row.integration_id,
            "kek_id": row.kek_id,
            "kek_version": row.kek_version,
            "wrapped": row.wrapped,
            "created_at": row.created_at,
            "rewrapped_at": row.rewrapped_at,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(self._t), values)
        except IntegrityError:
            existing = await self.get(row.integration_id)
            if existing is None:
                raise  # not the integration race (e.g. a dek_id collision): let it show
            return existing
        return row

    async def delete(self, tenant_id: str, integration_id: str) -> str | None:
        """Hard-delete the integration's key row; return its dek_id, or None if there was none."""
        t = self._t
        stmt = (
            delete(t)
            .where(t.c.integration_id == integration_id)
            .where(t.c.tenant_id == tenant_id)
            .returning(t.c.dek_id)
        )
        async with self._engine.begin() as conn:
            deleted = (await conn.execute(stmt)).scalar_one_or_none()
        return deleted

    async def count_by_kek_version(self) -> dict[int, int]:
        """How many DEKs are wrapped under each KEK version."""
        t = self._t
        stmt = select(t.c.kek_version, func.count()).group_by(t.c.kek_version)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {int(version): int(count) for version, count in rows}

    async def count_not_at(self, kek_version: int) -> int:
        """How many DEKs are wrapped under a KEK version other than `kek_version`."""
        t = self._t
        stmt = select(func.count()).select_from(t).where(t.c.kek_version != kek_version)
        async with self._engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def batch_not_at(
        self, kek_version: int, *, after_dek_id: str | None, limit: int
    ) -> list[KeyRef]:
        """Up to `limit` rows not wrapped under `kek_version`, in dek_id order after
        `after_dek_id` (keyset pagination: stable while rows change, no OFFSET scans)."""
        t = self._t
        stmt = select(
            t.c.dek_id, t.c.tenant_id, t.c.integration_id, t.c.kek_id, t.c.kek_version, t.c.wrapped
        ).where(t.c.kek_version != kek_version)
        if after_dek_id is not None:
            stmt = stmt.where(t.c.dek_id > after_dek_id)
        stmt = stmt.order_by(t.c.dek_id).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [KeyRef(a, b, c, d, e, bytes(f)) for a, b, c, d, e, f in rows]

    async def update_wrapped(self, updates: Sequence[Rewrapped], now: datetime) -> int:
        """Write a batch of rewrapped DEKs in one transaction; return how many were written.

        Each update applies only if the row still has its old kek_version. Counting comes from
        reading back the wrapped bytes (each freshly wrapped value is unique thanks to its
        random nonce) because asyncpg reports no row count for executemany.
        """
        if not updates:
            return 0
        t = self._t
        params = [
            {
                "b_dek_id": u.dek_id,
                "b_old_version": u.old_kek_version,
                "b_kek_id": u.kek_id,
                "b_kek_version": u.kek_version,
                "b_wrapped": u.wrapped,
                "b_now": now,
            }
            for u in updates
        ]
        expected = {u.dek_id: u.wrapped for u in updates}
        ids = list(expected)
        written = 0
        async with self._engine.begin() as conn:
            await conn.execute(self._update, params)
            # Read back in slices: SQLite caps bound parameters per statement (32,766).
            for start in range(0, len(ids), _READBACK_CHUNK):
                chunk = ids[start : start + _READBACK_CHUNK]
                check = select(t.c.dek_id, t.c.wrapped).where(t.c.dek_id.in_(chunk))
                for dek_id, wrapped in (await conn.execute(check)).all():
                    written += bytes(wrapped) == expected[dek_id]
        return written
