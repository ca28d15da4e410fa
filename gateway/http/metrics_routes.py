"""`GET /metrics` (Prometheus text format), and how each request is counted and timed.

The endpoint is public like /healthz: it must be reachable by a scraper and holds only counts
and label values from bounded sets (no id, email or token). Deployments that expose the
gateway publicly should keep /metrics to the internal network at the load balancer.

Gauges of stored state are read from the database at each scrape (see
gateway.observability.metrics): integrations by status, live push channels, DEKs per KEK
version, sync lag. Vault operation counts come from the Vault's own cheap counters.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import and_, func, select

from gateway.clock import utc_now
from gateway.db.schema import calendars, integrations, watch_channels
from gateway.db.sqlite_writer import WriterQueue, writer_queue
from gateway.db.values import as_utc
from gateway.http.appkeys import ENGINE_KEY, VAULT_KEY
from gateway.observability.metrics import HTTP_LATENCY, HTTP_REQUESTS


def _route(request: web.Request) -> str:
    """The route template (`/v1/integrations/{integration_id}`), never the raw path, so ids do
    not become label values; unmatched paths share one label."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


# Methods a route can answer; anything else a client sends is counted as OTHER, so a caller
# cannot create label values (aiohttp accepts any token as a method).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# The labelled children, looked up once per (route, method, status): prometheus-client's
# `labels()` takes a lock and builds a key on every call, a third of the metrics' cost per
# request. Bounded by routes x methods x statuses.
_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(request: web.Request, status: int, seconds: float) -> None:
    """Count one answered request and its duration (called by gateway.http.middleware)."""
    route = _route(request)
    method = request.method if request.method in _METHODS else "OTHER"
    key = (route, method, status)
    found = _children.get(key)
    if found is None:
        found = _children[key] = (
            HTTP_REQUESTS.labels(route, method, str(status)),
            HTTP_LATENCY.labels(route),
        )
    found[0].inc()
    found[1].observe(seconds)


class _StateGauges:
    """Per-application gauges, refreshed from the database before each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.integrations = Gauge(
            "gateway_integrations",
            "Integrations by status.",
            ["status"],
            registry=self.registry,
        )
        self.channels = Gauge(
            "gateway_push_channels_live",
            "Google push channels active and not expired.",
            registry=self.registry,
        )
        self.calendars = Gauge(
            "gateway_sync_calendars",
            "Synced calendars by state.",
            ["state"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "gateway_sync_lag_seconds_max",
            "Largest age of a calendar's local copy among calendars of active integrations"
            " (0 for a calendar with a live push channel and no sync waiting).",
            registry=self.registry,
        )
        self.deks = Gauge(
            "gateway_vault_data_keys",
            "Data keys by the KEK version wrapping them.",
            ["kek_version"],
            registry=self.registry,
        )
        self.vault_ops = Counter(
            "gateway_vault_operations",
            "Vault operations in this process (seal, open, open_failed, destroy, rewrap).",
            ["operation"],
            registry=self.registry,
        )
        self._vault_seen: dict[str, int] = {}
        # SQLite's writer queue (gateway.db.sqlite_writer), on SQLite only: made at the first
        # scrape that finds one, so PostgreSQL deployments show no series that cannot move.
        self._writer: tuple[Counter, Counter, Counter] | None = None
        self._writer_seen = (0.0, 0.0, 0)

    async def refresh(self, app: web.Application, now: datetime) -> None:
        engine = app[ENGINE_KEY]
        live = and_(
            watch_channels.c.state == "active",
            (watch_channels.c.expires_at.is_(None)) | (watch_channels.c.expires_at > now),
        )
        async with engine.connect() as conn:
            by_status = (
                await conn.execute(
                    select(integrations.c.status, func.count()).group_by(integrations.c.status)
                )
            ).all()
            channel_count = (
                await conn.execute(select(func.count()).select_from(watch_channels).where(live))
            ).scalar_one()
            by_state = (
                await conn.execute(
                    select(calendars.c.state, func.count()).group_by(calendars.c.state)
                )
            ).all()
            pushed = select(watch_channels.c.calendar_id).where(live)
            rows = (
                await conn.execute(
                    select(
                        calendars.c.last_success_at,
                        calendars.c.sync_requested_at,
                        calendars.c.id.in_(pushed).label("push"),
                    )
                    .join(integrations, integrations.c.id == calendars.c.integration_id)
                    .where(integrations.c.status == "active")
                )
            ).all()
        self.integrations.clear()
        for status, count in by_status:
            self.integrations.labels(status).set(count)
        self.channels.set(channel_count)
        self.calendars.clear()
        for state, count in by_state:
            self.calendars.labels(state).set(count)
        worst = 0.0
        for last_success, requested, push in rows:
            if push and requested is None and last_success is not None:
                continue
            seen = as_utc(last_success)
            if seen is not None:
                worst = max(worst, (now - seen).total_seconds())
        self.lag.set(worst)
        vault = app[VAULT_KEY]
        self.deks.clear()
        for version, count in (await vault.dek_counts()).items():
            self.deks.labels(str(version)).set(count)
        for operation, count in vault.operations.items():
            delta = count - self._vault_seen.get(operation, 0)
            if delta > 0:
                self.vault_ops.labels(operation).inc(delta)
            self._vault_seen[operation] = count
        queue = writer_queue(engine)
        if queue is not None:
            self._count_writer(queue)

    def _count_writer(self, queue: WriterQueue) -> None:
        if self._writer is None:
            self._writer = (
                Counter(
                    "gateway_sqlite_writer_held_seconds",
                    "Time SQLite's one writer was held by this process's write transactions"
                    " (its rate near 1: writes queue; see docs/operations.md).",
                    registry=self.registry,
                ),
                Counter(
                    "gateway_sqlite_writer_wait_seconds",
                    "Time this process's write transactions waited for SQLite's writer.",
                    registry=self.registry,
                ),
                Counter(
                    "gateway_sqlite_writer_transactions",
                    "Write transactions of this process that held SQLite's writer (one"
                    " for one-statement writes that shared a turn).",
                    registry=self.registry,
                ),
            )
        now = (queue.held_s, queue.waited_s, queue.transactions)
        for counter, total, seen in zip(self._writer, now, self._writer_seen, strict=True):
            if total > seen:
                counter.inc(total - seen)
        self._writer_seen = now


_GAUGES = web.AppKey("metrics_gauges", _StateGauges)


async def metrics(request: web.Request) -> web.Response:
    gauges = request.app[_GAUGES]
    await gauges.refresh(request.app, utc_now())
    body = generate_latest(REGISTRY) + generate_latest(gauges.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app[_GAUGES] = _StateGauges()
    app.router.add_get("/metrics", metrics)
