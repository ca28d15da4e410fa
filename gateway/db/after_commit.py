"""Work to run once a transaction has committed, never after a rollback.

    after_commit(conn, worker.wake)     # inside the transaction: runs right after its COMMIT
    install(engine)                     # gateway.db.engine does it for every engine

What waits for rows another part of this process writes (the webhook delivery worker, for the
outbox) learns of them when they can be read, instead of at its next tick. Telling it before
the commit would not do: it would look, find nothing yet, and sleep a tick.

The callbacks are kept with the pooled connection and run (synchronously, on the event loop,
exceptions logged) after the driver's commit returned; a rollback, or the connection closed
or invalidated, drops them.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

_KEY = "gateway_after_commit"
_INSTALLED: weakref.WeakSet[Engine] = weakref.WeakSet()


def after_commit(conn: AsyncConnection, callback: Callable[[], None]) -> None:
    """Run `callback` once `conn`'s transaction has committed (see the module doc)."""
    sync = conn.sync_connection
    if sync is None or conn.sync_engine not in _INSTALLED:
        raise RuntimeError("after_commit needs a started connection of a create_engine engine")
    sync.info.setdefault(_KEY, []).append(callback)


def _info(connection: Any) -> dict[Any, Any] | None:
    # The pool's proxy carries the connection's info; a bare driver connection (a pool reset)
    # or a proxy without one raises or lacks it, and then holds no callbacks either.
    try:
        info = getattr(connection, "info", None)
    except NotImplementedError:
        return None
    return info if isinstance(info, dict) else None


def install(engine: AsyncEngine) -> None:
    """Run the callbacks `after_commit` collects on `engine`'s connections."""
    sync = engine.sync_engine
    if sync in _INSTALLED:
        return
    _INSTALLED.add(sync)
    dialect = sync.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(connection: Any) -> None:
        commit(connection)
        info = _info(connection)
        for callback in info.pop(_KEY, ()) if info is not None else ():
            try:
                callback()
            except Exception:  # a waiter's trouble must not fail a committed write
                log.exception("after-commit callback failed")

    def do_rollback(connection: Any) -> None:
        info = _info(connection)
        if info is not None:
            info.pop(_KEY, None)
        rollback(connection)

    def gone(_dbapi_connection: Any, record: Any, *_args: Any) -> None:
        if record is not None:
            record.info.pop(_KEY, None)

    # Instance attributes shadow the dialect's methods for this engine only (as
    # gateway.db.sqlite_writer does; the two wrap each other in either order).
    dialect.do_commit = do_commit  # type: ignore[method-assign, assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign, assignment]
    for name in ("close", "invalidate", "soft_invalidate"):
        event.listen(sync.pool, name, gone)
