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
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.apikeys import SCOPES, ApiKeyStore
from gateway.bench.procs import BenchError
from gateway.bench.report import Figure
from gateway.bench.setup import database, gateways
from gateway.db.engine import create_engine
from gateway.webhooks.model import INTEGRATION_CONNECTED
from gateway.webhooks.outbox import record_event

TENANT = "bench"


@dataclass(frozen=True)
class WebhookBenchConfig:
    backends: tuple[str, ...] = ("sqlite", "postgres")
    rate: int = 100
    duration_s: float = 5.0
    burst: int = 1_000
    timeout_s: float = 120.0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _Receiver:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}  # marker -> monotonic arrival
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
        for backend in config.backends:
            figures.extend(await _one_backend(backend, workdir, config, receiver, port))
    finally:
        await runner.cleanup()
    return figures


async def _one_backend(
    backend: str, workdir: Path, config: WebhookBenchConfig, receiver: _Receiver, port: int
) -> list[Figure]:
    async with database(backend, workdir) as url:
        engine = await create_engine(url)
        try:
            key = (await ApiKeyStore(engine).create(TENANT, SCOPES, name="bench")).value
            # No Google is called: the outbox is fed directly. The unused address is loopback.
            async with gateways(
                1,
                url,
                workdir,
                "http://127.0.0.1:9",
                GATEWAY_SYNC_WORKER="false",
                GATEWAY_PUSH_ENABLED="false",
                GATEWAY_WEBHOOK_ALLOW_INSECURE_LOOPBACK="true",
                GATEWAY_WEBHOOK_TICK_S="0.05",
            ) as [gateway]:
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        f"{gateway.url}/v1/webhook-endpoints",
                        json={
                            "url": f"http://127.0.0.1:{port}/hook",
                            "events": [INTEGRATION_CONNECTED],
                        },
                        headers={"Authorization": f"Bearer {key}"},
                    ) as response,
                ):
                    if response.status != 201:
                        raise BenchError(f"creating the endpoint: {response.status}")

                async def emit(marker: str) -> float:
                    async with engine.begin() as conn:
                        await record_event(
                            conn,
                            INTEGRATION_CONNECTED,
                            {"integration_id": marker, "status": "active"},
                            now=_now(),
                            tenant_id=TENANT,
                        )
                    return time.monotonic()

                # Paced.
                committed: dict[str, float] = {}
                count = int(config.rate * config.duration_s)
                start = time.monotonic()
                for n in range(count):
                    due = start + n / config.rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    marker = f"{backend}-paced-{n}"
                    committed[marker] = await emit(marker)
                await receiver.wait_for(set(committed), config.timeout_s)
                lags = [(receiver.arrived[m] - t) * 1000 for m, t in committed.items()]

                # Burst.
                markers = [f"{backend}-burst-{n}" for n in range(config.burst)]
                burst_start = time.monotonic()
                async with engine.begin() as conn:
                    for marker in markers:
                        await record_event(
                            conn,
                            INTEGRATION_CONNECTED,
                            {"integration_id": marker, "status": "active"},
                            now=_now(),
                            tenant_id=TENANT,
                        )
                await receiver.wait_for(set(markers), config.timeout_s)
                last = max(receiver.arrived[m] for m in markers)
                rate = config.burst / max(last - burst_start, 1e-9)
        finally:
            await engine.dispose()
    note = f"{backend}, {config.rate}/s for {config.duration_s:g} s"
    return [
        Figure(f"webhook lag p50 ({backend})", _percentile(lags, 0.5), "ms", note=note),
        Figure(
            f"webhook lag p99 ({backend})",
            _percentile(lags, 0.99),
            "ms",
            note=f"{note}; aim < 1000 ms",
        ),
        Figure(
            f"webhook deliveries/s ({backend})",
            rate,
            "/s",
            note=f"{backend}, a burst of {config.burst} events, one endpoint",
        ),
    ]


def _now() -> datetime:
    return datetime.now(UTC)
