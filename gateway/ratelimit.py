"""Token buckets, one per key: `rate_per_min` tokens a minute, holding at most `burst`.

    buckets = TokenBuckets(rate_per_min=120, burst=120, clock=time.monotonic)
    wait_s = buckets.wait_s("key")     # 0.0: a token is there; else seconds until one is
    buckets.take("key")                # spend it (only after every bucket involved said 0)

Pure: no I/O, no sleeping; the clock (monotonic seconds) is passed in, so refills are tested by
moving a fake clock. A bucket starts full; a key not seen for a while is the same as a full
bucket, so full buckets are forgotten when the table grows (`max_keys`) and memory stays bounded
by the keys active in the last `burst / rate` minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class TokenBuckets:
    """Per-key token buckets (module doc). Not thread-safe: one event loop uses it."""

    def __init__(
        self,
        *,
        rate_per_min: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if rate_per_min <= 0:
            raise ValueError("rate_per_min must be positive")
        self._rate_per_s = rate_per_min / 60.0
        self._burst = float(burst if burst is not None else rate_per_min)
        if self._burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock = clock
        self._max_keys = max_keys
        # key -> (tokens, when they were counted)
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def __repr__(self) -> str:
        return f"TokenBuckets(rate_per_min={self._rate_per_s * 60:g}, burst={self._burst:g})"

    def _tokens(self, key: Hashable, now: float) -> float:
        found = self._buckets.get(key)
        if found is None:
            return self._burst
        tokens, at = found
        return min(self._burst, tokens + max(0.0, now - at) * self._rate_per_s)

    def wait_s(self, key: Hashable) -> float:
        """Seconds until `key` has a whole token (0.0 when it has one now)."""
        missing = 1.0 - self._tokens(key, self._clock())
        return missing / self._rate_per_s if missing > 0 else 0.0

    def take(self, key: Hashable) -> None:
        """Spend one token of `key` (the caller checked `wait_s` first; the count may go
        below zero if it did not, and then refills from there)."""
        now = self._clock()
        tokens = self._tokens(key, now) - 1.0
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._forget_full(now)
        self._buckets[key] = (tokens, now)

    def _forget_full(self, now: float) -> None:
        for key in [k for k in self._buckets if self._tokens(k, now) >= self._burst]:
            del self._buckets[key]
