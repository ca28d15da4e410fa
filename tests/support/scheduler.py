"""Helpers for tests that run the sync scheduler: a clock that moves when told, waiting for a
condition the background scheduler brings about, and Google event bodies and busy blocks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.clock import utc_now

EVERYTHING = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC))


class FakeClock:
    """Wall time that moves only when told (starts at the real now: tokens are real)."""

    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def set(self, when: datetime) -> None:
        self.now = max(self.now, when)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> None:
    """Wait for something the background scheduler does (a condition, not a duration)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


def event(event_id: str, start: str, end: str) -> dict[str, Any]:
    return {"id": event_id, "start": {"dateTime": start}, "end": {"dateTime": end}}


def blocks(*spans: tuple[str, str]) -> list[tuple[datetime, datetime]]:
    return [(datetime.fromisoformat(s), datetime.fromisoformat(e)) for s, e in spans]
