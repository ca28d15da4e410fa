"""Values as they come back from either database."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from sqlalchemy import BigInteger
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def as_utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime. SQLite hands back naive values for timezone-aware columns (we
    only ever write UTC); PostgreSQL hands back aware ones in the session's zone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def epoch_floor(value: datetime) -> int:
    """`value` (aware) as whole seconds since the epoch, rounded down (a busy block's start)."""
    return math.floor(value.timestamp())


def epoch_ceil(value: datetime) -> int:
    """`value` (aware) as whole seconds since the epoch, rounded up (a busy block's end: a
    block is never stored shorter than it is)."""
    return math.ceil(value.timestamp())


class EpochSeconds(TypeDecorator[datetime]):
    """A UTC instant stored as whole seconds since the epoch (BIGINT), read back as an aware
    UTC datetime. For `busy_blocks`: a calendar writes thousands of them per sync, and
    integers go in without the text conversion SQLite's DateTime needs (and come out of the
    index's loads as they are kept). The bulk path (`gateway.db.bulk`) takes the integers
    (`epoch_floor`/`epoch_ceil`); a bound datetime is rounded down, so a query that must
    round a bound up (`start_at < end`) binds `epoch_ceil(end)` itself."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | int | None, dialect: Dialect) -> int | None:
        if value is None or isinstance(value, int):
            return value
        if value.tzinfo is None:
            raise ValueError("an EpochSeconds value must be an aware datetime")
        return epoch_floor(value)

    def process_result_value(self, value: int | None, dialect: Dialect) -> datetime | None:
        return None if value is None else datetime.fromtimestamp(value, UTC)
