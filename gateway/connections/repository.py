"""Database access for integrations and connect sessions (SQLAlchemy Core, both backends).

Every read that serves an API caller is scoped by tenant: another tenant's integration is simply
not found. Token columns hold vault-sealed blobs only; this module never sees plaintext tokens.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, RowMapping, bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.clock import utc_now
from gateway.connections.events import IntegrationAnnouncer, IntegrationChange
from gateway.connections.model import Integration, Status
from gateway.db.direct import Direct, execute
from gateway.db.engine import single_statement_reads
from gateway.db.notify import bump_integration
from gateway.db.schema import connect_sessions, integrations
from gateway.db.values import as_utc


def row_to_integration(row: RowMapping) -> Integration:
    created_at = as_utc(row["created_at"])
    updated_at = as_utc(row["updated_at"])
    assert created_at is not None and updated_at is not None
    return Integration(
        id=row["id"],
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        status=Status(row["status"]),
        google_sub=row["google_sub"],
        google_email=row["google_email"],
        granted_scopes=frozenset(row["granted_scopes"].split()),
        created_at=created_at,
        updated_at=updated_at,
        last_refresh_at=as_utc(row["last_refresh_at"]),
        access_token_expires_at=as_utc(row["access_token_expires_at"]),
        reauth_reason=row["reauth_reason"],
        disconnect_requested_at=as_utc(row["disconnect_requested_at"]),
        disconnect_step=row["disconnect_step"],
        owner_tag=row["owner_tag"],
    )


def row_to_session(row: RowMapping) -> ConnectSession:
    created_at, expires_at = as_utc(row["created_at"]), as_utc(row["expires_at"])
    assert created_at is not None and expires_at is not None
    return ConnectSession(
        state_sha256=row["state_sha256"],
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        return_url=row["return_url"],
        login_hint=row["login_hint"],
        code_verifier=row["code_verifier"],
        created_at=created_at,
        expires_at=expires_at,
        app_state=row["app_state"],
    )


@dataclass(frozen=True)
class SealedTokens:
    """An integration's token blobs as stored (sealed by the vault)."""

    refresh_token: bytes | None = field(repr=False)
    access_token: bytes | None = field(repr=False)
    access_token_expires_at: datetime | None


def _values(integration: Integration, tokens: SealedTokens) -> dict[str, Any]:
    """The integrations row of a new integration."""
    return {
        "id": integration.id,
        "tenant_id": integration.tenant_id,
        "user_id": integration.user_id,
        "status": integration.status.value,
        "google_sub": integration.google_sub,
        "google_email": integration.google_email,
        "granted_scopes": " ".join(sorted(integration.granted_scopes)),
        "owner_tag": integration.owner_tag,
        "refresh_token": tokens.refresh_token,
        "access_token": tokens.access_token,
        "access_token_expires_at": tokens.access_token_expires_at,
        "created_at": integration.created_at,
        "updated_at": integration.updated_at,
        "last_refresh_at": integration.last_refresh_at,
        "disconnect_step": 0,
    }


@dataclass(frozen=True)
class ConnectSession:
    """A pending connection: created by the agent's backend, completed by the user's browser."""

    state_sha256: str
    tenant_id: str
    user_id: str
    return_url: str
    login_hint: str | None
    code_verifier: str = field(repr=False)
    created_at: datetime
    expires_at: datetime
    # Returned to the caller on the final redirect; never logged (it may bind the browser).
    app_state: str | None = field(default=None, repr=False)


# Built once: every request naming an integration runs it (see gateway.apikeys._BY_KEY_ID).
_BY_TENANT_AND_ID = Direct(
    select(integrations).where(
        integrations.c.id == bindparam("integration_id"),
        integrations.c.tenant_id == bindparam("tenant_id"),
    )
)

# By id alone (background jobs): read by every sync and every Google call it makes; on
# PostgreSQL by asyncpg itself (gateway.db.direct).
_BY_ID_QUERY = select(integrations).where(integrations.c.id == bindparam("integration_id"))
_BY_ID = Direct(_BY_ID_QUERY)
_BY_ID_LOCKED = Direct(_BY_ID_QUERY.with_for_update())

