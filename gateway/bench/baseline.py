"""The parse+insert baseline of `calendar-gateway bench sync`: the practical limit of one core.

The same events.list pages the gateways will fetch (the bench calendars, same parameters) are
fetched once beforehand and kept as bytes. Then one process, with no HTTP and no SQLAlchemy,
decodes them with orjson and inserts the rows a full sync stores with the raw driver: the
stdlib sqlite3 module's executemany on the bench's SQLite file (with the gateway's pragmas), or
asyncpg's COPY on PostgreSQL, one transaction per calendar as a full sync commits it.

"The same rows" are a calendar's `calendar_events` rows (the gateway's own pure parser,
`gateway.sync.rows.parse_rows`) AND its `busy_blocks` rows (the gateway's own pure expansion,
`gateway.sync.model.blocks_for_records`): availability is read from the blocks, so a sync
that stored only the events would not be done. That is the baseline the gateways' "per
gateway CPU second" is compared with: what the sync machinery (HTTP, scheduling, leases,
transactions, SQLAlchemy, push channels) costs on top of the work itself. Until 2026-12-06
the baseline stored the events only; that figure is still printed (`events_only`), for
comparison with older runs.

Figures: events per CPU-second of this process (user + system time of the thread doing it, so
SQLite's work counts and a loaded machine's waiting does not; PostgreSQL's server is another
process, as it is for the gateways), the best of BASELINE_RUNS runs.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from gateway.bench.procs import BenchError
from gateway.bench.setup import Emulator
from gateway.clock import rfc3339
from gateway.db.bulk import sqlite_insert, sqlite_rows
from gateway.db.schema import busy_blocks, calendar_events
from gateway.google.events import LIST_FIELDS
from gateway.settings import DEFAULT_GOOGLE_SCOPES
from gateway.sync.config import SyncConfig
from gateway.sync.copy_store import BLOCK_COLUMNS, EVENT_COLUMNS, block_rows
from gateway.sync.engine import PAGE_SIZE
from gateway.sync.model import Horizon, blocks_for_records
from gateway.sync.rows import EventRow, parse_rows, record_of

# Calendars fetched for the baseline: the rate is steady well before.
BASELINE_CALENDARS = 20
# Runs of the baseline; the figure is the best (least CPU): a limit is what the machine can do,
# and on a shared machine one run's figure moved by a third from one bench run to the next.
BASELINE_RUNS = 3
BASELINE_PREFIX = "cal_bench_parse_"


@dataclass(frozen=True)
class Pages:
    """One calendar's events.list pages, as Google's bytes."""

    bodies: list[bytes]


@dataclass(frozen=True)
class ParseInsert:
    events: int
    cpu_s: float
    wall_s: float
    blocks: int = 0  # busy blocks inserted with them (0: the events-only variant)

    @property
    def per_cpu_s(self) -> float:
        return self.events / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0


async def fetch_pages(google: Emulator, emails: Sequence[str]) -> list[Pages]:
    """Every page of each calendar's full-sync listing (the engine's parameters)."""
    horizon = SyncConfig().horizon(datetime.now(UTC))
    out: list[Pages] = []
    for email in emails[:BASELINE_CALENDARS]:
        token = (await google.tokens(email, list(DEFAULT_GOOGLE_SCOPES)))["access_token"]
        params = {
            "showDeleted": "true",
            "maxResults": str(PAGE_SIZE),
            "timeMin": rfc3339(horizon.start),
            "fields": LIST_FIELDS,
            "prettyPrint": "false",
        }
        bodies: list[bytes] = []
        while True:
            async with google.http.get(
                f"{google.url}/calendar/v3/calendars/{email}/events",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                if r.status != 200:
                    raise BenchError(f"events.list for the baseline: {r.status}")
                body = await r.read()
            bodies.append(body)
            next_token = orjson.loads(body).get("nextPageToken")
            if not next_token:
                break
            params["pageToken"] = next_token
        out.append(Pages(bodies))
    return out


@dataclass(frozen=True)
class _Calendar:
    """One calendar's rows, as a full sync stores them (module doc)."""

    events: list[tuple[object, ...]]
    blocks: list[tuple[object, ...]]


