"""The scheduler's due scan among thousands of calendars, on SQLite and PostgreSQL.

The scan runs every tick and after every finished sync in every process, so it must read the
calendars that are due, not every calendar: at 10,000 calendars the whole-table scan it
replaced took 12 ms of CPU on SQLite, after every sync. What a user would notice is the
claim itself (the due calendars, requests first) and a scan whose plan still reads every
row, which grows with every connected user.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import calendars, integrations
from gateway.sync.lease_store import LeaseStore
from tests.support.rows import calendar_values, integration_values

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
QUIET = 2_000  # calendars with nothing to do: polled an hour from now


def _integration(n: int, status: str = "active") -> dict[str, Any]:
    return integration_values(f"int_{n:05d}", at=NOW, status=status)


def _calendar(n: int, **values: Any) -> dict[str, Any]:
    quiet: dict[str, Any] = {
        "active_generation": 1,
        "state": "synced",
        "next_poll_at": NOW + timedelta(hours=1, seconds=n),
        # Every row of one executemany names the same columns.
        "sync_requested_at": None,
        "backoff_until": None,
    }
    return calendar_values(f"cal_{n:05d}", f"int_{n:05d}", at=NOW, **{**quiet, **values})


async def _seed(engine: AsyncEngine) -> None:
    special: dict[int, dict[str, Any]] = {
        # Each reason to be due once, and two that look due but may not be claimed.
        QUIET + 1: {"next_poll_at": NOW - timedelta(minutes=5)},  # poll overdue
        QUIET + 2: {"sync_requested_at": NOW - timedelta(seconds=3)},  # a push notification
        QUIET + 3: {"next_poll_at": None, "active_generation": None, "state": "initial"},
        QUIET + 4: {"active_generation": None, "state": "initial"},  # first full sync pending
        QUIET + 5: {"next_poll_at": NOW - timedelta(minutes=9)},  # but its grant is gone
        QUIET + 6: {"sync_requested_at": NOW, "backoff_until": NOW + timedelta(minutes=1)},
    }
    rows = [_calendar(n) for n in range(QUIET)]
    rows += [_calendar(n, **values) for n, values in special.items()]
    people = [_integration(n) for n in range(QUIET)]
    people += [_integration(n, "needs_reauth" if n == QUIET + 5 else "active") for n in special]
    async with engine.begin() as conn:
        await conn.execute(insert(integrations), people)
        await conn.execute(insert(calendars), rows)
        if engine.dialect.name == "sqlite":
            return
    async with engine.connect() as conn:
        # What autovacuum does to tables of this size on its own.
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
            text("ANALYZE calendars, integrations")
        )


async def test_the_due_scan_claims_the_due_calendars_and_reads_only_them(
    engine: AsyncEngine,
) -> None:
    await _seed(engine)
    scans: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM calendars" in statement:
            scans.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        claimed = await LeaseStore(engine).claim_due(
            "me", NOW, lease_until=NOW + timedelta(minutes=2), limit=8
        )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)

    # The request first, then the calendar never planned, then the most overdue first; the
    # reauth integration's and the backed-off one are not claimed.
    assert [c.id for c in claimed] == [
        f"cal_{QUIET + 2:05d}",
        f"cal_{QUIET + 3:05d}",
        f"cal_{QUIET + 1:05d}",
        f"cal_{QUIET + 4:05d}",
    ]
    assert len(scans) == 1
    statement, parameters = scans[0]
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            steps = [str(row[-1]) for row in plan]
            # The small set of due ids (materialised) is walked, never a table of them all.
            assert "SCAN due" in steps, steps
            tables = ("SCAN calendars", "SCAN integrations", "SCAN other")
            assert not [s for s in steps if s.startswith(tables) and "USING" not in s], steps
        else:
            plan = await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            steps = [str(row[0]) for row in plan]
            assert not [s for s in steps if "Seq Scan" in s], "\n".join(steps)
