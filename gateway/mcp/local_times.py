"""Times in tool answers given in a named time zone too, next to UTC.

Language models slip when converting UTC to a person's local time, so every tool answer that
carries `start`/`end` instants also carries `start_local`/`end_local`: the same instants as
RFC 3339 in the zone the call named (or the connection's calendar zone), with the offset
(`2026-12-07T08:00:00+01:00`). Pure: no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from gateway.http.validation import parse_rfc3339


def local(instant: str, zone: ZoneInfo) -> str:
    """`instant` (RFC 3339) in `zone`, to the second, with its offset."""
    return parse_rfc3339(instant).astimezone(zone).isoformat(timespec="seconds")


def with_local(item: Mapping[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    """`item` with `start_local`/`end_local` beside its `start`/`end` (when they are
    instants)."""
    out = dict(item)
    for key in ("start", "end"):
        value = item.get(key)
        if isinstance(value, str):
            try:
                out[f"{key}_local"] = local(value, zone)
            except ValueError:  # an all-day date: already local
                continue
    return out


def _zone_or_none(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return None


async def load_zone(name: str) -> ZoneInfo | None:
    """The zone called `name`, or None if unknown; zone files are read off the event loop."""
    return await asyncio.to_thread(_zone_or_none, name)
