"""SQLite's WAL checkpoints, off the writers' path.

    checkpointer = WalCheckpointer(path)          # gateway.bootstrap, for a SQLite file
    async with periodic(checkpointer.run_once, what="WAL checkpoint", interval_s=1.0): ...
    await checkpointer.close()

In WAL mode a commit appends pages to the -wal file, and a checkpoint copies them back into
the database file. By default SQLite checkpoints inside the COMMIT of whichever transaction
takes the WAL past 1,000 pages: that writer copies the pages and syncs the file while it
holds the one writer (23-48 ms on the development machine, once every ~15 new calendars of a
first sync). So every connection of the gateway's engines raises that threshold to
`WAL_AUTOCHECKPOINT_PAGES` (gateway.db.engine), a safety net should no checkpoint run
otherwise, and the serving process checkpoints every second on a connection of its own here.
Its checkpoint is PASSIVE: it copies what no reader still needs without taking the writer
lock or waiting for anyone, so writers commit while it runs, and a reader holding an old
snapshot only leaves the rest for the next round.

SQLite starts the WAL file over only when a write begins with every page in it copied. In a
steady stream of writes the background rounds rarely leave it so (pages keep coming while a
round copies), and the file grows until a COMMIT passes `WAL_AUTOCHECKPOINT_PAGES`, copies
the few pages left itself and the next write starts the file over (in the sync bench it
started over every 4,000-10,000 pages, up to ~40 MB, against ~4 MB with SQLite's default). One COMMIT in 10,000
pages then checkpoints, with little left to copy, instead of one in 1,000 copying them all.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# A writer checkpoints in its COMMIT only past this many WAL pages (4 KB each: ~40 MB), where
# SQLite's default is 1,000: normally `WalCheckpointer` has copied them long before.
WAL_AUTOCHECKPOINT_PAGES = 10_000
# How often the serving process checkpoints: at a first sync's ~5 MB a second of new pages,
# the WAL stays near a tenth of the safety net.
CHECKPOINT_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Checkpoint:
    """What one PASSIVE checkpoint found: the WAL's pages and how many are in the database
    file now (all of them unless a reader still needed some)."""

    wal_pages: int
    checkpointed: int


class WalCheckpointer:
    """Checkpoints one SQLite file on a connection of its own (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        # One thread owns the connection: opened, used and closed there, in order (sqlite3
        # connections must not be closed from another thread while a call runs in theirs).
        self._owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"WalCheckpointer(path={self._path.name!r})"

    async def run_once(self) -> Checkpoint:
        """One PASSIVE checkpoint, in the connection's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._owner, self._checkpoint)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._owner, self._close)
        self._owner.shutdown(wait=False)

    def _checkpoint(self) -> Checkpoint:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, isolation_level=None)
        _busy, wal_pages, checkpointed = self._conn.execute(
            "PRAGMA wal_checkpoint(PASSIVE)"
        ).fetchone()
        return Checkpoint(wal_pages=max(wal_pages, 0), checkpointed=max(checkpointed, 0))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
