"""Replaying the deletion journal: what a database restore brought back is destroyed again.

Restoring a database backup taken before a disconnect brings back the integration row, its
sealed tokens, its wrapped data key and its synced records, and the KEK that opens them still
exists. The journal (`gateway.connections.journal`, outside the database) still names the
integration, so every process, when it starts (before it serves anything or syncs) and then on
a timer, replays it: an integration named there that has any of

    a token column set, a data key row, calendars / events / busy blocks / watch channels /
    bookings, or a status other than disconnected (a disconnect that had reached step 5
    excepted: its own job finishes it)

is shredded again, locally and without calling Google (the grant was revoked by the original
disconnect; the old tokens must not even be tried): status `disconnected` and the token
columns cleared in one write (nothing serves it from then on), the sync engine's purgers, the
data key destroyed, and an audit entry `reshredded_after_restore`.

Why a disconnect past step 5 is left alone: the journal entry is written by the disconnect job
at step 6, after it destroyed the data key (step 5), when nothing is left to shred, so a live
job is never raced.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, or_, select, union
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import AuditLog
from gateway.clock import rfc3339, utc_now
from gateway.connections.disconnect import DisconnectHooks
from gateway.connections.journal import DeletionJournal
from gateway.connections.model import Status
from gateway.connections.receipt_store import ReceiptStore
from gateway.connections.repository import IntegrationRepository
from gateway.db.schema import bookings, calendars, integrations, vault_data_keys, watch_channels
from vault.service import Vault

log = logging.getLogger(__name__)

_CHUNK = 500


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _leftovers(ids: list[str]) -> Select[tuple[Any]]:
    """Ids among `ids` that still have something a disconnect destroys."""
    c = integrations.c
    live = select(c.id).where(
        c.id.in_(ids),
        or_(
            c.refresh_token.is_not(None),
            c.access_token.is_not(None),
            c.status.in_([Status.ACTIVE.value, Status.NEEDS_REAUTH.value]),
            (c.status == Status.DISCONNECTING.value) & (c.disconnect_step < 5),
        ),
    )
    keys = select(vault_data_keys.c.integration_id).where(vault_data_keys.c.integration_id.in_(ids))
    cals = select(calendars.c.integration_id).where(calendars.c.integration_id.in_(ids))
    chans = select(watch_channels.c.integration_id).where(watch_channels.c.integration_id.in_(ids))
    books = select(bookings.c.integration_id).where(bookings.c.integration_id.in_(ids))
    query = union(live, keys, cals, chans, books).subquery()
    return select(query.c[0])


class JournalReplay:
    """Replays one process's view of the journal. `replay()` is safe to call repeatedly."""

    def __init__(
        self,
        *,
        journal: DeletionJournal,
        receipts: ReceiptStore,
        engine: AsyncEngine,
        repository: IntegrationRepository,
        vault: Vault,
        audit: AuditLog,
        hooks: DisconnectHooks,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._journal = journal
        self._receipts = receipts
        self._engine = engine
        self._repo = repository
        self._vault = vault
        self._audit = audit
        self._hooks = hooks
        self._clock = clock
        self._named: dict[str, str] = {}  # integration id -> tenant id

    def __repr__(self) -> str:
        return f"JournalReplay({self._journal!r}, named={len(self._named)})"

    def named(self, integration_id: str) -> bool:
        """Whether the journal (as read so far) names the integration."""
        return integration_id in self._named

    async def replay(self) -> int:
        """Read new journal entries (JournalBroken if the chain is broken, or if the journal
        ends before an entry a receipt in the database recorded), then shred again every named
        integration that has something left. Returns how many were shredded."""
        # The database first: an entry is in the file before its receipt commits, so reading
        # the file after this query sees every entry the query found (no false alarm).
        recorded = await self._receipts.last_journal_seq()
        for entry in await self._journal.read_new():
            self._named[entry.integration_id] = entry.tenant_id
        if recorded > self._journal.last_seq:
            raise self._journal.older_than(recorded)
        ids = sorted(self._named)
        found: list[str] = []
        async with self._engine.connect() as conn:
            for chunk in _chunks(ids):
                found.extend(str(i) for i in (await conn.execute(_leftovers(chunk))).scalars())
        for integration_id in sorted(set(found)):
            await self._reshred(self._named[integration_id], integration_id)
        return len(set(found))

    async def _reshred(self, tenant_id: str, integration_id: str) -> None:
        now = self._clock()
        found = await self._repo.disconnect_job(integration_id)
        purged = 0
        if found is not None:
            integration, progress = found
            receipt_json = _receipt_json(progress, now)
            # First: nothing may serve it, and no token column may hold anything.
            await self._repo.mark_reshredded(integration_id, receipt_json, now)
            for purger in list(self._hooks.record_purgers):
                purged += int(await purger(integration))
        # Channels of calendars already gone, or of an integration row that is gone.
        purged += await self._forget_channels(integration_id)
        destroyed = await self._vault.destroy(tenant_id, integration_id)
        await self._repo.checkpoint_wal()
        await self._audit.record(
            "reshredded_after_restore",
            "ok",
            tenant_id=tenant_id,
            integration_id=integration_id,
            detail={"records_purged": purged, "key_destroyed": destroyed.destroyed},
        )
        log.warning(
            "integration=%s named in the deletion journal was back (database restored?): "
            "shredded again",
            integration_id,
        )

    async def _forget_channels(self, integration_id: str) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(watch_channels).where(watch_channels.c.integration_id == integration_id)
            )
        return int(result.rowcount or 0)


def _receipt_json(progress: str | None, now: datetime) -> str:
    """Keep a completed disconnect's receipt JSON; otherwise one saying what this did."""
    data = json.loads(progress) if progress else {}
    if isinstance(data, dict) and isinstance(data.get("completed_at"), str):
        return json.dumps(data, sort_keys=True)
    return json.dumps(
        {
            "revocation": None,
            "revoked_at_google": False,
            "channels_stopped": 0,
            "records_purged": 0,
            "key_destroyed": True,
            "tokens_destroyed": True,
            "reshredded_after_restore": True,
            "completed_at": rfc3339(now),
        },
        sort_keys=True,
    )