def _calendar(calendar_id: str, cal: Pages, horizon: Horizon, with_blocks: bool) -> _Calendar:
    rows: list[EventRow] = []
    zone = "UTC"
    for body in cal.bodies:
        page = orjson.loads(body)
        zone = str(page.get("timeZone") or zone)
        parsed, _ = parse_rows(page.get("items") or [], calendar_tz=zone, owner_tag="-")
        rows.extend(parsed)
    blocks: list[tuple[object, ...]] = []
    if with_blocks:
        found = blocks_for_records([record_of(r) for r in rows], calendar_tz=zone, horizon=horizon)
        blocks = block_rows(calendar_id, 1, found)
    return _Calendar([(calendar_id, 1, *r) for r in rows], blocks)


def _sqlite(path: str, calendars: list[Pages], horizon: Horizon, with_blocks: bool) -> ParseInsert:
    # The issue's baseline: sqlite3's own executemany, one row per parameter set.
    events_sql, datetimes = sqlite_insert(calendar_events, EVENT_COLUMNS)
    blocks_sql, _ = sqlite_insert(busy_blocks, BLOCK_COLUMNS)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "busy_timeout=10000", "synchronous=NORMAL"):
            db.execute(f"PRAGMA {pragma}")
        events = blocks = 0
        cpu, wall = time.thread_time(), time.perf_counter()
        for n, cal in enumerate(calendars):
            rows = _calendar(f"{BASELINE_PREFIX}{n}", cal, horizon, with_blocks)
            db.execute("BEGIN")
            db.executemany(events_sql, sqlite_rows(rows.events, datetimes))
            db.executemany(blocks_sql, rows.blocks)
            db.execute("COMMIT")
            events, blocks = events + len(rows.events), blocks + len(rows.blocks)
        result = ParseInsert(events, time.thread_time() - cpu, time.perf_counter() - wall, blocks)
        for table in ("calendar_events", "busy_blocks"):
            db.execute(f"DELETE FROM {table} WHERE calendar_id LIKE ?", (BASELINE_PREFIX + "%",))  # noqa: S608 - fixed names
        return result
    finally:
        db.close()


async def _postgres(
    url: str, calendars: list[Pages], horizon: Horizon, with_blocks: bool
) -> ParseInsert:
    conn = await asyncpg.connect(url)
    try:
        events = blocks = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for n, cal in enumerate(calendars):
            rows = _calendar(f"{BASELINE_PREFIX}{n}", cal, horizon, with_blocks)
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "calendar_events", records=rows.events, columns=list(EVENT_COLUMNS)
                )
                if rows.blocks:
                    await conn.copy_records_to_table(
                        "busy_blocks", records=rows.blocks, columns=list(BLOCK_COLUMNS)
                    )
            events, blocks = events + len(rows.events), blocks + len(rows.blocks)
        result = ParseInsert(events, time.process_time() - cpu, time.perf_counter() - wall, blocks)
        for table in ("calendar_events", "busy_blocks"):
            await conn.execute(
                f"DELETE FROM {table} WHERE calendar_id LIKE $1",  # noqa: S608 - fixed names
                BASELINE_PREFIX + "%",
            )
        return result
    finally:
        await conn.close()


async def parse_insert_baseline(
    database_url: str, calendars: list[Pages], *, with_blocks: bool = True
) -> ParseInsert:
    """Decode, parse, expand and insert `calendars` with the raw driver (module doc), the best
    of BASELINE_RUNS runs; `with_blocks=False`: the events only (the baseline until
    2026-12-06)."""
    runs = [await _once(database_url, calendars, with_blocks) for _ in range(BASELINE_RUNS)]
    return min(runs, key=lambda r: r.cpu_s)


async def _once(database_url: str, calendars: list[Pages], with_blocks: bool) -> ParseInsert:
    url = make_url(database_url)
    horizon = SyncConfig().horizon(datetime.now(UTC))
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        # A thread of its own: sqlite3 blocks, and thread_time counts exactly this work.
        return await asyncio.to_thread(_sqlite, url.database, calendars, horizon, with_blocks)
    plain = url.set(drivername="postgresql").render_as_string(False)
    return await _postgres(plain, calendars, horizon, with_blocks)
