"""The `disconnect_receipts` table: signed receipts, kept after everything else about an
integration is gone (no purge touches it)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.connections.receipts import SignedReceipt
from gateway.db.schema import disconnect_receipts


class ReceiptStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert(
        self,
        tenant_id: str,
        integration_id: str,
        signed: SignedReceipt,
        completed_at: datetime,
        *,
        journal_seq: int | None,
        conn: AsyncConnection,
    ) -> None:
        """Store the receipt inside the caller's transaction (the disconnect's last step), with
        the seq of the disconnect's deletion journal entry."""
        await conn.execute(
            insert(disconnect_receipts).values(
                receipt_id=signed.receipt_id,
                tenant_id=tenant_id,
                integration_id=integration_id,
                key_id=signed.key_id,
                completed_at=completed_at,
                document=signed.to_json(),
                journal_seq=journal_seq,
            )
        )

    async def for_integration(self, tenant_id: str, integration_id: str) -> SignedReceipt | None:
        """The integration's receipt, or None (none yet, or another tenant's)."""
        async with self._engine.connect() as conn:
            document = (
                await conn.execute(
                    select(disconnect_receipts.c.document).where(
                        disconnect_receipts.c.integration_id == integration_id,
                        disconnect_receipts.c.tenant_id == tenant_id,
                    )
                )
            ).scalar_one_or_none()
        return SignedReceipt.from_json(document) if document is not None else None

    async def last_journal_seq(self) -> int:
        """The highest deletion journal seq any receipt recorded (0 for none)."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(select(func.max(disconnect_receipts.c.journal_seq)))
        return int(found or 0)
