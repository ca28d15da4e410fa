"""SQLite's WAL is copied back into the database file by the checkpointer, not in a writer's
COMMIT (gateway.db.checkpoint).

By default the COMMIT that takes the WAL past 1,000 pages copies them into the file and syncs
it while it holds the one writer: a first sync or a pushed change then stalls for tens of
milliseconds now and then. What a user would notice is that stall; what this checks is where
the copying happens, and that the rows do reach the file.
"""

from __future__ import annotations

from pathlib import Path

from gateway.db.checkpoint import WalCheckpointer
from gateway.db.engine import create_engine

ROW_BYTES = 400_000
ROWS = 16  # ~6.4 MB: well past SQLite's default of 1,000 pages of 4 KB


async def test_writers_leave_the_checkpoint_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    engine = await create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE blobs (n INTEGER PRIMARY KEY, b BLOB)")
        for _ in range(ROWS):
            async with engine.begin() as conn:
                await conn.exec_driver_sql(
                    f"INSERT INTO blobs (b) VALUES (randomblob({ROW_BYTES}))"
                )
        # No COMMIT copied anything: the rows are all in the WAL, none in the file yet.
        assert path.stat().st_size < ROW_BYTES
        checkpointer = WalCheckpointer(path)
        try:
            done = await checkpointer.run_once()
            again = await checkpointer.run_once()
        finally:
            await checkpointer.close()
        assert done.wal_pages * 4096 > ROWS * ROW_BYTES
        assert done.checkpointed == done.wal_pages
        assert path.stat().st_size > ROWS * ROW_BYTES
        assert again.checkpointed == again.wal_pages  # nothing left behind
        async with engine.connect() as conn:
            stored = await conn.exec_driver_sql("SELECT count(*), sum(length(b)) FROM blobs")
            assert stored.one() == (ROWS, ROWS * ROW_BYTES)
    finally:
        await engine.dispose()
