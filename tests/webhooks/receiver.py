"""A webhook receiver for tests: a real aiohttp server on 127.0.0.1 that verifies every
delivery with the `standardwebhooks` library (as a customer's app would) and answers what the
test scripts (by default 204)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    # Each answer is taken from the front of `script`; `default` once it is empty.
    script: list[web.StreamResponse | Callable[[], web.StreamResponse]] = field(
        default_factory=list
    )
    default_status: int = 204
    secrets: list[str] = field(default_factory=list)
    other_path_hits: int = 0
    # Set to hold requests until released (a crash test kills the sender meanwhile).
    gate: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                return True
            except WebhookVerificationError:
                continue
        return False

    def unique(self) -> dict[str, Received]:
        return {r.id: r for r in self.requests}

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.requests if r.payload["type"] == event_type]


@asynccontextmanager
async def receiver(port: int = 0) -> AsyncIterator[Receiver]:
    """A running receiver; `port` to come back up where an earlier one was."""
    state = Receiver(url="")

    async def hook(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        state.requests.append(Received(headers, body, state.verify(headers, body)))
        state.arrived.set()
        if state.gate is not None:
            await state.gate.wait()
        if state.script:
            answer = state.script.pop(0)
            return answer() if callable(answer) else answer
        return web.Response(status=state.default_status)

    async def elsewhere(_request: web.Request) -> web.Response:
        state.other_path_hits += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/elsewhere", elsewhere)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    state.url = str(server.make_url("/hook"))
    try:
        yield state
    finally:
        await server.close()
