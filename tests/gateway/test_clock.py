"""The one spelling of instants the gateway writes: UTC with a `Z`, whatever came in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from gateway.clock import rfc3339, utc_now


def test_every_instant_is_written_in_utc_with_a_z() -> None:
    paris = timezone(timedelta(hours=2))
    assert rfc3339(datetime(2026, 6, 1, 11, 30, tzinfo=paris)) == "2026-06-01T09:30:00Z"
    # SQLite hands naive values back; we only ever write UTC, so they are UTC.
    assert rfc3339(datetime(2026, 6, 1, 9, 30)) == "2026-06-01T09:30:00Z"
    assert rfc3339(datetime(2026, 6, 1, 9, 30, 0, 250_000, UTC)) == "2026-06-01T09:30:00.250000Z"


def test_whole_seconds_for_webhook_payloads_and_null_stays_null() -> None:
    moment = datetime(2026, 6, 1, 9, 30, 5, 999_999, UTC)
    assert rfc3339(moment, timespec="seconds") == "2026-06-01T09:30:05Z"
    assert rfc3339(None) is None


def test_the_wall_clock_is_aware_utc() -> None:
    assert utc_now().utcoffset() == timedelta(0)
