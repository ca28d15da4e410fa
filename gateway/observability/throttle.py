"""A log line for events that anyone may cause in bulk, at most once per interval.

    throttle = LogThrottle(log, interval_s=60, clock=clock)
    throttle.event("connect: callback refused (%s)", reason)

An unauthenticated caller can repeat a failure as fast as it likes; one line per failure would
let it fill the disk and drown the lines that matter. The metric counts every event; the line
says something is happening, with how many events it stands for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime


class LogThrottle:
    """Logs the first event, then at most one per `interval_s` (by `clock`), each line saying
    how many events happened since the previous line (itself included)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float,
        clock: Callable[[], datetime],
        level: int = logging.WARNING,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._level = level
        self._last: datetime | None = None
        self._count = 0

    def event(self, message: str, *args: object) -> bool:
        """Count one event; log it (returns True) unless a line went out within the interval."""
        self._count += 1
        now = self._clock()
        if self._last is not None and (now - self._last).total_seconds() < self._interval_s:
            return False
        suffix = " (%d such since the last line)"
        self._logger.log(self._level, message + suffix, *args, self._count)
        self._last = now
        self._count = 0
        return True
