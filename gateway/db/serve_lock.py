"""One `serve` per SQLite file: an exclusive lock on a file beside the database.

SQLite is the single-process embedded default: the in-process caches are exact because this
process makes every write that matters (the CLI's few writes are noticed through
`PRAGMA data_version`, gateway.db.listener). A second server on the same file would make
writes this one never hears of, so it is refused at start. The lock is `flock` on
`<database>.serve.lock`, released by the kernel when the process ends, even killed: no stale
lock to clean up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from gateway.db.engine import sqlite_path
from gateway.errors import StorageError


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".serve.lock")


@contextlib.contextmanager
def serve_lock(database_url: str) -> Iterator[None]:
    """Hold the serve lock of an SQLite database for the block (nothing for PostgreSQL or an
    in-memory database); StorageError with a one-line reason if another process holds it."""
    path = sqlite_path(database_url)
    if path is None:
        yield
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock_path(path), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageError(
                f"another `calendar-gateway serve` is already running on {path}; an SQLite "
                "database serves one process (use PostgreSQL to run several)"
            ) from None
        yield
    finally:
        os.close(fd)
