"""`calendar-gateway bench sync`: full-sync ingest rate, and push-to-visible lag.

One run, per backend (SQLite with one gateway process; PostgreSQL with `processes` gateway
processes sharing the database, the work split by the scheduler's leases):

1. ingest: N integrations whose primary calendars hold M generated events each (the emulator's
   deterministic seed: single, all-day, recurring with exceptions, transparent, declined,
   deleted) are inserted at once; the gateways' schedulers discover and fully sync every
   calendar. Figure: event records stored / seconds from the insert until every calendar has a
   complete copy. Baselines: the same database's executemany INSERT of as many event rows
   through SQLAlchemy, and the parse+insert baseline (`gateway.bench.baseline`): one process
   decoding the same pages with orjson and inserting the same rows (events and busy blocks)
   with the raw driver, no HTTP, no SQLAlchemy, the practical limit of one core (also printed
   for the events alone, as before 2026-12-06). Ingest per gateway CPU-second is printed as a
   ratio to that baseline's events per CPU-second. On SQLite the note adds how much of the
   ingest the one writer was held, read from the gateway's /metrics before and after;
2. push: once every calendar has a live watch channel, one new event per integration is made
   "in Google Calendar"; the emulator pushes a notification to the gateway's webhook, the
   scheduler syncs, and free/busy is watched until the event's busy time shows (one
   `POST /v1/freebusy` for every change in flight each VISIBLE_POLL_S: `push_lags`). Figures:
   p50 and p99 of that lag over all integrations, `push_parallel` changes in flight at a time
   (a steady stream, not one burst of N).

Aims (issues 5 and 13): ingest at least 20,000 events/s on SQLite for 1,000 x 1,000, per
gateway CPU-second at least 0.5x the parse+insert baseline, PostgreSQL with 2 processes faster
than SQLite; push-to-visible lag p99 under 250 ms (issue 5 had 1 s). The 20,000 is judged
only in runs of at least that size (`INGEST_AIM_SIZE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.availability.service import MAX_INTEGRATIONS
from gateway.bench.baseline import Pages, ParseInsert, fetch_pages, parse_insert_baseline
from gateway.bench.procs import BenchError, cpu_seconds
from gateway.bench.report import Aim, Figure, percentile
from gateway.bench.setup import (
    Emulator,
    bench_emails,
    bench_settings,
    database,
    emulator,
    gateway_env,
    gateways,
    insert_integrations,
    prepare_integrations,
)
from gateway.clock import rfc3339
from gateway.db.engine import create_engine
from gateway.db.schema import calendar_events, calendars, watch_channels

# Raw-insert baseline: at most this many rows (the rate is steady well before).
BASELINE_ROWS = 100_000
BASELINE_CHUNK = 500
POLL_S = 0.2
VISIBLE_POLL_S = 0.02


@dataclass(frozen=True)
class SyncBenchConfig:
    integrations: int = 1_000
    events: int = 1_000
    backends: tuple[str, ...] = ("sqlite", "postgres")
    processes: int = 2  # gateway processes on PostgreSQL (SQLite: always one)
    push_changes: int | None = None  # default: one per integration
    push_parallel: int = 8
    sync_concurrency: int = 8  # GATEWAY_SYNC_CONCURRENCY of each gateway
    timeout_s: float = 3_600.0


@dataclass(frozen=True)
class BackendResult:
    backend: str
    processes: int
    events: int
    ingest_s: float
    baseline_rows: int
    baseline_s: float
    channels_s: float
    lags_ms: list[float]
    gateway_cpu_s: float  # CPU time of every gateway process during the ingest
    emulator_cpu_s: float
    parse_insert: ParseInsert
    events_only: ParseInsert  # the baseline without busy blocks (as printed until 2026-12-06)
    # CPU time of every gateway process while the pushed changes were made and polled for:
    # once the gateways are busy all the time, the lag approaches `push_parallel` times the
    # event loop's share of it per change (it also holds the database threads' work and each
    # calendar's first read into the index, before its change is made).
    push_cpu_s: float
    # SQLite: how much of the ingest its one writer was held (`WriterShare`); None elsewhere.
    writer: WriterShare | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.ingest_s if self.ingest_s > 0 else 0.0

    @property
    def baseline_per_s(self) -> float:
        return self.baseline_rows / self.baseline_s if self.baseline_s > 0 else 0.0


@dataclass(frozen=True)
class WriterShare:
    """SQLite's one writer during the ingest, from the gateway's /metrics
    (gateway_sqlite_writer_*): the share of the ingest's wall time it was held, and that time
    per calendar ingested. Near 1, the writer is the ingest's queue."""

    held_s: float
    share: float
    per_calendar_ms: float

    def note(self) -> str:
        return (
            f"SQLite's writer held {self.share:.0%} of it, {self.per_calendar_ms:.0f} ms per"
            " calendar"
        )


