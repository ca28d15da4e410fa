"""The sync engine's settings, as one frozen value (the gateway's Settings feed it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.backoff import backoff_s
from gateway.sync.model import Horizon


@dataclass(frozen=True)
class SyncConfig:
    """How much of each calendar is kept, and what counts as busy.

    horizon_past_days     GATEWAY_SYNC_HORIZON_PAST_DAYS     busy time kept before now
    horizon_future_days   GATEWAY_SYNC_HORIZON_FUTURE_DAYS   busy time kept after now
    tentative_is_busy     GATEWAY_TENTATIVE_IS_BUSY          tentative events block time
    store_event_details   GATEWAY_STORE_EVENT_DETAILS        keep titles, descriptions,
                                                             locations and attendees of the
                                                             user's own events
    """

    horizon_past_days: int = 30
    horizon_future_days: int = 365
    tentative_is_busy: bool = True
    store_event_details: bool = False

    def __post_init__(self) -> None:
        if self.horizon_past_days < 0 or self.horizon_future_days < 1:
            raise ValueError("the sync horizon must cover now and some future")

    def horizon(self, now: datetime) -> Horizon:
        """The horizon around `now`, on whole UTC days so it moves once a day, not on every
        sync (a stable horizon keeps re-expansion rare)."""
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return Horizon(
            today - timedelta(days=self.horizon_past_days),
            today + timedelta(days=self.horizon_future_days + 1),
        )


@dataclass(frozen=True)
class SchedulerConfig:
    """When calendars are synced, by whom, and how failures back off.

    tick_s                  GATEWAY_SYNC_TICK_S                  how often the scheduler looks
                                                                 for due work when nobody wakes it
    poll_interval_s         GATEWAY_SYNC_POLL_INTERVAL_S         next sync of a calendar without
                                                                 a live push channel
    safety_poll_interval_s  GATEWAY_SYNC_SAFETY_POLL_INTERVAL_S  next sync of one with push (the
                                                                 safety net for lost messages)
    lease_s                 GATEWAY_SYNC_LEASE_S                 how long a claim on a calendar
                                                                 lasts; renewed every third of it
                                                                 while its sync runs, so only a
                                                                 dead process's lease runs out
    concurrency             GATEWAY_SYNC_CONCURRENCY             syncs at once in one process
    backoff_base_s          GATEWAY_SYNC_BACKOFF_BASE_S          first backoff cap after a
                                                                 transient failure (doubles)
    backoff_max_s           GATEWAY_SYNC_BACKOFF_MAX_S           the longest backoff, and the
                                                                 retry delay after a non-transient
                                                                 error

    One sync at a time per integration (a Google account's calendars share its quota).
    """

    tick_s: float = 1.0
    poll_interval_s: int = 300
    safety_poll_interval_s: int = 3600
    lease_s: float = 120.0
    concurrency: int = 8
    backoff_base_s: float = 2.0
    backoff_max_s: float = 900.0

    def __post_init__(self) -> None:
        if self.tick_s <= 0 or self.lease_s <= 0:
            raise ValueError("tick_s and lease_s must be positive")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.backoff_base_s <= 0 or self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be at least backoff_base_s > 0")

    def backoff_s(self, attempts: int, rng: float, retry_after_s: float | None = None) -> float:
        """The wait after the `attempts`-th failure in a row: truncated exponential backoff with
        full jitter (`gateway.backoff`, `rng` in [0, 1)), never shorter than Google's Retry-After
        (capped at `backoff_max_s`)."""
        # Capped: a Retry-After past the longest backoff must not park a calendar longer.
        capped = min(retry_after_s, self.backoff_max_s) if retry_after_s is not None else None
        return backoff_s(
            attempts - 1,
            base_s=self.backoff_base_s,
            max_s=self.backoff_max_s,
            rng=rng,
            retry_after_s=capped,
        )
