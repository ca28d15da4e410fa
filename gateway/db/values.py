"""Values as they come back from either database."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime. SQLite hands back naive values for timezone-aware columns (we
    only ever write UTC); PostgreSQL hands back aware ones in the session's zone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