_WRITER_HELD = "gateway_sqlite_writer_held_seconds_total"


async def writer_held_s(gateway_url: str) -> float | None:
    """Seconds the gateway's SQLite writer has been held so far, from its /metrics; None when
    it has no such writer (PostgreSQL)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway_url}/metrics") as response,
    ):
        if response.status != 200:
            raise BenchError(f"GET /metrics: {response.status}")
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == _WRITER_HELD:
                return float(sample.value)
    return None


async def run_sync_bench(workdir: Path, config: SyncBenchConfig) -> list[Figure]:
    """Run the benchmark (module doc) under `workdir`; one set of figures per backend."""
    emails = bench_emails(config.integrations)
    results: list[BackendResult] = []
    async with emulator(workdir) as google:
        await google.add_users(emails, events=config.events)
        pages = await fetch_pages(google, emails)
        for backend in config.backends:
            processes = 1 if backend == "sqlite" else config.processes
            results.append(
                await _one_backend(workdir, google, emails, pages, backend, processes, config)
            )
    return figures(results, config)


# Issue 13's aims for the sync figures.
INGEST_AIM = Aim(">=", 20_000)  # SQLite; PostgreSQL with 2 processes: faster than SQLite
PER_CPU_AIM = Aim(">=", 0.5, on_ratio=True)
PUSH_P99_AIM = Aim("<", 250, unit="ms")


# The size issue 13 sets INGEST_AIM for (and larger runs): a run of a few seconds carries a
# larger share of its ramp (the first discovery and ticks) and its tail (the last calendars
# finishing), so a smaller one states the aim without judging it.
INGEST_AIM_SIZE = (1000, 1000)


def _ingest_aim(
    r: BackendResult, results: list[BackendResult], config: SyncBenchConfig
) -> Aim | None:
    """SQLite's ingest aim (at the issue's size, none below it), or PostgreSQL's: faster than
    SQLite's in the same run (none without one)."""
    if r.backend == "sqlite":
        integrations, events = INGEST_AIM_SIZE
        if config.integrations >= integrations and config.events >= events:
            return INGEST_AIM
        return None
    sqlite = next((s for s in results if s.backend == "sqlite"), None)
    if sqlite is None:
        return None
    return Aim(">", sqlite.events_per_s, unit="events/s, SQLite's in this run")


def _ingest_aim_text(backend: str, aim: Aim | None) -> str:
    if aim is not None:
        return aim.text
    if backend == "sqlite":
        integrations, events = INGEST_AIM_SIZE
        return f"{INGEST_AIM.text} at {integrations:,} x {events:,} (not judged at this size)"
    return "aim: faster than SQLite"


