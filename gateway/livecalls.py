"""Calls to Google made live on a caller's behalf: limited per API key and per tenant, and
identical live free/busy questions answered once.

A free/busy the local copy cannot answer, and every booking call, goes to Google while the
agent waits. Without limits one key could spend the users' Google quota (50 integrations per
`POST /v1/freebusy`, as fast as it can send them) and starve every other tenant. So:

* `caller_bound(tenant_id, key_id)` names who a request acts for (bound by the bearer-auth
  decorator and the MCP endpoint, a context variable like the request id: tasks the request
  starts inherit it). Background work (sync, push channels) binds no caller and is not
  limited here: the scheduler paces it.
* `LiveCallLimits.admit()` runs before each Google call of the availability and booking clients
  (`CalendarClient(before_send=...)`): a token from the key's bucket and one from the tenant's
  bucket (gateway.ratelimit), or `TooManyRequests` (429 `live_calls_limited`, `Retry-After`)
  and no call. A call refused by either bucket spends from neither.
* `SharedAnswers` serves repeated identical live questions from one answer: while a question
  is at Google, the same question joins it (single flight); once answered, the answer is
  reused for `ttl` (a few seconds) and never beyond the asker's own `max_staleness`, with the
  time Google answered as its `as_of`. Keys hold the tenant, the integration, the calendars and
  the window: nothing is shared across tenants or integrations. Failures are not kept. A
  booking's own free check never uses it (it must see the booking made a moment before), and
  a booking write drops the integration's kept answers (`forget`). The
  availability service checks that the integration may be used (not disconnected, not
  `needs_reauth`) before it asks, on every request, so a kept answer never serves an
  integration that stopped being usable.

Label values of the metrics are bounded: which limit (`api_key`, `tenant`), how an answer was
shared (`in_flight`, `recent`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from gateway.clock import utc_now
from gateway.errors import TooManyRequests
from gateway.observability.metrics import LIVE_ANSWERS_SHARED, LIVE_CALLS_REFUSED
from gateway.ratelimit import TokenBuckets

T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who the current request acts for (ids only: never the key's secret)."""

    tenant_id: str
    key_id: str


_CALLER: ContextVar[Caller | None] = ContextVar("gateway_live_caller", default=None)


def bind_caller(tenant_id: str, key_id: str) -> Token[Caller | None]:
    """Bind the caller until `unbind_caller(token)`: the plain form of `caller_bound`, for the
    authentication wrapper on every request (a context manager costs a generator)."""
    return _CALLER.set(Caller(tenant_id, key_id))


def unbind_caller(token: Token[Caller | None]) -> None:
    _CALLER.reset(token)


@contextmanager
def caller_bound(tenant_id: str, key_id: str) -> Iterator[Caller]:
    """Live Google calls made inside count against this key and tenant."""
    caller = Caller(tenant_id, key_id)
    token = _CALLER.set(caller)
    try:
        yield caller
    finally:
        _CALLER.reset(token)


def current_caller() -> Caller | None:
    return _CALLER.get()


class LiveCallLimits:
    """Token buckets per API key and per tenant for live Google calls (module doc)."""

    def __init__(
        self,
        *,
        per_key_per_min: int,
        per_tenant_per_min: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # A bucket holds a minute's allowance: a batch may spend it at once, then the rate holds.
        self._keys = TokenBuckets(rate_per_min=per_key_per_min, clock=clock)
        self._tenants = TokenBuckets(rate_per_min=per_tenant_per_min, clock=clock)

    def __repr__(self) -> str:
        return f"LiveCallLimits(per_key={self._keys!r}, per_tenant={self._tenants!r})"

    def admit(self) -> None:
        """Spend one live call of the current caller, or raise TooManyRequests. No caller
        bound (background work): admitted without counting."""
        caller = _CALLER.get()
        if caller is None:
            return
        key_wait = self._keys.wait_s(caller.key_id)
        tenant_wait = self._tenants.wait_s(caller.tenant_id)
        if key_wait > 0 or tenant_wait > 0:
            limit = "api_key" if key_wait >= tenant_wait else "tenant"
            LIVE_CALLS_REFUSED.labels(limit).inc()
            raise TooManyRequests(
                f"too many live Google calls for this {limit.replace('_', ' ')}; "
                "retry after the delay given, or ask within the synced horizon",
                code="live_calls_limited",
                retry_after_s=math.ceil(max(key_wait, tenant_wait)),
                extra={"limit": limit},
            )
        self._keys.take(caller.key_id)
        self._tenants.take(caller.tenant_id)


@dataclass
class _Entry(Generic[T]):
    task: asyncio.Future[tuple[T, datetime]]
    answered_at: datetime | None = None
    keep: bool = True  # False: forgotten while in flight, not kept once answered


class SharedAnswers(Generic[T]):
    """Single flight and a short reuse of answers, by key (module doc)."""

    def __init__(
        self,
        *,
        ttl: timedelta,
        clock: Callable[[], datetime] = utc_now,
        max_entries: int = 10_000,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[Hashable, _Entry[T]] = {}

    def __repr__(self) -> str:
        return f"SharedAnswers(ttl={self._ttl!r}, entries={len(self._entries)})"

    async def get(
        self, key: Hashable, fetch: Callable[[], Awaitable[T]], *, max_age: timedelta
    ) -> tuple[T, datetime]:
        """`fetch()`'s answer and when it came, shared with identical questions (same `key`)
        in flight or answered at most min(ttl, max_age) ago."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry.answered_at is None:
                LIVE_ANSWERS_SHARED.labels("in_flight").inc()
                return await asyncio.shield(entry.task)
            if self._clock() - entry.answered_at <= min(self._ttl, max_age):
                LIVE_ANSWERS_SHARED.labels("recent").inc()
                return entry.task.result()
            del self._entries[key]
        self._sweep()
        # A task of its own, so a caller that goes away does not cancel the others' answer.
        task = asyncio.ensure_future(self._run(key, fetch))
        task.add_done_callback(_retrieve)
        self._entries[key] = _Entry(task)
        return await asyncio.shield(task)

    async def _run(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> tuple[T, datetime]:
        try:
            answer = await fetch()
        except BaseException:
            self._entries.pop(key, None)
            raise
        answered_at = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            if self._ttl > timedelta(0) and entry.keep:
                entry.answered_at = answered_at
            else:
                del self._entries[key]
        return answer, answered_at

    def forget(self, matches: Callable[[Hashable], bool]) -> None:
        """Drop the answers whose key `matches` (something changed what they answer: a
        booking); one in flight still answers those who joined it, but is not kept."""
        for key in [k for k in self._entries if matches(k)]:
            entry = self._entries[key]
            if entry.answered_at is None:
                entry.keep = False
            else:
                del self._entries[key]

    def _sweep(self) -> None:
        """Drop answers past their ttl, oldest first (entries are in the order asked)."""
        now = self._clock()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            expired = entry.answered_at is not None and now - entry.answered_at > self._ttl
            if not expired and len(self._entries) < self._max_entries:
                return
            if entry.answered_at is None:  # in flight and the table is full: keep it
                return
            del self._entries[key]


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Every asker got the failure already; this only stops asyncio's "never retrieved" warning.
    if not task.cancelled():
        task.exception()
