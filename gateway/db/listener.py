"""Keeping this process's caches coherent with the database: LISTEN, or SQLite's data_version.

    coherence = CacheCoherence(engine, database_url, caches=[api_keys, index])
    await coherence.start()      # in a cleanup_ctx; caches answer once `state == "live"`
    ...
    await coherence.stop()

PostgreSQL. One asyncpg connection of its own (not from the pool: a pooled connection is
reset and handed around, a LISTEN must stay) runs `LISTEN gateway_cache` and hands every change
(gateway.db.notify) to the caches. Notifications are only delivered while that connection
lives, so the caches are usable only then: when it is lost (the server restarted, the backend
was terminated, the network dropped; a ping every `ping_s` notices a silent drop) every cache
is cleared and bypassed (`reset(usable=False)`: requests read the database) until a new
connection LISTENs again. Never an old copy served as fresh.

SQLite. One process serves a file (`serve` takes a lock beside it, gateway.db.serve_lock), and
its own writes reach its caches directly (gateway.db.notify). The CLI beside it (`api-keys
revoke`, `keys rewrap`, `keys retire`) writes the same file from another process: every
`poll_s` the watcher reads `PRAGMA data_version` on a connection of its own, which changes when
another connection committed (this process's own pool included), and tells the caches
(`external_write`; the API-key cache then reads the keys it holds again). A key revoked from
the CLI is refused within about `poll_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import sqlite_path
from gateway.db.notify import CHANNEL, Subscriber, feed_for, parse

log = logging.getLogger(__name__)

State = Literal["starting", "live", "down", "stopped"]

# How often the SQLite watcher reads data_version: the CLI's revocation is refused within it.
SQLITE_POLL_S = 0.25
# How often an idle LISTEN connection is pinged: a connection dropped without a FIN is found
# within it (a terminated backend is noticed at once).
PING_S = 5.0


async def _backoff(attempt: int) -> None:
    # 0.1 s, 0.2 s, ... up to 5 s between attempts to LISTEN again.
    await asyncio.sleep(min(5.0, 0.1 * 2**attempt))


class CacheCoherence:
    """Runs the LISTEN connection (PostgreSQL) or the data_version watcher (SQLite) for
    `caches` (see the module doc). `retry_wait(attempt)` waits before LISTENing again, and
    `poll_wait()` between two looks at SQLite's data_version (`poll_s`): tests hold them on
    an event."""

    def __init__(
        self,
        engine: AsyncEngine,
        database_url: str,
        *,
        caches: Sequence[Subscriber],
        retry_wait: Callable[[int], Awaitable[None]] = _backoff,
        poll_s: float = SQLITE_POLL_S,
        ping_s: float = PING_S,
    ) -> None:
        self._engine = engine
        self._url = database_url
        self._caches = list(caches)
        self.retry_wait = retry_wait
        self.poll_wait: Callable[[], Awaitable[None]] = functools.partial(asyncio.sleep, poll_s)
        self._ping_s = ping_s
        self._task: asyncio.Task[None] | None = None
        self._live = asyncio.Event()
        self.state: State = "starting"
        self.listener_pid: int | None = None
        self.fences: set[str] = set()
        self.changes_received = 0

    def __repr__(self) -> str:
        return f"CacheCoherence(state={self.state!r})"

    async def start(self, *, wait_s: float = 5.0) -> None:
        """Subscribe the caches to this engine's own writes and start listening; waits up to
        `wait_s` for the first LISTEN (the caches stay bypassed until then)."""
        feed = feed_for(self._engine)
        for cache in self._caches:
            feed.subscribe(cache)
        self._reset(usable=False)
        if self._engine.dialect.name == "postgresql":
            self._task = asyncio.create_task(self._listen_forever(), name="cache-listen")
        else:
            self._task = asyncio.create_task(self._watch_sqlite(), name="cache-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._live.wait(), wait_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        feed = feed_for(self._engine)
        for cache in self._caches:
            feed.unsubscribe(cache)
        self._reset(usable=False)
        self.state = "stopped"

    # -- shared ---------------------------------------------------------------------------------

    def _reset(self, *, usable: bool) -> None:
        for cache in self._caches:
            cache.reset(usable=usable)
        if usable:
            self.state = "live"
            self._live.set()
        else:
            self._live.clear()

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_payload(payload)

    def _on_payload(self, payload: str) -> None:
        change = parse(payload)
        if change is None:
            return
        self.changes_received += 1
        if change.kind == "fence":
            self.fences.add(change.id)
            return
        for cache in self._caches:
            cache.changed(change)

    # -- PostgreSQL -----------------------------------------------------------------------------

    def _dsn(self) -> str:
        return make_url(self._url).set(drivername="postgresql").render_as_string(False)

    async def _listen_forever(self) -> None:
        attempt = 0
        while True:
            try:
                await self._listen_once()
                attempt = 0
            except Exception as exc:  # any failure: bypass the caches, try again
                log.warning("cache LISTEN connection failed: %s", type(exc).__name__)
            self.state = "down"
            self.listener_pid = None
            self._reset(usable=False)
            await self.retry_wait(attempt)
            attempt += 1

    async def _listen_once(self) -> None:
        lost = asyncio.Event()
        conn = await asyncpg.connect(self._dsn(), timeout=10)
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            await conn.add_listener(CHANNEL, self._on_notification)
            self.listener_pid = conn.get_server_pid()
            # Anything read before this LISTEN may have missed a change: start empty.
            self._reset(usable=True)
            log.debug("cache LISTEN connection up")
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._ping_s)
                if not lost.is_set():
                    await asyncio.wait_for(conn.execute("SELECT 1"), self._ping_s)
            log.warning("cache LISTEN connection lost; caches bypassed until it is back")
        finally:
            self.state = "down"
            self._reset(usable=False)
            with contextlib.suppress(Exception):
                conn.terminate()

    # -- SQLite ---------------------------------------------------------------------------------

    async def _watch_sqlite(self) -> None:
        path = sqlite_path(self._url)
        if path is None:  # in memory: no other process can write it
            self._reset(usable=True)
            return
        attempt = 0
        while True:
            try:
                await self._watch_file(path)
            except Exception as exc:  # unwatched writes may come: bypass until watching again
                log.warning("SQLite change watcher failed: %s", type(exc).__name__)
            self.state = "down"
            self._reset(usable=False)
            await self.retry_wait(attempt)
            attempt += 1

    async def _watch_file(self, path: Path) -> None:
        # One thread owns the watch connection: opened, queried and closed there in order. A
        # cancelled `await` leaves its query running in the thread; closing the connection from
        # another thread meanwhile crashes sqlite3 (a segmentation fault, seen under xdist).
        loop = asyncio.get_running_loop()
        owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-watch")
        conn = await loop.run_in_executor(owner, _open_watch, path)
        try:
            last = await loop.run_in_executor(owner, _data_version, conn)
            # Anything cached before the watch began may have missed a write: start empty.
            self._reset(usable=True)
            while True:
                await self.poll_wait()
                now = await loop.run_in_executor(owner, _data_version, conn)
                if now != last:
                    last = now
                    for cache in self._caches:
                        await cache.external_write()
        finally:
            # Queued behind any query still running; nothing here waits for it.
            owner.submit(conn.close)
            owner.shutdown(wait=False)


def _open_watch(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, check_same_thread=False)


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])