def figures(results: list[BackendResult], config: SyncBenchConfig) -> list[Figure]:
    size = f"{config.integrations:,} x {config.events:,} events"
    out: list[Figure] = []
    for r in results:
        ingest_aim = _ingest_aim(r, results, config)
        label = f"{'SQLite' if r.backend == 'sqlite' else 'PostgreSQL'}, {r.processes} proc"
        out.append(
            Figure(
                f"raw INSERT of event rows ({label})",
                r.baseline_per_s,
                "rows/s",
                r.baseline_per_s,
                "raw insert",
                f"SQLAlchemy executemany, {BASELINE_CHUNK} rows per statement",
            )
        )
        p, e = r.parse_insert, r.events_only
        out.append(
            Figure(
                f"parse+insert baseline, one core ({label})",
                p.per_cpu_s,
                "events/CPU-s",
                note=f"orjson, parse_rows, blocks_for_records, raw driver; no HTTP or "
                f"SQLAlchemy: {p.events:,} events + {p.blocks:,} busy blocks, "
                f"{p.per_s:,.0f} events/s wall",
            )
        )
        out.append(
            Figure(
                f"parse+insert baseline, events only ({label})",
                e.per_cpu_s,
                "events/CPU-s",
                p.per_cpu_s,
                "parse+insert",
                note="the same without busy blocks (the baseline of runs before 2026-12-06)",
            )
        )
        out.append(
            Figure(
                f"sync ingest ({label})",
                r.events_per_s,
                "events/s",
                r.baseline_per_s,
                "raw insert",
                f"{size}: {r.events:,} records in {r.ingest_s:.1f} s; "
                + (f"{r.writer.note()}; " if r.writer is not None else "")
                + _ingest_aim_text(r.backend, ingest_aim),
                aim=ingest_aim,
            )
        )
        if r.gateway_cpu_s > 0:
            out.append(
                Figure(
                    f"sync ingest per gateway CPU second ({label})",
                    r.events / r.gateway_cpu_s,
                    "events/CPU-s",
                    p.per_cpu_s,
                    "parse+insert",
                    note=f"{PER_CPU_AIM.text}; gateways {r.gateway_cpu_s:.1f} CPU-s, emulator "
                    f"{r.emulator_cpu_s:.1f} CPU-s: what a core to itself would give",
                    aim=PER_CPU_AIM,
                )
            )
        if r.lags_ms:
            n = len(r.lags_ms)
            out.append(
                Figure(
                    f"push-to-visible lag p50 ({label})",
                    percentile(r.lags_ms, 0.5),
                    "ms",
                    note=f"{n} changes, push channels live after {r.channels_s:.1f} s; "
                    f"gateways {r.push_cpu_s / n * 1000:.1f} ms CPU per change",
                )
            )
            out.append(
                Figure(
                    f"push-to-visible lag p99 ({label})",
                    percentile(r.lags_ms, 0.99),
                    "ms",
                    note=f"{PUSH_P99_AIM.text}; max {max(r.lags_ms):.0f} ms",
                    aim=PUSH_P99_AIM,
                )
            )
    return out


