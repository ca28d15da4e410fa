"""Creating the async engine for the configured database URL."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.db import after_commit, sqlite_driver, sqlite_writer
from gateway.errors import StorageError
from gateway.settings import normalise_database_url, redact_url_password

# Connections each process keeps open (GATEWAY_DATABASE_POOL_SIZE, else these defaults), and
# how many more it opens for a burst and closes after. SQLAlchemy's default pool (5, and up to
# 10 more) is smaller than what one process uses at once: GATEWAY_SYNC_CONCURRENCY syncs (8 by
# default), push notifications and channel upkeep, the webhook worker and API requests. Every
# connection beyond it was opened and closed for one use: on SQLite a new aiosqlite thread and
# the pragmas, on PostgreSQL a TCP connection, its start-up and every statement prepared
# again: each of the sync bench's two PostgreSQL gateways opened ~180 connections while they
# ingested 100 calendars; 40-53 with 10 kept, ~20 with 20. SQLite connections cost the server
# nothing, so SQLite keeps 20. PostgreSQL's count against max_connections, shared by every
# instance: it keeps 15 and opens no more (with its LISTEN connection, 16 per instance, no more
# than SQLAlchemy's default pool could open). It kept 10 and opened up to 5 more for bursts,
# the same ceiling, but each of those was opened and closed for one use: ~270 connections
# between the bench's two gateways while they ingested 300 calendars, 40 with 15 kept and none
# more (the ingest 8-12% faster, 6% less gateway CPU). A checkout beyond it waits for a
# connection to come back (SQLAlchemy's pool timeout, 30 s), as it did beyond 15 before.
SQLITE_POOL = (20, 10)
POSTGRES_POOL = (15, 0)
# A pooled PostgreSQL connection is pinged before use only when it sat idle longer than this
# (HikariCP's "alive bypass window" is the same idea, at 500 ms): one used moments ago is
# alive, and SQLAlchemy's ping before every checkout (pool_pre_ping) cost three round trips
# (BEGIN, `;`, ROLLBACK) each time. Without it the bench's PostgreSQL ingest took ~17% less
# gateway CPU and its push-to-visible p99 fell from 188-267 ms to 165-171 ms (runs one after
# the other); with this window 24 of 1,477 checkouts were pinged. What it gives up: a connection
# that dies within its window (the server restarted that very moment) fails the one statement
# that next uses it, and SQLAlchemy then replaces the pool's connections.
PING_AFTER_IDLE_S = 0.5
# How long a SQLite writer waits for the file (another program's write) or, in this process, for
# its turn in gateway.db.sqlite_writer's queue.
BUSY_TIMEOUT_MS = 10_000


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL, or None for another backend or an in-memory database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _create_private_file(path: Path) -> None:
    """Create the database's folder (0700) and file (0600) if missing: the file holds emails
    and sealed tokens, and SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed during a write (the rewrap runs while the service serves);
    # busy_timeout makes a second writer wait instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Deleted rows (destroyed keys, purged tokens and events) are overwritten with zeros
    # instead of lingering in free pages of the file: disconnect must really destroy.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


async def create_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncEngine:
    """Create the engine (keeping up to `pool_size` connections open, by default the backend's:
    SQLITE_POOL, POSTGRES_POOL); for SQLite also create the database file's folder. `clock`
    times connections' idleness (PING_AFTER_IDLE_S)."""
    try:
        url = normalise_database_url(url)
        parsed = make_url(url)
    except (ValueError, ArgumentError) as exc:
        raise StorageError(f"GATEWAY_DATABASE_URL: {exc}") from None
    path = sqlite_path(url)
    if path is not None:
        await asyncio.to_thread(_create_private_file, path)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    try:
        kept, burst = SQLITE_POOL if is_sqlite else POSTGRES_POOL
        options: dict[str, Any] = (
            {}  # an in-memory SQLite database lives in its one connection: no pool size there
            if is_sqlite and path is None
            else {"pool_size": pool_size or kept, "max_overflow": burst}
        )
        if is_sqlite:
            # One thread hop per statement instead of four (gateway.db.sqlite_driver).
            options["connect_args"] = {"async_creator_fn": sqlite_driver.connect}
        engine = create_async_engine(parsed, echo=echo, **options)
    except Exception as exc:  # driver import errors and bad arguments
        raise StorageError(
            f"cannot use database {redact_url_password(url)}: {type(exc).__name__}"
        ) from None
    if is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        # This process's writers queue in order instead of polling in the busy handler.
        sqlite_writer.install(engine, timeout_s=BUSY_TIMEOUT_MS / 1000)
    else:
        _ping_when_idle(engine, clock)
    after_commit.install(engine)
    return engine


# Where a pooled connection's record keeps when it was last returned (or opened).
_IDLE_SINCE = "gateway_idle_since"


def _ping_when_idle(engine: AsyncEngine, clock: Callable[[], float]) -> None:
    """Ping a pooled connection before use if it sat idle over PING_AFTER_IDLE_S; one that
    does not answer is replaced, with every pooled connection as old (what pool_pre_ping
    does, only not before every use)."""
    dialect = engine.dialect

    def returned(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = clock()

    def taken(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is not None and clock() - since <= PING_AFTER_IDLE_S:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            # SQLAlchemy invalidates the pool's connections and takes a new one.
            raise InvalidatePoolError("the pooled connection did not answer") from error

    # A new connection counts as just used: it was opened for this checkout.
    event.listen(engine.sync_engine, "connect", returned)
    event.listen(engine.sync_engine, "checkin", returned)
    event.listen(engine.sync_engine, "checkout", taken)


# Kept per engine: deriving it costs ~50 us of CPU, and stores built per request (a push
# notification's) or per tick ask for it each time. A process has one engine; tests make more.
@functools.lru_cache(maxsize=16)
def single_statement_reads(engine: AsyncEngine) -> AsyncEngine:
    """`engine` for reads of ONE statement per connection (a row by its key, the index's
    loads): on PostgreSQL in AUTOCOMMIT, so the driver sends no BEGIN before the statement and
    no ROLLBACK after it (two round trips of the four such a read took; one statement is one
    snapshot by itself). On SQLite `engine` itself: a read there opens no transaction anyway.
    Never for several statements that must agree, nor for writes (`single_statement_writes`)."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def single_statement_writes(engine: AsyncEngine) -> AsyncEngine:
    """`engine` for a write transaction of ONE statement, run as
    `async with single_statement_writes(engine).begin() as conn: await commit_if_changed(...)`:
    on PostgreSQL in AUTOCOMMIT, where the statement is its own transaction (atomic, committed
    when it ends), without the BEGIN and COMMIT round trips around it; on SQLite `engine`
    itself, where `commit_if_changed` runs such a statement alone already (no BEGIN, no
    COMMIT: `gateway.db.sqlite_driver`). Nothing may run before or after that statement on
    the connection: a second statement would commit separately. Row locks a statement takes
    (FOR UPDATE) last only as long as it does."""
    return single_statement_reads(engine)
