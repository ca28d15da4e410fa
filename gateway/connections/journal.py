"""The deletion journal: a file OUTSIDE the database naming every integration whose data was
destroyed, so that restoring a database backup taken before a disconnect cannot bring the
integration back (the replay in `gateway.connections.reshred` shreds it again).

Format: JSON Lines (UTF-8), one entry per line, appended only::

    {"at":"2026-12-05T10:00:00Z","integration_id":"int_...","mac":"<64 hex>","seq":1,
     "tenant_id":"acme"}           (one line in the file)

    seq    1, 2, 3, ... without gaps
    mac    HMAC-SHA256(journal key, previous line's mac as 32 raw bytes (32 zero bytes for
           seq 1) | canonical JSON of the entry without "mac" (sorted keys, no whitespace))

The chain makes every edit, insertion, deletion or reordering of lines detectable: the replay
refuses it (`JournalBroken`, naming the file and the line). The key is the journal key of the
trust keys file (`vault.trust`), kept with the key provider setup, never in the database.

Appending takes an exclusive `flock` on `<file>.lock` (processes on one host, or on a shared
file system that honours flock), writes one line with O_APPEND and fsyncs it. A line without
its final newline is a torn write of a crashed append: the replay ignores it and the next
append truncates it (the disconnect that wrote it had not completed and writes it again).

Cutting the file short cannot be detected from the file alone. Each signed receipt records the
seq of its disconnect's entry (`disconnect_receipts.journal_seq`), so the replay refuses a
journal that ends before an entry the database knows of; an old journal put back together with
an equally old database cannot be told apart: never restore an old journal over a newer one
(docs/operations.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.clock import rfc3339
from gateway.errors import GatewayError
from vault import files

_ZERO_MAC = bytes(32)
# A line longer than this is not one of ours (entries are about 200 bytes).
MAX_LINE_BYTES = 4096


class JournalBroken(GatewayError):
    """The journal cannot be trusted: start-up stops. One line naming the file and line."""

    code = "deletion_journal_broken"


@dataclass(frozen=True)
class JournalEntry:
    seq: int
    at: str
    tenant_id: str
    integration_id: str


def _canonical(entry: dict[str, object]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _mac(key: bytes, previous: bytes, entry: dict[str, object]) -> bytes:
    return hmac.new(key, previous + _canonical(entry), hashlib.sha256).digest()


class DeletionJournal:
    """One process's handle on the journal file. `read_new()` verifies and returns the entries
    appended since its last call (incrementally: it remembers the offset and the last MAC)."""

    def __init__(self, path: str | os.PathLike[str], key: bytes) -> None:
        self._path = Path(path)
        self._key = key
        self._offset = 0
        self._line = 0
        self._last_mac = _ZERO_MAC
        self._seq = 0

    def __repr__(self) -> str:
        return f"DeletionJournal(path={str(self._path)!r})"

    @property
    def path(self) -> Path:
        return self._path

    def _broken(self, line: int, problem: str) -> JournalBroken:
        return JournalBroken(
            f"deletion journal {self._path} line {line}: {problem}; refusing to start "
            "(restore the newest copy of the journal; see docs/operations.md)"
        )

    async def read_new(self) -> list[JournalEntry]:
        """Verify and return the entries appended since the last call (all of them the first
        time). A missing file is an empty journal. Raises JournalBroken."""
        return await asyncio.to_thread(self._read_new)

    def _read_new(self) -> list[JournalEntry]:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            if self._offset:
                raise self._broken(self._line, "the file disappeared") from None
            return []
        except OSError as exc:
            raise self._broken(self._line + 1, f"cannot be opened ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < self._offset:
                raise self._broken(
                    self._line, "the file is shorter than when last read (an older copy?)"
                )
            fh.seek(self._offset)
            data = fh.read()
        entries: list[JournalEntry] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break  # nothing more, or a torn last line: not an entry yet
            raw = data[start:end]
            number = self._line + 1
            entry = self._verify(number, raw)
            entries.append(entry)
            self._line = number
            self._offset += end + 1 - start
            start = end + 1
        return entries

    def _verify(self, number: int, raw: bytes) -> JournalEntry:
        if len(raw) > MAX_LINE_BYTES:
            raise self._broken(number, "the line is too long to be an entry")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise self._broken(number, "not a JSON entry") from None
        if not isinstance(doc, dict) or set(doc) != {
            "seq",
            "at",
            "tenant_id",
            "integration_id",
            "mac",
        }:
            raise self._broken(number, "not a journal entry")
        mac_hex = doc.pop("mac")
        try:
            mac = bytes.fromhex(mac_hex) if isinstance(mac_hex, str) else b""
        except ValueError:
            mac = b""
        if not hmac.compare_digest(mac, _mac(self._key, self._last_mac, doc)):
            raise self._broken(
                number, "the MAC chain is broken (edited, inserted, removed or another key)"
            )
        if doc["seq"] != self._seq + 1:
            raise self._broken(number, f"expected seq {self._seq + 1}, found {doc['seq']}")
        self._last_mac = mac
        self._seq += 1
        return JournalEntry(
            seq=int(doc["seq"]),
            at=str(doc["at"]),
            tenant_id=str(doc["tenant_id"]),
            integration_id=str(doc["integration_id"]),
        )

    @property
    def last_seq(self) -> int:
        """The seq of the last entry `read_new()` verified (0 before any)."""
        return self._seq

    def older_than(self, recorded_seq: int) -> JournalBroken:
        """The error for a journal that ends before an entry the database recorded."""
        return self._broken(
            self._line + 1,
            f"entry {recorded_seq} is missing although the database recorded it (an older "
            "copy of the journal put back?)",
        )

    async def append(self, tenant_id: str, integration_id: str, at: datetime) -> int:
        """Append one entry, durably (fsync) before returning; returns its seq."""
        stamp = rfc3339(at)
        return await asyncio.to_thread(self._append, tenant_id, integration_id, stamp)

    def _append(self, tenant_id: str, integration_id: str, at: str) -> int:
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with files.locked(self._path):
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            try:
                seq, previous = self._tail(fd)
                entry: dict[str, object] = {
                    "seq": seq + 1,
                    "at": at,
                    "tenant_id": tenant_id,
                    "integration_id": integration_id,
                }
                entry["mac"] = _mac(self._key, previous, entry).hex()
                os.write(fd, _canonical(entry) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        return seq + 1

    def _tail(self, fd: int) -> tuple[int, bytes]:
        """The last complete entry's seq and MAC (0 and zeros for an empty file), truncating
        a torn last line first. The chain itself is verified by the replay, not here."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, _ZERO_MAC
        chunk = min(size, 2 * MAX_LINE_BYTES)
        data = os.pread(fd, chunk, size - chunk)
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n")
            if cut < 0 and chunk < size:
                raise JournalBroken(
                    f"deletion journal {self._path}: its last line is not an entry; not appending"
                )
            keep = size - chunk + cut + 1
            os.ftruncate(fd, keep)
            if keep == 0:
                return 0, _ZERO_MAC
            reread = min(keep, 2 * MAX_LINE_BYTES)
            data = os.pread(fd, reread, keep - reread)
        last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            doc = json.loads(last)
            return int(doc["seq"]), bytes.fromhex(doc["mac"])
        except (ValueError, KeyError, TypeError):
            raise JournalBroken(
                f"deletion journal {self._path}: its last line is not an entry; not appending"
            ) from None