async def _one_backend(
    workdir: Path,
    google: Emulator,
    emails: list[str],
    pages: list[Pages],
    backend: str,
    processes: int,
    config: SyncBenchConfig,
) -> BackendResult:
    async with database(backend, workdir) as url:
        engine = await create_engine(url)
        try:
            settings = bench_settings(gateway_env(url, workdir, google.url, 0))
            prepared = await prepare_integrations(engine, settings, google, emails)
            baseline_rows = min(BASELINE_ROWS, max(config.integrations * config.events, 1_000))
            baseline_s = await raw_insert_baseline(engine, baseline_rows)
            parse_insert = await parse_insert_baseline(url, pages)
            events_only = await parse_insert_baseline(url, pages, with_blocks=False)
            # Push maintenance runs at its default interval (60 s): each calendar's first
            # channel opens as its first full sync commits (the scheduler's after-sync hook),
            # as in production. Until 2026-12-06 the bench ran a pass every second, from before
            # that hook existed: at 300 calendars a pass took up to 250 ms during the ingest.
            extra = {
                "GATEWAY_SYNC_CONCURRENCY": str(config.sync_concurrency),
                "GATEWAY_SYNC_TICK_S": "0.5",
            }
            async with gateways(processes, url, workdir, google.url, **extra) as running:
                cpu_before = [cpu_seconds(g.pid) for g in running]
                emulator_before = cpu_seconds(google.pid)
                writer_before = await writer_held_s(running[0].url)
                began = await insert_integrations(engine, prepared)
                await _wait(
                    engine,
                    select(func.count()).where(calendars.c.active_generation.is_not(None)),
                    len(emails),
                    config.timeout_s,
                    "full sync",
                )
                ingest_s = time.monotonic() - began
                gateway_cpu_s = sum(
                    cpu_seconds(g.pid) - b for g, b in zip(running, cpu_before, strict=True)
                )
                emulator_cpu_s = cpu_seconds(google.pid) - emulator_before
                writer_after = await writer_held_s(running[0].url)
                writer = None
                if writer_before is not None and writer_after is not None:
                    held_s = writer_after - writer_before
                    writer = WriterShare(held_s, held_s / ingest_s, held_s / len(emails) * 1000)
                events = await _scalar(engine, select(func.count()).select_from(calendar_events))
                live = (
                    select(func.count(func.distinct(watch_channels.c.calendar_id)))
                    .where(watch_channels.c.state == "active")
                    .scalar_subquery()
                )
                await _wait(engine, select(live), len(emails), config.timeout_s, "push channels")
                channels_s = time.monotonic() - began
                changes = config.push_changes if config.push_changes is not None else len(emails)
                targets = list(prepared.emails.items())[:changes]
                push_before = [cpu_seconds(g.pid) for g in running]
                lags = await push_lags(
                    google, [g.url for g in running], prepared.api_key, targets, config
                )
                push_cpu_s = sum(
                    cpu_seconds(g.pid) - b for g, b in zip(running, push_before, strict=True)
                )
        finally:
            await engine.dispose()
    return BackendResult(
        backend,
        processes,
        events,
        ingest_s,
        baseline_rows,
        baseline_s,
        channels_s,
        lags,
        gateway_cpu_s,
        emulator_cpu_s,
        parse_insert,
        events_only,
        push_cpu_s,
        writer,
    )


