"""Shared helpers for the Calendar v3 emulator tests (no tests here).

`api` talks to the emulator over real HTTP as ALICE with the full calendar scope; `receiver` is a
real aiohttp webhook endpoint on 127.0.0.1 that records push notifications.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from emulator.calendar_api import PUSH_KEY
from emulator.calendar_store import Calendar, CalendarStore
from emulator.push import PushDispatcher
from tests.support.emulator import ALICE, RunningEmulator

Json = dict[str, Any]


@dataclass
class Api:
    """A thin Calendar v3 caller: returns (status, parsed JSON or None)."""

    http: aiohttp.ClientSession
    base: str
    token: str

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        all_headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        if raw is not None:
            all_headers["Content-Type"] = "application/json"
        async with self.http.request(
            method,
            self.base + "/calendar/v3/" + path,
            params=params,
            json=json,
            data=raw,
            headers=all_headers,
        ) as resp:
            text = await resp.text()
            import json as _json

            return resp.status, (_json.loads(text) if text else None)

    async def list_all(self, path: str, params: dict[str, str]) -> tuple[list[Json], list[Json]]:
        """Follow nextPageToken to the end: (all items, every page)."""
        pages: list[Json] = []
        items: list[Json] = []
        token: str | None = None
        for _ in range(1000):
            query = dict(params)
            if token:
                query["pageToken"] = token
            status, page = await self.call("GET", path, params=query)
            assert status == 200, page
            pages.append(page)
            items.extend(page["items"])
            token = page.get("nextPageToken")
            if not token:
                return items, pages
        raise AssertionError("paging never ended")


def timed(start: str, end: str, tz: str = "Europe/Berlin", **extra: Any) -> Json:
    """An event body with dateTime start/end in `tz`."""
    return {
        "start": {"dateTime": start, "timeZone": tz},
        "end": {"dateTime": end, "timeZone": tz},
        **extra,
    }


def error_of(body: Json) -> Json:
    """The first `errors[]` item of a Google error body, checking the envelope on the way."""
    error = body["error"]
    assert set(error) >= {"code", "message", "errors"}
    assert error["errors"][0]["message"] == error["message"]
    return dict(error["errors"][0])


@pytest.fixture
def store(emulator: RunningEmulator) -> CalendarStore:
    """The emulator's calendar store, with deterministic generated ids."""
    calendars = emulator.state.calendars
    calendars.rng = random.Random(1234)
    return calendars


@pytest.fixture
def alice_cal(store: CalendarStore) -> Calendar:
    return store.ensure_user(ALICE.email, "Europe/Berlin")


@pytest.fixture
def push(emulator: RunningEmulator) -> PushDispatcher:
    return emulator.app[PUSH_KEY]


@pytest.fixture
async def api(emulator: RunningEmulator, http: aiohttp.ClientSession) -> Api:
    return Api(http, emulator.base_url, emulator.token_for(ALICE))


@dataclass
class Receiver:
    """A webhook endpoint that records the headers of each notification it gets."""

    url: str
    received: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[dict[str, str]]:
        async def wait() -> None:
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(wait(), timeout_s)
        return self.received


@pytest.fixture
async def receiver(store: CalendarStore) -> AsyncIterator[Receiver]:
    store.allow_insecure_loopback_webhooks = True
    app = web.Application()
    holder: list[Receiver] = []

    async def hook(request: web.Request) -> web.Response:
        rec = holder[0]
        rec.bodies.append(await request.read())
        rec.received.append({k: v for k, v in request.headers.items() if k.startswith("X-Goog")})
        rec.arrived.set()
        return web.Response(status=200)

    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    holder.append(Receiver(str(server.make_url("/hook"))))
    try:
        yield holder[0]
    finally:
        await server.close()
