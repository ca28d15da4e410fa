"""Counting hops to SQLite connections' threads: every call this process hands to an aiosqlite
connection's thread, by the name of the function it runs (`_run`: one statement with whatever
was deferred into it, `_run_batch`, ...). The one-hop tests assert how many a write takes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiosqlite
import pytest


@contextmanager
def counted_hops() -> Iterator[list[str]]:
    """The hops made inside the block, in order (none on PostgreSQL)."""
    hops: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__name__", type(fn).__name__))
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aiosqlite.Connection, "_execute", counted)
        yield hops
