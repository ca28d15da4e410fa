"""Every statement of the sync package in one object, for the services that use several
concerns at once (the engine reads calendars, writes the copy and is driven by the scheduler's
leases; availability and booking read). Each concern lives in its own module:

    calendar_store  the `calendars` rows: created, failures recorded, purged
    copy_store      the synced copy: records, busy blocks and their generations
    read_store      what availability reads: blocks in a window, freshness, the index's loads
    lease_store     sync requests, claims of due calendars, leases
    channel_store   push channels (used by gateway.sync.channels, not part of SyncStore)
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.sync.calendar_store import CalendarStore
from gateway.sync.copy_store import CopyStore
from gateway.sync.lease_store import LeaseStore
from gateway.sync.read_store import ReadStore


class SyncStore(CalendarStore, CopyStore, ReadStore, LeaseStore):
    """Every statement the sync engine runs (see the module docstring for who owns which)."""

    def __init__(self, engine: AsyncEngine, *, webhook_coalesce_s: float = 30.0) -> None:
        CopyStore.__init__(self, engine, webhook_coalesce_s=webhook_coalesce_s)
