"""The audit log: who did what to which integration, with what outcome.

Entries carry codes and ids only: never a token, an email address or event data, because the
audit log is kept longer than the data it describes (it outlives a disconnect). Not for ever:
entries older than GATEWAY_AUDIT_RETENTION_DAYS are purged (`purge`, run at start-up and hourly
by gateway/http/audit_wiring.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.clock import utc_now
from gateway.db.schema import audit_log
from gateway.db.values import as_utc
from gateway.observability.context import current_request_id

Detail = Mapping[str, str | int | bool | None]


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    tenant_id: str | None
    integration_id: str | None
    action: str
    outcome: str
    request_id: str | None
    detail: dict[str, object]


class AuditLog:
    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def record(
        self,
        action: str,
        outcome: str,
        *,
        tenant_id: str | None = None,
        integration_id: str | None = None,
        request_id: str | None = None,
        detail: Detail | None = None,
        conn: AsyncConnection | None = None,
    ) -> None:
        """Append one entry (inside `conn`'s transaction when given, so it commits with the
        change it describes)."""
        values = {
            "at": self._clock(),
            "tenant_id": tenant_id,
            "integration_id": integration_id,
            "action": action,
            "outcome": outcome,
            # The request (or job) being served, unless the caller names another.
            "request_id": request_id if request_id is not None else current_request_id(),
            "detail": json.dumps(dict(detail), sort_keys=True) if detail else None,
        }
        if conn is not None:
            await conn.execute(audit_log.insert().values(**values))
            return
        async with self._engine.begin() as own:
            await own.execute(audit_log.insert().values(**values))

    async def purge(self, *, older_than: timedelta) -> int:
        """Delete entries written more than `older_than` ago (by the clock). Returns how many."""
        cutoff = self._clock() - older_than
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(audit_log).where(audit_log.c.at < cutoff))
        return int(result.rowcount or 0)

    async def entries(
        self, *, tenant_id: str | None = None, integration_id: str | None = None
    ) -> list[AuditEntry]:
        query = select(audit_log).order_by(audit_log.c.id)
        if tenant_id is not None:
            query = query.where(audit_log.c.tenant_id == tenant_id)
        if integration_id is not None:
            query = query.where(audit_log.c.integration_id == integration_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            AuditEntry(
                at=as_utc(r["at"]) or self._clock(),
                tenant_id=r["tenant_id"],
                integration_id=r["integration_id"],
                action=r["action"],
                outcome=r["outcome"],
                request_id=r["request_id"],
                detail=json.loads(r["detail"]) if r["detail"] else {},
            )
            for r in rows
        ]
