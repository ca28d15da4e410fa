"""Helpers of the webhook delivery tests: an endpoint made over the API, a clock that moves when
told, and delivery workers the test drives (closed by the `workers` fixture after it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from gateway.clock import utc_now
from gateway.http.appkeys import ENDPOINTS_KEY, WEBHOOK_STORE_KEY
from gateway.webhooks.destinations import DestinationPolicy
from gateway.webhooks.worker import DeliveryWorker
from tests.support.stack import Stack, loopback_only

LOOPBACK = DestinationPolicy(allow_insecure_loopback=True)


class Clock:
    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> Any:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Workers:
    """Delivery workers a test drives (loopback destinations, a fixed jitter, the test's clock),
    closed after it with their pooled connections."""

    def __init__(self) -> None:
        self._made: list[DeliveryWorker] = []

    def start(self, stack: Stack, clock: Clock | None = None, rng: float = 0.5) -> DeliveryWorker:
        kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
        made = DeliveryWorker(
            stack.app[WEBHOOK_STORE_KEY],
            stack.app[ENDPOINTS_KEY],
            LOOPBACK,
            loopback_only,
            owner="test-worker",
            rng=lambda: rng,
            **kwargs,
        )
        return self.adopt(made)

    def adopt(self, made: DeliveryWorker) -> DeliveryWorker:
        """Close `made` too after the test (a worker the test built itself)."""
        self._made.append(made)
        return made

    async def close(self) -> None:
        while self._made:
            await self._made.pop().close()


async def create_endpoint(
    stack: Stack, url: str, events: list[str], key: str | None = None
) -> dict[str, Any]:
    async with stack.http.post(
        stack.url("/v1/webhook-endpoints"),
        json={"url": url, "events": events, "description": "crm"},
        headers=stack.auth(key),
    ) as response:
        assert response.status == 201, await response.text()
        return dict(await response.json())
