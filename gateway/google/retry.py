"""Retrying transient Google failures: truncated exponential backoff with full jitter.

A `RetryPolicy` is a value, passed to whoever calls Google:

    policy = RetryPolicy(attempts=4, base_s=0.5, max_s=8.0, budget_s=20.0)
    grant = await policy.run(lambda: oauth.refresh(token))

Attempt n (0-based) failing with a retryable error waits `rng() * min(max_s, base_s * 2**n)`
(`gateway.backoff`, the formula every retry in the gateway uses), or Google's `retry_after_s`
if that is longer. It gives up, re-raising the last error, after `attempts`
tries or when the next wait would end past `budget_s` from the first try: a caller holding a
user's request must answer within a bounded time. Only `TransientGoogleError` is retried by
default; an `InvalidGrant` or a misconfigured client never gets better by waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.backoff import backoff_s
from gateway.google.errors import TransientGoogleError

log = logging.getLogger(__name__)

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. `attempts` counts the first try."""

    attempts: int = 4
    base_s: float = 0.5
    max_s: float = 8.0
    budget_s: float = 20.0
    retry_on: tuple[type[BaseException], ...] = (TransientGoogleError,)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_s < 0 or self.max_s < 0 or self.budget_s < 0:
            raise ValueError("base_s, max_s and budget_s must not be negative")

    def backoff_s(self, retry: int, rng: Callable[[], float], retry_after_s: float | None) -> float:
        """The wait before retry number `retry` (0 = the wait after the first failure)."""
        return backoff_s(
            retry, base_s=self.base_s, max_s=self.max_s, rng=rng(), retry_after_s=retry_after_s
        )

    async def run(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> T:
        """Call `fn` until it succeeds, fails with a non-retryable error, or the attempts or
        the budget run out (then the last error is raised unchanged)."""
        started = clock()
        retry = 0
        while True:
            try:
                return await fn()
            except self.retry_on as exc:
                if retry + 1 >= self.attempts:
                    raise
                retry_after = getattr(exc, "retry_after_s", None)
                delay = self.backoff_s(
                    retry, rng, retry_after if isinstance(retry_after, int | float) else None
                )
                if clock() - started + delay > self.budget_s:
                    raise
                # The message is built to be safe (no tokens): see gateway.google.errors.
                log.info("retrying in %.2fs after %s (try %d)", delay, exc, retry + 1)
                await sleep(delay)
                retry += 1
