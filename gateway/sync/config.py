"""The sync engine's settings, as one frozen value (the gateway's Settings feed it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

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
