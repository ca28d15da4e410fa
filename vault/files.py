"""Private files the vault keeps beside the database (the key ring, the trust keys file) and
the deletion journal: written atomically with mode 0600, read without following symlinks,
updated under one exclusive `flock` shared by every process. Plain file I/O: callers run it in
a worker thread."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def check_permissions(path: Path, st: os.stat_result, bad: Callable[[str], Exception]) -> None:
    """Refuse a file that is not regular or that other users may read or write."""
    if not stat.S_ISREG(st.st_mode):
        raise bad("is not a regular file")
    if st.st_mode & 0o077:
        raise bad(
            f"permissions {stat.S_IMODE(st.st_mode):04o} let other users read or write it; "
            "run `chmod 600` on it"
        )


def parse_document(
    raw: bytes, bad: Callable[[str], Exception], *, form: str, version: int
) -> dict[str, Any]:
    """The JSON object of a vault file, checked to be `form` at `version`; every problem is
    `bad(...)` (which names the file)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad("is not valid JSON (corrupt or truncated)") from None
    if not isinstance(doc, dict):
        raise bad("must contain a JSON object")
    if doc.get("format") != form or doc.get("format_version") != version:
        raise bad(f"is not a {form} file of format_version {version}")
    return doc


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600, failing if it exists (O_EXCL)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write `data` to a 0600 temp file, fsync it, then move it into place atomically, so a
    reader sees the old file (or none) or the new one, never half of it.

    overwrite=False uses link(), which fails with FileExistsError if `path` appeared
    meanwhile (two processes creating the file at first start: one wins, both read it).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        write_new(tmp, data)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock (`<path>.lock`) shared by every process updating `path`."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock
