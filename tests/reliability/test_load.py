"""A bounded load run on loopback: agent traffic while a full resync and a KEK rotation run.

Several agent clients ask for free/busy (one integration, cached and live from Google, and the
batch) and for slots at a steady rate for LOAD_S seconds. Meanwhile Alice's large calendar
loses its sync token at the emulator, so a full resync rebuilds it page by page; the KEK is
rotated and every data key rewrapped; and Google rate-limits a burst of live free/busy calls.
Every request must succeed (no 5xx, no connection error), and every answer must be complete
or say that it is not; no answer may show Alice's known meetings as free (the emulator's
truth), neither in free/busy (fresh or from a stale copy) nor in slots (where a person without
a complete answer is busy all along).

Latency and throughput are printed, never asserted (the machine is shared).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from emulator.seed import seed_calendar
from gateway.http.appkeys import SYNC_KEY, VAULT_KEY
from tests.support.availability import (
    ERIN,
    FRANK,
    at,
    connect,
    day,
    event,
    rate_limit,
    sync,
    z,
)
from tests.support.stack import ALICE, EmulatorSecrets, Stack, start_stack

LOAD_S = 10.0  # how long the agents send
CLIENTS = 4  # concurrent agent clients
INTERVAL_S = 0.05  # each client's pace: one request per interval (about 80 requests/s in all)
SEEDED_EVENTS = 1500  # Alice's large calendar
PAGE_ITEMS = 50  # the emulator's page size, so a full sync takes many pages
EXTRA_DEKS = 1000  # data keys for the rewrap to work through
RATE_LIMITED = 8  # live free/busy calls Google refuses half-way through
MEETINGS = [("09:00", "10:00"), ("11:30", "12:15"), ("14:00", "15:30"), ("16:45", "17:00")]


@pytest.fixture
def backend() -> str:
    """SQLite only: one bounded run is enough for CI (the fixtures run PostgreSQL elsewhere)."""
    return "sqlite"


@pytest.fixture
async def stack(
    engine: AsyncEngine, database_url: str, tmp_path: Path, emulator_secrets: EmulatorSecrets
) -> AsyncIterator[Stack]:
    """The suite's stack with live-call limits above this test's traffic: the agents' load is
    what is under test here, not an abuse the limits (tests/api/test_live_calls.py) refuse."""
    async for running in start_stack(
        engine,
        database_url,
        tmp_path,
        emulator_secrets=emulator_secrets,
        live_calls_per_min_per_key=100_000,
        live_calls_per_min_per_tenant=1_000_000,
    ):
        yield running


@pytest.fixture(autouse=True)
def production_log_levels() -> Iterator[None]:
    """The database drivers' DEBUG lines (one per statement) at WARNING, as
    `configure_logging` sets them in production: at DEBUG they would be most of the work."""
    names = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool")
    previous = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    yield
    for name, level in previous.items():
        logging.getLogger(name).setLevel(level)


Span = tuple[datetime, datetime]


@dataclass
class Tally:
    latencies_s: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    incomplete: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    answered: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered)

    def record(self, kind: str, started: float, finished: float) -> None:
        self.latencies_s.setdefault(kind, []).append(finished - started)
        self.answered.append((started, finished))

    def during(self, start: float, end: float) -> int:
        """Requests in flight at some moment of [start, end]."""
        return sum(1 for sent, done in self.answered if sent <= end and start <= done)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _covered(truth: list[Span], busy: list[dict[str, str]]) -> list[Span]:
    """The truth spans not fully inside one busy interval (busy intervals are merged)."""
    spans = [(_parse(b["start"]), _parse(b["end"])) for b in busy]
    return [t for t in truth if not any(s <= t[0] and t[1] <= e for s, e in spans)]


def _overlapping(truth: list[Span], slots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        s
        for s in slots
        if any(_parse(s["start"]) < end and start < _parse(s["end"]) for start, end in truth)
    ]


async def _agent(
    stack: Stack,
    n: int,
    ids: dict[str, str],
    window: dict[str, str],
    truth: list[Span],
    stop_at: float,
    tally: Tally,
) -> None:
    alice = ids[ALICE]
    everyone = list(ids.values())
    requests: list[tuple[str, str, str, dict[str, Any]]] = [
        ("freebusy cached", "GET", f"/v1/integrations/{alice}/freebusy", {"params": window}),
        (
            "freebusy live",
            "GET",
            f"/v1/integrations/{alice}/freebusy",
            {"params": {**window, "max_staleness_s": "0"}},
        ),
        (
            "freebusy batch",
            "POST",
            "/v1/freebusy",
            {"json": {"integration_ids": everyone, **window}},
        ),
        (
            "slots",
            "POST",
            "/v1/slots",
            {
                "json": {
                    "integration_ids": everyone,
                    "mode": "all",
                    "duration_minutes": 30,
                    "time_zone": "UTC",
                    **window,
                }
            },
        ),
    ]
    i = n
    next_at = time.perf_counter()
    while time.perf_counter() < stop_at:
        kind, method, path, options = requests[i % len(requests)]
        i += 1
        started = time.perf_counter()
        try:
            async with stack.http.request(
                method, stack.url(path), headers=stack.auth(), **options
            ) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.failures.append(f"{kind}: {type(exc).__name__}")
            continue
        tally.record(kind, started, time.perf_counter())
        if status != 200:
            tally.failures.append(f"{kind}: {status} {body}")
            continue
        _check(kind, body, alice, truth, tally)
        next_at += INTERVAL_S
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


def _check(kind: str, body: Any, alice: str, truth: list[Span], tally: Tally) -> None:
    if kind == "slots":
        # Complete or not: a person without a complete answer is busy the whole window.
        clash = _overlapping(truth, body["slots"])
        assert not clash, f"slots offered during Alice's meetings: {clash[:3]}"
        if not body["complete"]:
            tally.incomplete[kind] += 1
            assert body["incomplete_integration_ids"], body
        return
    answers = body["results"] if kind == "freebusy batch" else [body]
    for answer in answers:
        assert "problem" not in answer, answer
        tally.sources[answer["source"]] += 1
        states = {c["state"] for c in answer["calendars"].values()}
        if not answer["complete"]:
            # Honest: it says so, and names why per calendar.
            tally.incomplete[kind] += 1
            assert states - {"fresh"}, answer
        if answer["integration_id"] == alice and "error" not in states:
            # Fresh or a stale copy: either way Alice's meetings are in it.
            missing = _covered(truth, answer["busy"])
            assert not missing, f"{kind}: Alice's meetings shown as free: {missing}"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def test_agent_traffic_through_a_full_resync_and_a_rewrap(stack: Stack) -> None:
    prepared = time.perf_counter()
    google = stack.google
    google.calendars.max_page_items = PAGE_ITEMS
    ids = {email: await connect(stack, email) for email in (ALICE, ERIN, FRANK)}
    seed_calendar(
        google.calendars, google.calendars.ensure_user(ALICE), seed=11, count=SEEDED_EVENTS
    )
    d = day(4)
    truth = [(at(d, a), at(d, b)) for a, b in MEETINGS]
    for start, end in truth:
        event(stack, ALICE, start, end)
    event(stack, ERIN, at(d, "13:00"), at(d, "13:30"))
    calendars = {email: await sync(stack, iid) for email, iid in ids.items()}
    window = {"time_min": z(at(d, "07:00")), "time_max": z(at(d, "19:00"))}
    vault = stack.app[VAULT_KEY]
    for n in range(EXTRA_DEKS):
        await vault.ensure_data_key("load-tenant", f"int_load{n:020d}")

    engine = stack.app[SYNC_KEY]
    print(f"\nset-up: {time.perf_counter() - prepared:.1f} s")
    tally = Tally()
    began = time.perf_counter()
    stop_at = began + LOAD_S

    async def resync() -> tuple[float, float, int]:
        await asyncio.sleep(LOAD_S * 0.15)
        google.calendars.invalidate_sync_tokens(ALICE)
        started = time.perf_counter()
        outcome = await engine.sync_calendar(calendars[ALICE][0])
        assert outcome.status == "synced" and outcome.resynced, outcome
        return started, time.perf_counter(), outcome.pages

    async def rotate_and_rewrap() -> tuple[float, float, int]:
        await asyncio.sleep(LOAD_S * 0.3)
        started = time.perf_counter()
        version = await vault.rotate()
        result = await vault.rewrap(batch_size=200)
        assert result.total_remaining == 0 and result.unreadable == 0, result
        assert (await vault.dek_counts()) == {version: EXTRA_DEKS + len(ids)}
        return started, time.perf_counter(), result.rewrapped

    async def rate_limit_burst() -> None:
        # Google refuses Alice's next live free/busy calls: answers turn honestly incomplete.
        await asyncio.sleep(LOAD_S * 0.5)
        rate_limit(stack, ALICE, times=RATE_LIMITED)

    agents = [_agent(stack, n, ids, window, truth, stop_at, tally) for n in range(CLIENTS)]
    results = await asyncio.gather(resync(), rotate_and_rewrap(), rate_limit_burst(), *agents)
    (resync_from, resync_to, pages), (rewrap_from, rewrap_to, rewrapped) = results[:2]
    wall_s = time.perf_counter() - began

    everything = [v for values in tally.latencies_s.values() for v in values]
    print(
        f"\nload: {len(everything)} requests in {wall_s:.1f} s "
        f"({len(everything) / wall_s:.0f}/s, {CLIENTS} clients), "
        f"p50 {_pct(everything, 0.5):.1f} ms, p99 {_pct(everything, 0.99):.1f} ms"
    )
    for kind, values in sorted(tally.latencies_s.items()):
        print(
            f"  {kind:16} {len(values):5d}  p50 {_pct(values, 0.5):7.1f} ms"
            f"  p99 {_pct(values, 0.99):7.1f} ms"
        )
    during_resync = tally.during(resync_from, resync_to)
    during_rewrap = tally.during(rewrap_from, rewrap_to)
    print(
        f"  full resync: {pages} pages in {resync_to - resync_from:.2f} s,"
        f" {during_resync} requests during it; rotate + rewrap of {rewrapped} DEKs in"
        f" {rewrap_to - rewrap_from:.2f} s, {during_rewrap} requests during it"
    )
    print(
        f"  answers by source {dict(tally.sources)}; honestly incomplete"
        f" {dict(tally.incomplete) or 0}"
    )
    assert not tally.failures, tally.failures[:5]
    # The run really overlapped: a long resync and the rewrap, with agents asking meanwhile.
    assert pages >= 10
    assert during_resync > 0 and during_rewrap > 0
    assert tally.incomplete["freebusy live"] >= 1  # the burst was met with honest answers
    assert len(everything) >= CLIENTS * 4  # every kind of request was made by the agents
