"""The last statement of a write transaction, committed in its own round trip on SQLite.

    async with engine.begin() as conn:
        ...
        result = await commit_if_changed(conn, update(...).returning(...))
        # nothing that can fail after this line, within the transaction

On SQLite every hop to the connection's thread is time the one writer is held while the
event loop gets round to the answer; a transaction's COMMIT is one more hop (see
`gateway.db.sqlite_driver`). `commit_if_changed` runs the statement and, if it changed a
row (or nothing in the transaction changed one, when a commit is the same as a rollback), the
COMMIT with it on the thread; SQLAlchemy's own commit at the end of the block then costs
nothing. If the statement changed no row after others did, the transaction is still open, so a
caller that raises on "no row" (a calendar purged meanwhile) still rolls everything back.

The statement must be the transaction's last: a later statement is refused (RuntimeError), and
an exception raised after it can no longer undo what committed. Elsewhere (PostgreSQL) it is
`gateway.db.direct.execute`: a commit there is one round trip either way, and a `Direct`
statement runs on asyncpg itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Executable
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.direct import Direct, Executed, execute
from gateway.db.sqlite_driver import OneHopConnection


async def commit_if_changed(
    conn: AsyncConnection,
    statement: Executable | Direct,
    parameters: Any = None,
    *,
    last: bool = True,
) -> Executed:
    """Execute the transaction's last statement, committing with it on SQLite (module doc).
    `last=False` is a plain `conn.execute`: for helpers whose caller says whether their
    statement ends its transaction."""
    driver = None
    if last and conn.dialect.name == "sqlite":
        raw = (await conn.get_raw_connection()).driver_connection
        if isinstance(raw, OneHopConnection):
            driver = raw
            driver.commit_with_next = True
    try:
        return await execute(conn, statement, parameters)
    finally:
        if driver is not None:
            driver.commit_with_next = False  # not taken if the statement failed before its hop


async def ended_unchanged(conn: AsyncConnection) -> bool:
    """Whether the transaction's last statement (`commit_if_changed`, on SQLite) ended it
    with no row changed anywhere in it: a commit that was the same as a rollback."""
    if conn.dialect.name != "sqlite":
        return False
    driver = (await conn.get_raw_connection()).driver_connection
    return (
        isinstance(driver, OneHopConnection)
        and driver.committed_early
        and not driver.committed_changes
    )
