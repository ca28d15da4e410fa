"""The parse+insert baseline of `calendar-gateway bench sync`: the practical limit of one core.

The same events.list pages the gateways will fetch (the bench calendars, same parameters) are
fetched once beforehand and kept as bytes. Then one process, with no HTTP and no SQLAlchemy,
decodes them with orjson, turns their items into `calendar_events` rows with the gateway's own
pure parser (`gateway.sync.rows.parse_rows`) and inserts them with the raw driver: the stdlib
sqlite3 module's executemany on the bench's SQLite file (with the gateway's pragmas), or
asyncpg's COPY on PostgreSQL, one transaction per calendar as a full sync commits its page.

Figure: events per CPU-second of this process (user + system time of the thread doing it, so
SQLite's work counts and a loaded machine's waiting does not; PostgreSQL's server is another
process, as it is for the gateways). The gateways' "per gateway CPU second" is compared with
it: what the sync machinery (HTTP, scheduling, expansion, busy blocks, transactions) costs on
top of the bare work.
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
from gateway.db.schema import calendar_events
from gateway.google.events import LIST_FIELDS
from gateway.settings import DEFAULT_GOOGLE_SCOPES
from gateway.sync.config import SyncConfig
from gateway.sync.copy_store import EVENT_COLUMNS
from gateway.sync.engine import PAGE_SIZE
from gateway.sync.rows import parse_rows

# Calendars fetched for the baseline: the rate is steady well before.
BASELINE_CALENDARS = 20
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


def _rows(calendar_id: str, body: bytes) -> list[tuple[object, ...]]:
    page = orjson.loads(body)
    rows, _ = parse_rows(
        page.get("items") or [], calendar_tz=str(page.get("timeZone") or "UTC"), owner_tag="-"
    )
    return [(calendar_id, 1, *r) for r in rows]


def _sqlite(path: str, calendars: list[Pages]) -> ParseInsert:
    # The issue's baseline: sqlite3's own executemany, one row per parameter set.
    sql, datetimes = sqlite_insert(calendar_events, EVENT_COLUMNS)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "busy_timeout=10000", "synchronous=NORMAL"):
            db.execute(f"PRAGMA {pragma}")
        events = 0
        cpu, wall = time.thread_time(), time.perf_counter()
        for n, cal in enumerate(calendars):
            db.execute("BEGIN")
            for body in cal.bodies:
                rows = _rows(f"{BASELINE_PREFIX}{n}", body)
                db.executemany(sql, sqlite_rows(rows, datetimes))
                events += len(rows)
            db.execute("COMMIT")
        result = ParseInsert(events, time.thread_time() - cpu, time.perf_counter() - wall)
        db.execute("DELETE FROM calendar_events WHERE calendar_id LIKE ?", (BASELINE_PREFIX + "%",))
        return result
    finally:
        db.close()


async def _postgres(url: str, calendars: list[Pages]) -> ParseInsert:
    conn = await asyncpg.connect(url)
    try:
        events = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for n, cal in enumerate(calendars):
            async with conn.transaction():
                for body in cal.bodies:
                    rows = _rows(f"{BASELINE_PREFIX}{n}", body)
                    await conn.copy_records_to_table(
                        "calendar_events", records=rows, columns=list(EVENT_COLUMNS)
                    )
                    events += len(rows)
        result = ParseInsert(events, time.process_time() - cpu, time.perf_counter() - wall)
        await conn.execute(
            "DELETE FROM calendar_events WHERE calendar_id LIKE $1", BASELINE_PREFIX + "%"
        )
        return result
    finally:
        await conn.close()


async def parse_insert_baseline(database_url: str, calendars: list[Pages]) -> ParseInsert:
    """Decode, parse and insert `calendars` with the raw driver (module doc)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        # A thread of its own: sqlite3 blocks, and thread_time counts exactly this work.
        return await asyncio.to_thread(_sqlite, url.database, calendars)
    return await _postgres(url.set(drivername="postgresql").render_as_string(False), calendars)
