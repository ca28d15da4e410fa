"""`calendar-gateway bench webhooks`: outbound webhook delivery to a local receiver.

One run per backend: a gateway process (`calendar-gateway serve`, its delivery worker on) and,
in this process, a receiver on loopback (an aiohttp server that answers 204) registered as the
bench tenant's endpoint. Events are put in the outbox as a status change does
(`gateway.webhooks.outbox.record_event` in a transaction of their own):

- paced: `rate` events per second for `duration_s`; the lag of each is from its commit to its
  arrival at the receiver (p50 and p99). Aim (issue 15): p99 under 1 s at 100 events/s.
- burst: `burst` events committed at once; events delivered per second until the last
  arrives. Aim: not below the sync's change rate.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.apikeys import SCOPES, ApiKeyStore
from gateway.bench.procs import BenchError
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
from gateway.db.engine import create_engine
from gateway.db.schema import watch_channels, webhook_deliveries, webhook_events
from gateway.webhooks.model import AVAILABILITY_CHANGED, INTEGRATION_CONNECTED
from gateway.webhooks.outbox import record_event

TENANT = "bench"
# Changes in flight at Google at a time in the sync phase (as `bench sync` pushes).
CHANGES_PARALLEL = 16
POLL_S = 0.05


# Issue 15's aims.
LAG_P99_AIM = Aim("<", 1000, unit="ms")
DELIVERY_AIM = Aim(">=", 1, on_ratio=True)


@dataclass(frozen=True)
class WebhookBenchConfig:
    backends: tuple[str, ...] = ("sqlite", "postgres")
    rate: int = 100
    duration_s: float = 5.0
    burst: int = 1_000
    integrations: int = 100  # sync phase: one change at Google per integration (0: skip)
    timeout_s: float = 120.0


class _Receiver:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}  # marker (data.integration_id) -> monotonic arrival
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.arrived.setdefault(str(body["data"]["integration_id"]), time.monotonic())
        self.changed.set()
        return web.Response(status=204)

    async def wait_for(self, markers: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not markers <= self.arrived.keys():
            if time.monotonic() > deadline:
                missing = len(markers - self.arrived.keys())
                raise BenchError(f"{missing} webhook deliveries never arrived")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 1.0)
            except TimeoutError:
                continue


async def run_webhook_bench(workdir: Path, config: WebhookBenchConfig) -> list[Figure]:
    receiver = _Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    figures: list[Figure] = []
    try:
        async with emulator(workdir) as google:
            for backend in config.backends:
                figures.extend(await _one_backend(backend, workdir, config, receiver, port, google))
    finally:
        await runner.cleanup()
    return figures


async def _one_backend(
    backend: str,
    workdir: Path,
    config: WebhookBenchConfig,
    receiver: _Receiver,
    port: int,
    google: Emulator,
) -> list[Figure]:
    emails = bench_emails(config.integrations, prefix=f"hook-{backend}-")
    if emails:
        await google.add_users(emails, events=10)
    async with database(backend, workdir) as url:
        engine = await create_engine(url)
        try:
            key = (await ApiKeyStore(engine).create(TENANT, SCOPES, name="bench")).value
            settings = bench_settings(gateway_env(url, workdir, google.url, 0))
            prepared = await prepare_integrations(engine, settings, google, emails)
            async with gateways(
                1,
                url,
                workdir,
                google.url,
                GATEWAY_WEBHOOK_ALLOW_INSECURE_LOOPBACK="true",
                GATEWAY_WEBHOOK_TICK_S="0.05",
                # Every change announced at once: the sync's whole change rate reaches the outbox.
                GATEWAY_WEBHOOK_AVAILABILITY_COALESCE_S="0",
                GATEWAY_SYNC_TICK_S="0.5",
                GATEWAY_PUSH_MAINTENANCE_INTERVAL_S="1",
            ) as [gateway]:
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        f"{gateway.url}/v1/webhook-endpoints",
                        json={
                            "url": f"http://127.0.0.1:{port}/hook",
                            "events": [INTEGRATION_CONNECTED, AVAILABILITY_CHANGED],
                        },
                        headers={"Authorization": f"Bearer {key}"},
                    ) as response,
                ):
                    if response.status != 201:
                        raise BenchError(f"creating the endpoint: {response.status}")
                if emails:
                    # Synced and pushing before anything is measured.
                    await insert_integrations(engine, prepared)
                    await _until(engine, _LIVE_CHANNELS, len(emails), config.timeout_s, "push")
                lags = await _paced(engine, receiver, backend, config)
                burst_rate, attempts = await _burst(engine, receiver, backend, config)
                sync = (
                    await _sync_changes(engine, receiver, google, prepared.emails, config)
                    if emails
                    else None
                )
        finally:
            await engine.dispose()
    note = f"{backend}, {config.rate}/s for {config.duration_s:g} s"
    figures = [
        Figure(f"webhook lag p50 ({backend})", percentile(lags, 0.5), "ms", note=note),
        Figure(
            f"webhook lag p99 ({backend})",
            percentile(lags, 0.99),
            "ms",
            note=f"{note}; {LAG_P99_AIM.text}",
            aim=LAG_P99_AIM,
        ),
    ]
    burst_note = (
        f"a burst of {config.burst} events, one endpoint, from their commit; "
        f"{attempts:.2f} attempts per delivery"
    )
    if sync is None:
        figures.append(
            Figure(f"webhook deliveries/s ({backend})", burst_rate, "/s", note=burst_note)
        )
        return figures
    figures += [
        Figure(
            f"sync change rate ({backend})",
            sync.change_rate,
            "/s",
            note=(
                f"{sync.changes} changes at Google ({CHANGES_PARALLEL} in flight) to "
                "availability.changed in the outbox"
            ),
        ),
        Figure(
            f"webhook deliveries/s ({backend})",
            burst_rate,
            "/s",
            sync.change_rate,
            "sync change rate",
            note=f"{burst_note}; {DELIVERY_AIM.text}",
            aim=DELIVERY_AIM,
        ),
        Figure(
            f"webhook lag from a change at Google p50 ({backend})",
            percentile(sync.lags_ms, 0.5),
            "ms",
            note="change -> push -> sync -> outbox -> delivery",
        ),
        Figure(
            f"webhook lag from a change at Google p99 ({backend})",
            percentile(sync.lags_ms, 0.99),
            "ms",
            note=(
                f"{sync.changes} changes in {sync.changes_s:.1f} s, "
                f"{sync.delivered_rate:.0f} delivered/s"
            ),
        ),
    ]
    return figures


async def _emit(engine: AsyncEngine, markers: list[str]) -> float:
    """Commit one integration.connected per marker (in one transaction) as a status change
    does; returns the instant (monotonic) of the commit."""
    async with engine.begin() as conn:
        for marker in markers:
            await record_event(
                conn,
                INTEGRATION_CONNECTED,
                {"integration_id": marker, "status": "active"},
                now=_now(),
                tenant_id=TENANT,
            )
    return time.monotonic()


async def _paced(
    engine: AsyncEngine, receiver: _Receiver, backend: str, config: WebhookBenchConfig
) -> list[float]:
    """`rate` events a second for `duration_s`; the lag (ms) of each from commit to arrival."""
    committed: dict[str, float] = {}
    count = int(config.rate * config.duration_s)
    start = time.monotonic()
    for n in range(count):
        delay = start + n / config.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        marker = f"{backend}-paced-{n}"
        committed[marker] = await _emit(engine, [marker])
    await receiver.wait_for(set(committed), config.timeout_s)
    return [(receiver.arrived[m] - t) * 1000 for m, t in committed.items()]


async def _burst(
    engine: AsyncEngine, receiver: _Receiver, backend: str, config: WebhookBenchConfig
) -> tuple[float, float]:
    """`burst` events committed at once; returns deliveries/s from the commit until the last
    arrives, and attempts made per delivery (above 1: some were sent twice or retried)."""
    markers = [f"{backend}-burst-{n}" for n in range(config.burst)]
    committed = await _emit(engine, markers)
    await receiver.wait_for(set(markers), config.timeout_s)
    last = max(receiver.arrived[m] for m in markers)
    async with engine.connect() as conn:
        attempts = (
            await conn.execute(
                select(func.sum(webhook_deliveries.c.attempts), func.count()).where(
                    webhook_deliveries.c.state == "delivered"
                )
            )
        ).one()
    return config.burst / max(last - committed, 1e-9), int(attempts[0]) / max(int(attempts[1]), 1)


@dataclass(frozen=True)
class _SyncResult:
    changes: int
    changes_s: (
        float  # from the first change at Google until the last event is committed (+- POLL_S)
    )
    change_rate: float  # events the sync put in the outbox per second
    delivered_rate: float  # the same events delivered per second (bounded by the sync)
    lags_ms: list[float]  # each change at Google -> its event delivered


async def _sync_changes(
    engine: AsyncEngine,
    receiver: _Receiver,
    google: Emulator,
    emails: dict[str, str],
    config: WebhookBenchConfig,
) -> _SyncResult:
    """One new event per integration "in Google Calendar", `CHANGES_PARALLEL` at a time: the
    emulator pushes, the sync applies the delta and records availability.changed in the same
    transaction, the worker delivers it. The sync's change rate is how fast those events
    reach the outbox; the lag is from each change to its delivery."""
    await _until(engine, _IDLE_OUTBOX, 0, config.timeout_s, "the outbox to drain", below=True)
    for integration_id in emails:
        receiver.arrived.pop(integration_id, None)  # an earlier announcement is not this one
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = day + timedelta(days=20, hours=9)
    gate = asyncio.Semaphore(CHANGES_PARALLEL)
    changed: dict[str, float] = {}

    async def change(integration_id: str, email: str) -> None:
        async with gate:
            began = time.monotonic()
            await google.insert_event(email, start, start + timedelta(minutes=30))
            changed[integration_id] = began

    wall_began = datetime.now(UTC)
    began = time.monotonic()
    await asyncio.gather(*(change(i, e) for i, e in emails.items()))
    recorded = (
        select(func.count())
        .select_from(webhook_events)
        .where(
            webhook_events.c.type == AVAILABILITY_CHANGED,
            webhook_events.c.created_at >= wall_began,
        )
        .scalar_subquery()
    )
    # Polled, not read from created_at: an event counts once its transaction has committed.
    await _until(engine, select(recorded), len(emails), config.timeout_s, "sync changes")
    changes_s = max(time.monotonic() - began, 1e-9)
    await receiver.wait_for(set(emails), config.timeout_s)
    last_arrival = max(receiver.arrived[i] for i in emails)
    return _SyncResult(
        changes=len(emails),
        changes_s=changes_s,
        change_rate=len(emails) / changes_s,
        delivered_rate=len(emails) / max(last_arrival - began, 1e-9),
        lags_ms=[(receiver.arrived[i] - t) * 1000 for i, t in changed.items()],
    )


_LIVE_CHANNELS = select(
    select(func.count(func.distinct(watch_channels.c.calendar_id)))
    .where(watch_channels.c.state == "active")
    .scalar_subquery()
)
_IDLE_OUTBOX = select(
    select(func.count())
    .select_from(webhook_deliveries)
    .where(webhook_deliveries.c.state == "pending")
    .scalar_subquery()
)


async def _until(
    engine: AsyncEngine,
    query: Any,
    target: int,
    timeout_s: float,
    what: str,
    *,
    below: bool = False,
) -> None:
    """Poll `query` (one count) until it reaches `target` (or, `below`, falls to it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with engine.connect() as conn:
            found = int((await conn.execute(query)).scalar_one())
        if (found <= target) if below else (found >= target):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"waiting for {what}: {found} of {target} after {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)


def _now() -> datetime:
    return datetime.now(UTC)
