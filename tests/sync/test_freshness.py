"""The freshness rule (`gateway.sync.freshness.copy_as_of`): how long a push channel vouches
for a calendar's copy, and what `as_of` availability answers show once it stops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.sync.freshness import copy_as_of

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
TRUST_S = 900.0


def as_of(
    *,
    complete: bool = True,
    synced: bool = True,
    sync_pending: bool = False,
    push_live: bool = True,
    synced_ago_s: float = 60,
    heard_ago_s: float | None = None,
) -> datetime | None:
    return copy_as_of(
        NOW,
        complete=complete,
        synced=synced,
        sync_pending=sync_pending,
        push_live=push_live,
        last_success_at=NOW - timedelta(seconds=synced_ago_s),
        last_push_at=None if heard_ago_s is None else NOW - timedelta(seconds=heard_ago_s),
        push_trust_s=TRUST_S,
    )


def test_a_live_channel_heard_from_within_the_window_makes_the_copy_current() -> None:
    assert as_of(synced_ago_s=TRUST_S) == NOW
    # A notification keeps vouching after an older sync (its sync then found nothing new).
    assert as_of(synced_ago_s=3 * TRUST_S, heard_ago_s=10) == NOW


def test_a_silent_channel_leaves_the_copy_as_old_as_its_last_sync() -> None:
    synced = NOW - timedelta(seconds=TRUST_S + 1)
    assert as_of(synced_ago_s=TRUST_S + 1) == synced
    assert as_of(synced_ago_s=TRUST_S + 1, heard_ago_s=TRUST_S + 30) == synced


def test_without_push_or_with_work_pending_the_last_sync_is_all_that_is_known() -> None:
    synced = NOW - timedelta(seconds=60)
    assert as_of(push_live=False) == synced
    assert as_of(sync_pending=True) == synced  # a notification said something changed
    assert as_of(synced=False) == synced  # the last attempt failed


def test_no_complete_copy_has_no_as_of() -> None:
    assert as_of(complete=False) is None