_BY_TENANT_AND_IDS = select(integrations).where(
    integrations.c.tenant_id == bindparam("tenant_id"),
    integrations.c.id.in_(bindparam("integration_ids", expanding=True)),
)


class IntegrationRepository:
    """Integrations and connect sessions in the database. Status changes are announced through
    `announcer` in the transaction that makes them (events.py)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        announcer: IntegrationAnnouncer,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.engine = engine
        self._reads = single_statement_reads(engine)
        self._announcer = announcer
        self._clock = clock

    async def _first(
        self,
        query: Executable | Direct,
        conn: AsyncConnection | None = None,
        params: dict[str, Any] | None = None,
    ) -> RowMapping | None:
        """The first row of a query: inside the caller's transaction when `conn` is given (a
        locked read must be), else on a connection of its own."""
        if conn is not None:
            return (await execute(conn, query, params)).mappings().first()
        async with self._reads.connect() as own:
            return (await execute(own, query, params)).mappings().first()

    # -- integrations ------------------------------------------------------------------------

    async def insert(self, integration: Integration, tokens: SealedTokens) -> None:
        await self.insert_many([(integration, tokens)])

    async def insert_many(self, items: list[tuple[Integration, SealedTokens]]) -> None:
        """Insert new integrations in one transaction (one executemany: bulk imports and the
        benchmarks' set-up)."""
        if not items:
            return
        async with self.engine.begin() as conn:
            await conn.execute(integrations.insert(), [_values(i, t) for i, t in items])
            # Announced in the same transaction (outbox); a bulk import of a tenant without
            # subscribers costs one query.
            connected = IntegrationChange.CONNECTED
            tenants = {i.tenant_id for i, _ in items}
            wanted = {t for t in tenants if await self._announcer.wanted(conn, t, connected)}
            for integration, _ in items:
                if integration.status is Status.ACTIVE and integration.tenant_id in wanted:
                    await self._announcer.announce(
                        conn, connected, integration.id, now=integration.created_at
                    )

    async def get(self, tenant_id: str, integration_id: str) -> Integration | None:
        """The tenant's integration, or None (also for another tenant's)."""
        async with self.engine.connect() as conn:
            found = await execute(
                conn, _BY_TENANT_AND_ID, {"integration_id": integration_id, "tenant_id": tenant_id}
            )
            row = found.mappings().first()
        return row_to_integration(row) if row is not None else None

    async def get_many(self, tenant_id: str, integration_ids: list[str]) -> dict[str, Integration]:
        """The tenant's integrations among `integration_ids`, by id, in one statement (a batch
        of 50 is one query, not 50); other tenants' and unknown ids are absent."""
        if not integration_ids:
            return {}
        async with self.engine.connect() as conn:
            found = await conn.execute(
                _BY_TENANT_AND_IDS, {"tenant_id": tenant_id, "integration_ids": integration_ids}
            )
            rows = found.mappings().all()
        return {row["id"]: row_to_integration(row) for row in rows}

    async def get_by_id(self, integration_id: str) -> Integration | None:
        """Internal lookup without a tenant (background jobs)."""
        row = await self._first(_BY_ID, params={"integration_id": integration_id})
        return row_to_integration(row) if row is not None else None

    async def list_for_user(self, tenant_id: str, user_id: str | None) -> list[Integration]:
        query = select(integrations).where(integrations.c.tenant_id == tenant_id)
        if user_id is not None:
            query = query.where(integrations.c.user_id == user_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(integrations.c.created_at))).mappings().all()
        return [row_to_integration(r) for r in rows]

    async def find_reconnectable(
        self, tenant_id: str, user_id: str, google_sub: str
    ) -> Integration | None:
        """The same person's earlier, not disconnected integration (a reconnect reuses it)."""
        row = await self._first(
            select(integrations)
            .where(
                integrations.c.tenant_id == tenant_id,
                integrations.c.user_id == user_id,
                integrations.c.google_sub == google_sub,
                integrations.c.status.in_([Status.ACTIVE.value, Status.NEEDS_REAUTH.value]),
            )
            .order_by(integrations.c.created_at.desc())
        )
        return row_to_integration(row) if row is not None else None

    async def sealed_tokens(
        self, integration_id: str, conn: AsyncConnection | None = None
    ) -> SealedTokens | None:
        query = select(
            integrations.c.refresh_token,
            integrations.c.access_token,
            integrations.c.access_token_expires_at,
        ).where(integrations.c.id == integration_id)
        row = await self._first(query, conn)
        if row is None:
            return None
        return SealedTokens(
            row["refresh_token"], row["access_token"], as_utc(row["access_token_expires_at"])
        )

    async def set_status(
        self,
        integration_id: str,
        status: Status,
        *,
        reason: str | None = None,
        only_from: tuple[Status, ...] | None = None,
    ) -> bool:
        """Move an integration to `status`; with `only_from`, only from those states.
        Returns whether a row changed (so concurrent transitions cannot both win)."""
        stmt = update(integrations).where(integrations.c.id == integration_id)
        if only_from is not None:
            stmt = stmt.where(integrations.c.status.in_([s.value for s in only_from]))
        async with self.engine.begin() as conn:
            result = await conn.execute(
                stmt.values(status=status.value, reauth_reason=reason, updated_at=self._clock())
            )
            if result.rowcount:
                await bump_integration(conn, integration_id)
        return bool(result.rowcount)

    # -- connect sessions --------------------------------------------------------------------

    async def insert_session(self, session: ConnectSession) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                connect_sessions.insert().values(
                    state_sha256=session.state_sha256,
                    tenant_id=session.tenant_id,
                    user_id=session.user_id,
                    return_url=session.return_url,
                    login_hint=session.login_hint,
                    code_verifier=session.code_verifier,
                    created_at=session.created_at,
                    expires_at=session.expires_at,
                    app_state=session.app_state,
                )
            )

    async def consume_session(self, state_sha256: str) -> ConnectSession | None:
        """Mark the session used and return it, exactly once: a replayed state gets None.

        The PKCE verifier, the login hint (an email) and the caller's app_state are wiped in the
        same transaction: they are needed once, right now, and a disconnect must leave no email
        behind (a replayed state gets no app_state back).
        Expiry is the caller's check (it answers `expired_session`, not `invalid_state`).
        """
        async with self.engine.begin() as conn:
            row = await self._first(
                select(connect_sessions)
                .where(
                    connect_sessions.c.state_sha256 == state_sha256,
                    connect_sessions.c.consumed_at.is_(None),
                )
                .with_for_update(),
                conn,
            )
            if row is None:
                return None
            result = await conn.execute(
                update(connect_sessions)
                .where(
                    connect_sessions.c.state_sha256 == state_sha256,
                    connect_sessions.c.consumed_at.is_(None),
                )
                .values(
                    consumed_at=self._clock(), code_verifier="", login_hint=None, app_state=None
                )
            )
            if result.rowcount != 1:
                return None  # another request consumed it between our read and write
        return row_to_session(row)

    # -- token refresh (tokens.py) -----------------------------------------------------------
    # Used by gateway.connections.tokens.TokenManager. Every method takes an optional `conn` so
    # the refresh can run inside one transaction that holds the row lock (PostgreSQL).

    async def read_for_refresh(
        self, integration_id: str, conn: AsyncConnection | None = None, *, lock: bool = False
    ) -> tuple[Integration, SealedTokens] | None:
        """The integration and its sealed tokens in one read.

        With `lock`, the row is read `FOR UPDATE`: on PostgreSQL the caller's transaction then
        holds the row until it ends, and a concurrent locker waits and afterwards sees the
        committed row (READ COMMITTED re-reads it). SQLite has no row locks and ignores it.
        """
        query = _BY_ID_LOCKED if lock else _BY_ID
        row = await self._first(query, conn, {"integration_id": integration_id})
        if row is None:
            return None
        tokens = SealedTokens(
            row["refresh_token"], row["access_token"], as_utc(row["access_token_expires_at"])
        )
        return row_to_integration(row), tokens

    async def store_refreshed_tokens(
        self,
        integration_id: str,
        *,
        expected_refresh_token: bytes,
        access_token: bytes,
        access_token_expires_at: datetime,
        refresh_token: bytes | None,
        refreshed_at: datetime,
        conn: AsyncConnection | None = None,
    ) -> bool:
        """Store a refresh's result in one UPDATE (a rotated refresh token with it, atomically).

        Only while the integration is active or disconnecting (a disconnect requested during
        the refresh still revokes the grant in its step 3: it must find the refresh token that
        is alive) and still holds `expected_refresh_token`: a disconnect that deleted the
        tokens, or a reconnect that replaced them, wins and this returns False.
        """
        values: dict[str, object] = {
            "access_token": access_token,
            "access_token_expires_at": access_token_expires_at,
            "last_refresh_at": refreshed_at,
            "updated_at": refreshed_at,
        }
        if refresh_token is not None:
            values["refresh_token"] = refresh_token
        stmt = (
            update(integrations)
            .where(
                integrations.c.id == integration_id,
                integrations.c.status.in_([Status.ACTIVE.value, Status.DISCONNECTING.value]),
                integrations.c.refresh_token == expected_refresh_token,
            )
            .values(**values)
        )
        if conn is not None:
            result = await conn.execute(stmt)
        else:
            async with self.engine.begin() as own:
                result = await own.execute(stmt)
        return bool(result.rowcount)

    async def mark_needs_reauth(
        self,
        integration_id: str,
        *,
        reason: str,
        at: datetime,
        conn: AsyncConnection | None = None,
    ) -> bool:
        """active -> needs_reauth with `reason`, dropping the sealed access token (the grant
        behind it is dead). Returns whether this call made the transition."""
        stmt = (
            update(integrations)
            .where(
                integrations.c.id == integration_id,
                integrations.c.status == Status.ACTIVE.value,
            )
            .values(
                status=Status.NEEDS_REAUTH.value,
                reauth_reason=reason,
                access_token=None,
                access_token_expires_at=None,
                updated_at=at,
            )
        )
        async with self._in_transaction(conn) as tx:
            result = await tx.execute(stmt)
            if result.rowcount:
                await bump_integration(tx, integration_id)
                await self._announcer.announce(
                    tx, IntegrationChange.NEEDS_REAUTH, integration_id, now=at
                )
        return bool(result.rowcount)

    @contextlib.asynccontextmanager
    async def _in_transaction(self, conn: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
        """The caller's transaction when given, else one of our own."""
        if conn is not None:
            yield conn
            return
        async with self.engine.begin() as own:
            yield own

    # -- connect (connect.py) ----------------------------------------------------------------

    async def find_session(self, state_sha256: str) -> ConnectSession | None:
        """A session by its state hash, consumed or not (to send a replayed state back to its
        own return_url). The verifier of a consumed session is empty."""
        row = await self._first(
            select(connect_sessions).where(connect_sessions.c.state_sha256 == state_sha256)
        )
        if row is None:
            return None
        return row_to_session(row)

    async def reconnect(
        self,
        integration_id: str,
        *,
        google_email: str | None,
        granted_scopes: frozenset[str],
        tokens: SealedTokens,
        now: datetime,
    ) -> bool:
        """Give a reconnecting person's integration its new tokens and make it active again.

        Only from active/needs_reauth (a disconnect that started meanwhile wins). A missing new
        refresh token keeps the stored one. Returns whether the row changed."""
        values: dict[str, object] = {
            "status": Status.ACTIVE.value,
            "reauth_reason": None,
            "google_email": google_email,
            "granted_scopes": " ".join(sorted(granted_scopes)),
            "access_token": tokens.access_token,
            "access_token_expires_at": tokens.access_token_expires_at,
            "updated_at": now,
            # A reconnect is the person mending what failed (a scope they had refused): their
            # calendars are discovered at once, not after a failed discovery's stored backoff.
            "discovery_until": None,
        }
        if tokens.refresh_token is not None:
            values["refresh_token"] = tokens.refresh_token
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(integrations)
                .where(
                    integrations.c.id == integration_id,
                    integrations.c.status.in_([Status.ACTIVE.value, Status.NEEDS_REAUTH.value]),
                )
                .values(**values)
            )
            if result.rowcount:
                await bump_integration(conn, integration_id)
                await self._announcer.announce(
                    conn, IntegrationChange.RECONNECTED, integration_id, now=now
                )
        return bool(result.rowcount)

    async def purge_sessions(self, expired_before: datetime) -> int:
        """Delete connect sessions that expired before `expired_before` (used or not): their
        verifier and login hint have no purpose left. Returns how many went."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(connect_sessions).where(connect_sessions.c.expires_at < expired_before)
            )
        return int(result.rowcount or 0)

    # -- disconnect (disconnect.py) ------------------------------------------------------------
    # The disconnect job lives on the integration row: `disconnect_step` is the last step
    # COMPLETED, the lease columns say which process works on it until when, and
    # `disconnect_receipt` holds the progress JSON (the receipt once done). Every write of a step
    # is guarded by the lease owner and the previous step, so a process that lost its lease
    # (it stalled past the lease and another took over) cannot move the job.

    async def mark_disconnecting(self, tenant_id: str, integration_id: str, now: datetime) -> bool:
        """Disconnect step 1: the tenant's integration becomes `disconnecting` (agent calls stop
        at once) with step 1 completed. False if it does not exist for this tenant or a
        disconnect was already requested (idempotent)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(integrations)
                .where(
                    integrations.c.id == integration_id,
                    integrations.c.tenant_id == tenant_id,
                    integrations.c.status.not_in(
                        [Status.DISCONNECTING.value, Status.DISCONNECTED.value]
                    ),
                )
                .values(
                    status=Status.DISCONNECTING.value,
                    disconnect_requested_at=now,
                    disconnect_step=1,
                    disconnect_lease_owner=None,
                    disconnect_lease_until=None,
                    disconnect_receipt=None,
                    updated_at=now,
                )
            )
            if result.rowcount:
                await bump_integration(conn, integration_id)
        return bool(result.rowcount)

    async def disconnect_job(self, integration_id: str) -> tuple[Integration, str | None] | None:
        """The integration (any tenant: callers scope by tenant first) and its disconnect
        progress JSON (no token, no personal data), or None."""
        query = select(integrations).where(integrations.c.id == integration_id)
        row = await self._first(query)
        if row is None:
            return None
        return row_to_integration(row), row["disconnect_receipt"]

    async def disconnecting_ids(self) -> list[str]:
        """Every integration whose disconnect has not completed, oldest request first."""
        query = (
            select(integrations.c.id)
            .where(integrations.c.status == Status.DISCONNECTING.value)
            .order_by(integrations.c.disconnect_requested_at)
        )
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars().all())

    async def acquire_disconnect_lease(
        self, integration_id: str, owner: str, now: datetime, until: datetime
    ) -> bool:
        """Take the job's lease if it is free or expired (one atomic UPDATE: two processes
        can never both win it)."""
        c = integrations.c
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(integrations)
                .where(
                    c.id == integration_id,
                    c.status == Status.DISCONNECTING.value,
                    or_(
                        c.disconnect_lease_owner.is_(None),
                        c.disconnect_lease_until.is_(None),
                        c.disconnect_lease_until < now,
                    ),
                )
                .values(disconnect_lease_owner=owner, disconnect_lease_until=until)
            )
        return bool(result.rowcount)

    async def advance_disconnect(
        self,
        integration_id: str,
        owner: str,
        step: int,
        progress_json: str,
        *,
        now: datetime,
        lease_until: datetime,
        clear_tokens: bool = False,
    ) -> bool:
        """Record `step` as completed (with the progress so far) and renew the lease, only if
        `owner` still holds it and the job is at `step - 1`. `clear_tokens` also deletes the
        sealed token blobs in the same write, and the Google account's email and id: personal
        data nothing needs once the user has left."""
        c = integrations.c
        values: dict[str, object] = {
            "disconnect_step": step,
            "disconnect_receipt": progress_json,
            "disconnect_lease_until": lease_until,
            "updated_at": now,
        }
        if clear_tokens:
            values.update(
                refresh_token=None,
                access_token=None,
                access_token_expires_at=None,
                google_email=None,
                google_sub=None,
            )
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(integrations)
                .where(
                    c.id == integration_id,
                    c.status == Status.DISCONNECTING.value,
                    c.disconnect_lease_owner == owner,
                    c.disconnect_step == step - 1,
                )
                .values(**values)
            )
        return bool(result.rowcount)

    async def complete_disconnect(
        self,
        integration_id: str,
        owner: str,
        step: int,
        receipt_json: str,
        *,
        now: datetime,
        conn: AsyncConnection,
    ) -> bool:
        """The last step: `disconnected`, the receipt stored, the lease released, inside the
        caller's transaction (the audit entry commits with it). The token columns are cleared
        once more: a refresh that was in flight when the disconnect began may have written an
        access token after step 4."""
        c = integrations.c
        result = await conn.execute(
            update(integrations)
            .where(
                c.id == integration_id,
                c.status == Status.DISCONNECTING.value,
                c.disconnect_lease_owner == owner,
                c.disconnect_step == step - 1,
            )
            .values(
                status=Status.DISCONNECTED.value,
                disconnect_step=step,
                disconnect_receipt=receipt_json,
                disconnect_lease_owner=None,
                disconnect_lease_until=None,
                refresh_token=None,
                access_token=None,
                access_token_expires_at=None,
                updated_at=now,
            )
        )
        if result.rowcount:
            await bump_integration(conn, integration_id)
            await self._announcer.announce(
                conn,
                IntegrationChange.DISCONNECTED,
                integration_id,
                now=now,
                receipt=json.loads(receipt_json),
            )
        return bool(result.rowcount)

    async def release_disconnect_lease(self, integration_id: str, owner: str) -> None:
        """Give the lease up (a failed or interrupted run), so another run need not wait for
        it to expire. A no-op if `owner` no longer holds it."""
        c = integrations.c
        async with self.engine.begin() as conn:
            await conn.execute(
                update(integrations)
                .where(c.id == integration_id, c.disconnect_lease_owner == owner)
                .values(disconnect_lease_owner=None, disconnect_lease_until=None)
            )

    async def mark_reshredded(self, integration_id: str, receipt_json: str, now: datetime) -> None:
        """The deletion journal's replay (reshred.py): the integration, brought back by a
        database restore, is `disconnected` again with no token, whatever state it was in."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(integrations)
                .where(integrations.c.id == integration_id)
                .values(
                    status=Status.DISCONNECTED.value,
                    disconnect_step=6,
                    disconnect_lease_owner=None,
                    disconnect_lease_until=None,
                    disconnect_receipt=receipt_json,
                    refresh_token=None,
                    access_token=None,
                    access_token_expires_at=None,
                    updated_at=now,
                )
            )
            # Every process's caches drop it (gateway.db.notify), as for any status change.
            await bump_integration(conn, integration_id)

    async def checkpoint_wal(self) -> bool:
        """On SQLite, copy the write-ahead log into the database file and truncate it, so
        pages holding deleted tokens do not linger in the -wal file (secure_delete already
        zeroes them in the database file). False if a reader kept it from completing (the
        next checkpoint finishes the job). A no-op (True) on other backends."""
        if self.engine.dialect.name != "sqlite":
            return True
        async with self.engine.connect() as conn:
            row = (await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")).first()
        return row is None or row[0] == 0  # (busy, wal frames, checkpointed frames)
