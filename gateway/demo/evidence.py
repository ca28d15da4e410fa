"""The byte scan behind the demo's last claim: after a disconnect, nothing of the user's tokens
is left in the database files.

It reads the files as an attacker with a copy of the disk would (the SQLite file, its
write-ahead log and shared-memory file) and counts occurrences of given byte strings, so the
claim does not rest on what the gateway's own queries say.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path


def _scan(paths: Sequence[Path], needles: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
    contents = [p.read_bytes() for p in paths if p.exists()]
    return {
        label: sum(blob.count(needle) for blob in contents for needle in group if needle)
        for label, group in needles.items()
    }


async def count_in_files(
    paths: Sequence[Path], needles: Mapping[str, Sequence[bytes]]
) -> dict[str, int]:
    """For each label, how many times any of its byte strings occurs in the files (missing
    files count as empty). Reads off the event loop."""
    return await asyncio.to_thread(_scan, paths, needles)
