"""Counting hops to SQLite connections' threads (`counted_hops`), and the transactions asyncpg
begins on PostgreSQL (`counted_begins`).

Hops: every call the counting task hands to an aiosqlite connection's thread, by the name of
the function it runs (`_run`: one statement with whatever was deferred into it, `_run_batch`,
...). The one-hop tests assert how many a write takes. Only hops of the counting task and of
tasks it starts are counted (a group commit's hop runs in a task of its own): a notification's
handler or the index's reload may still be finishing in the background, and their hops are not
the write's. BEGINs are counted the same way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import aiosqlite
import asyncpg
import pytest

# Set by `counted_hops` in the counting task's context; tasks started from it inherit it.
_COUNTING: ContextVar[object | None] = ContextVar("counting_hops", default=None)
# The same for `counted_begins`.
_BEGINS: ContextVar[object | None] = ContextVar("counting_begins", default=None)


@contextmanager
def counted_hops() -> Iterator[list[str]]:
    """The hops made inside the block, in order (none on PostgreSQL)."""
    hops: list[str] = []
    original = aiosqlite.Connection._execute
    marker = object()  # in this task's context, and in those of tasks started from it

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if _COUNTING.get() is marker:
            hops.append(getattr(fn, "__name__", type(fn).__name__))
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    token = _COUNTING.set(marker)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(aiosqlite.Connection, "_execute", counted)
            yield hops
    finally:
        _COUNTING.reset(token)


@contextmanager
def counted_begins() -> Iterator[list[str]]:
    """The transactions asyncpg begins inside the block (a BEGIN, a round trip each), by
    isolation level: SQLAlchemy's adapter begins one before a connection's first statement
    unless the connection is in AUTOCOMMIT. None on SQLite. Counted like `counted_hops`: the
    counting task's and those of tasks it starts."""
    begins: list[str] = []
    original = asyncpg.transaction.Transaction.start
    marker = object()

    async def counted(self: asyncpg.transaction.Transaction) -> None:
        if _BEGINS.get() is marker:
            begins.append(str(self._isolation))
        await original(self)

    token = _BEGINS.set(marker)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(asyncpg.transaction.Transaction, "start", counted)
            yield begins
    finally:
        _BEGINS.reset(token)
