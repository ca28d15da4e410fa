"""`calendar-gateway bench api`: requests/s and latency of cached free/busy against a bare
aiohttp handler, measured in the same run by the same load generator.

One run: a bare aiohttp server (`gateway.bench.bare`) and, per backend, one gateway process
(`calendar-gateway serve`) whose integration's primary calendar holds a generated 1,000-event
calendar, fully synced before the load starts. A separate load process
(`gateway.bench.load`) keeps `concurrency` connections busy on loopback against the bare
handler, then against `GET /v1/integrations/{id}/freebusy` for a one-week window (answered from
the local copy: `source` cache). A one-connection run gives the single-request latency.

Aims (issue 6): free/busy throughput at least one third of the bare handler's; p99 under
20 ms.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from sqlalchemy import func, select

from gateway.bench.load import LoadResult, run_load
from gateway.bench.procs import BenchError, free_port, process
from gateway.bench.report import Figure
from gateway.bench.setup import (
    bench_emails,
    bench_settings,
    database,
    emulator,
    gateway_env,
    gateways,
    insert_integrations,
    prepare_integrations,
)
from gateway.db.engine import create_engine
from gateway.db.schema import calendars


@dataclass(frozen=True)
class ApiBenchConfig:
    events: int = 1_000
    backends: tuple[str, ...] = ("sqlite", "postgres")
    concurrency: int = 64
    duration_s: float = 5.0
    warmup_s: float = 1.0
    single_duration_s: float = 2.0  # the one-connection run (0: skip it)
    timeout_s: float = 300.0


async def run_api_bench(workdir: Path, config: ApiBenchConfig) -> list[Figure]:
    """Run the benchmark (module doc) under `workdir`."""
    out: list[Figure] = []
    port = free_port()
    async with process(
        "bare aiohttp server",
        ["-m", "gateway.bench.bare", "--port", str(port)],
        log_path=workdir / "bare.log",
        ready_url=f"http://127.0.0.1:{port}/healthz",
    ):
        bare = await _load(f"http://127.0.0.1:{port}/", {}, config, config.concurrency, workdir)
    out += [
        Figure(
            f"bare aiohttp handler, {config.concurrency} connections",
            bare.rps,
            "req/s",
            bare.rps,
            "bare",
            f"p50 {bare.p50_ms:.1f} ms, p99 {bare.p99_ms:.1f} ms",
        ),
    ]
    [email] = bench_emails(1, prefix="api")
    async with emulator(workdir) as google:
        await google.add_users([email], events=config.events)
        for backend in config.backends:
            out += await _one_backend(workdir, google, email, backend, bare, config)
    return out


async def _load(
    url: str,
    headers: dict[str, str],
    config: ApiBenchConfig,
    concurrency: int,
    workdir: Path,
    duration_s: float | None = None,
) -> LoadResult:
    result = await run_load(
        url,
        headers=headers,
        concurrency=concurrency,
        duration_s=config.duration_s if duration_s is None else duration_s,
        warmup_s=config.warmup_s,
        log_path=workdir / "load.log",
    )
    if result.requests == 0:
        raise BenchError(f"no request succeeded ({result.errors} errors)")
    return result


async def _one_backend(
    workdir: Path,
    google: object,
    email: str,
    backend: str,
    bare: LoadResult,
    config: ApiBenchConfig,
) -> list[Figure]:
    from gateway.bench.setup import Emulator

    assert isinstance(google, Emulator)
    label = "SQLite" if backend == "sqlite" else "PostgreSQL"
    async with database(backend, workdir) as url:
        engine = await create_engine(url)
        try:
            settings = bench_settings(gateway_env(url, workdir, google.url, 0))
            prepared = await prepare_integrations(engine, settings, google, [email])
            async with gateways(1, url, workdir, google.url) as [gateway]:
                await insert_integrations(engine, prepared)
                deadline = time.monotonic() + config.timeout_s
                synced = select(func.count()).where(calendars.c.active_generation.is_not(None))
                while True:
                    async with engine.connect() as conn:
                        if (await conn.execute(synced)).scalar_one() >= 1:
                            break
                    if time.monotonic() > deadline:
                        raise BenchError("the bench calendar was not synced in time")
                    await asyncio.sleep(0.2)
                [integration_id] = prepared.emails
                start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
                query = urlencode(
                    {
                        "time_min": start.isoformat().replace("+00:00", "Z"),
                        "time_max": (start + timedelta(days=7)).isoformat().replace("+00:00", "Z"),
                    }
                )
                target = f"{gateway.url}/v1/integrations/{integration_id}/freebusy?{query}"
                headers = {"Authorization": f"Bearer {prepared.api_key}"}
                busy = await _check_cached(target, headers)
                many = await _load(target, headers, config, config.concurrency, workdir)
                one = (
                    await _load(target, headers, config, 1, workdir, config.single_duration_s)
                    if config.single_duration_s > 0
                    else None
                )
        finally:
            await engine.dispose()
    figures = [
        Figure(
            f"freebusy from cache ({label}), {config.concurrency} connections",
            many.rps,
            "req/s",
            bare.rps,
            "bare",
            f"one week, {busy} busy intervals; {many.errors} errors; aim >= 0.33x",
        ),
        Figure(f"freebusy p50 ({label}), {config.concurrency} connections", many.p50_ms, "ms"),
        Figure(
            f"freebusy p99 ({label}), {config.concurrency} connections",
            many.p99_ms,
            "ms",
            bare.p99_ms,
            "bare p99",
            "aim < 20 ms",
        ),
    ]
    if one is not None:
        figures.append(
            Figure(
                f"freebusy single request p50 ({label})",
                one.p50_ms,
                "ms",
                note=f"one connection: {one.rps:,.0f} req/s, p99 {one.p99_ms:.1f} ms",
            )
        )
    return figures


async def _check_cached(url: str, headers: dict[str, str]) -> int:
    """One free/busy call before the load: answered from the cache; returns how many busy
    intervals it holds."""
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        body = await response.json()
        if response.status != 200 or body.get("source") != "cache":
            raise BenchError(f"free/busy is not answered from the cache: {response.status}")
    return len(body["busy"])