async def _scalar(engine: AsyncEngine, query: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def _wait(engine: AsyncEngine, query: Any, target: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while (found := await _scalar(engine, query)) < target:
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: {found} of {target} after {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)


async def raw_insert_baseline(engine: AsyncEngine, rows: int) -> float:
    """Seconds to INSERT `rows` event rows with executemany (BASELINE_CHUNK per statement, one
    transaction per statement, as a sync writes pages); the rows are deleted afterwards."""
    now = datetime.now(UTC)
    row = {
        "calendar_id": "cal_bench_baseline",
        "generation": 1,
        "status": "confirmed",
        "transparency": "opaque",
        "self_declined": False,
        "event_type": "default",
        "all_day": False,
        "start_at": now,
        "end_at": now + timedelta(hours=1),
        "start_date": None,
        "end_date": None,
        "time_zone": "UTC",
        "recurrence": None,
        "recurring_event_id": None,
        "original_start": None,
        "etag": '"3181161784712000"',
        "updated": now.isoformat(),
        "created_by_gateway": False,
        "details": None,
    }
    batches = [
        [{**row, "event_id": f"{n:032x}"} for n in range(i, min(rows, i + BASELINE_CHUNK))]
        for i in range(0, rows, BASELINE_CHUNK)
    ]
    began = time.perf_counter()
    for batch in batches:
        async with engine.begin() as conn:
            await conn.execute(insert(calendar_events), batch)
    seconds = time.perf_counter() - began
    async with engine.begin() as conn:
        await conn.execute(
            delete(calendar_events).where(calendar_events.c.calendar_id == "cal_bench_baseline")
        )
    return seconds


async def push_lags(
    google: Emulator,
    gateway_urls: list[str],
    api_key: str,
    targets: list[tuple[str, str]],
    config: SyncBenchConfig,
) -> list[float]:
    """For each (integration id, address): make one new event at Google and watch free/busy
    until it shows; returns the lags in ms.

    One watcher asks `POST /v1/freebusy` for every change in flight each VISIBLE_POLL_S, the
    gateways in turn. Until 2026-12-06 each change polled its own `GET .../freebusy` every
    VISIBLE_POLL_S: with 8 changes in flight that was 400 requests a second, ~3.5 ms of the
    gateway's CPU per change on the machines here (a fifth of it), and the lag, which follows
    the gateway's CPU per change, carried the observer's load as well as the push path's."""
    headers = {"Authorization": f"Bearer {api_key}"}
    # A week well inside the sync horizon and beyond the seeded events (+-60 days).
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    week_start = day + timedelta(days=200)
    window = {
        "time_min": rfc3339(week_start),
        "time_max": rfc3339(week_start + timedelta(days=7)),
    }
    if len({integration_id for integration_id, _ in targets}) != len(targets):
        raise BenchError("push_lags takes each integration once")
    gate = asyncio.Semaphore(config.push_parallel)
    lags: list[float] = []
    watched: dict[str, _Watched] = {}
    something = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=config.push_parallel * 2)

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:

        async def busy(n: int, integration_id: str) -> list[tuple[datetime, datetime]]:
            base = gateway_urls[n % len(gateway_urls)]
            url = f"{base}/v1/integrations/{integration_id}/freebusy"
            async with http.get(url, params=window, headers=headers) as r:
                if r.status != 200:
                    raise BenchError(f"freebusy answered {r.status}: {(await r.text())[:300]}")
                return _spans(await r.json())

        async def look(n: int, ids: list[str]) -> None:
            url = f"{gateway_urls[n % len(gateway_urls)]}/v1/freebusy"
            body = {"integration_ids": ids, **window}
            async with http.post(url, json=body, headers=headers) as r:
                if r.status != 200:
                    raise BenchError(f"freebusy answered {r.status}: {(await r.text())[:300]}")
                results = (await r.json())["results"]
            now = time.monotonic()
            for integration_id, result in zip(ids, results, strict=True):
                if "problem" in result:
                    raise BenchError(f"freebusy answered a problem: {result['problem']}")
                change = watched[integration_id]
                if any(s <= change.start and change.end <= e for s, e in _spans(result)):
                    lags.append((now - change.began) * 1000)
                    del watched[integration_id]
                    change.shown.set_result(None)
                elif now > change.began + 60:
                    raise BenchError("a pushed change was not visible within 60 s")

        async def watch() -> None:
            n = 0
            try:
                while True:
                    if not watched:
                        something.clear()
                        await something.wait()
                    ids = list(watched)
                    for k in range(0, len(ids), MAX_INTEGRATIONS):
                        n += 1
                        await look(n, ids[k : k + MAX_INTEGRATIONS])
                    await asyncio.sleep(VISIBLE_POLL_S)
            except BaseException as exc:  # every change waiting fails with the watcher
                for change in watched.values():
                    if not change.shown.done():
                        change.shown.set_exception(
                            exc if isinstance(exc, Exception) else BenchError("watcher stopped")
                        )
                raise

        async def one(n: int, integration_id: str, email: str) -> None:
            async with gate:
                before = await busy(n, integration_id)
                start = _free_slot(before, week_start)
                end = start + timedelta(minutes=30)
                began = time.monotonic()
                await google.insert_event(email, start, end)
                shown = asyncio.get_running_loop().create_future()
                watched[integration_id] = _Watched(start, end, began, shown)
                something.set()
                await shown

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(*(one(n, i, e) for n, (i, e) in enumerate(targets)))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, BenchError):
                await watcher
    return lags


@dataclass(frozen=True)
class _Watched:
    """A change made at Google whose busy time the watcher waits for."""

    start: datetime
    end: datetime
    began: float  # time.monotonic() when it was made
    shown: asyncio.Future[None]


def _spans(freebusy: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    return [
        (datetime.fromisoformat(b["start"]), datetime.fromisoformat(b["end"]))
        for b in freebusy["busy"]
    ]


def _free_slot(busy: list[tuple[datetime, datetime]], week_start: datetime) -> datetime:
    """The first half hour from 08:00 UTC on of the week that no busy interval touches."""
    slot = week_start + timedelta(hours=8)
    while any(s < slot + timedelta(minutes=30) and slot < e for s, e in busy):
        slot += timedelta(minutes=30)
    return slot


def scaled(config: SyncBenchConfig, **changes: Any) -> SyncBenchConfig:
    return replace(config, **changes)
