"""What the integration repository announces, and to whom it hands the announcement.

Every status change of an integration (connected, reconnected, needs_reauth, disconnected) is
announced inside the transaction that makes it, so it is never announced without happening
and never happens unannounced. Who listens is not this package's business: the app passes an
`IntegrationAnnouncer` in (the webhooks outbox, `gateway.webhooks.outbox.IntegrationOutbox`),
so connections depends on nothing above it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection


class IntegrationChange(StrEnum):
    """A change of an integration worth announcing."""

    CONNECTED = "connected"
    RECONNECTED = "reconnected"
    NEEDS_REAUTH = "needs_reauth"
    DISCONNECTED = "disconnected"


class IntegrationAnnouncer(Protocol):
    """Records announcements on the caller's connection (inside its transaction)."""

    async def wanted(
        self, conn: AsyncConnection, tenant_id: str, change: IntegrationChange
    ) -> bool:
        """Whether anyone of the tenant listens for `change` (lets a bulk insert skip the
        announcement per row)."""
        ...

    async def announce(
        self,
        conn: AsyncConnection,
        change: IntegrationChange,
        integration_id: str,
        *,
        now: datetime,
        **extra: object,
    ) -> None:
        """Announce `change` of the integration as its row stands in this transaction (after
        the change), with `extra` fields (ids and codes only: never an email or a token)."""
        ...
